"""A bounded schemathesis fuzz of the gateway's own OpenAPI schema, against the real gateway + inference on
loopback: no request may get a 5xx, and every 4xx must have OpenAI's error shape.

The inference routes are fuzzed (models, chat completions, completions, probes); the fine-tuning surface needs
the pipeline services and is covered by its own tests. Valid bodies are sent to the served model (a random model
id would only ever reach the 404 path), and the gateway's token limits are tiny so generation stays cheap.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode

from tests.emotune.services.gateway.conftest import API_KEYS, start_gateway
from tests.emotune.services.inference.stack import MODEL

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]
FUZZED_PATHS = r"^/(v1/(models|chat/completions|completions)|healthz|readyz)"
EXAMPLES_PER_OPERATION = 12
TIME_BUDGET_SECONDS = 240
ERROR_FIELDS = {"message", "type", "param", "code"}


def problem(status: int, body: bytes, content_type: str) -> str | None:
    """What is wrong with one answer, or None."""
    if status >= 500:
        return f"server error {status}: {body[:300]!r}"
    if 400 <= status < 500:
        if not content_type.startswith("application/json"):
            return f"{status} is not JSON ({content_type})"
        error = json.loads(body).get("error")
        if not isinstance(error, dict) or set(error) != ERROR_FIELDS or not error["message"]:
            return f"{status} is not in OpenAI's error shape: {body[:300]!r}"
    return None


def fuzz(schema: schemathesis.BaseSchema, base_url: str) -> list[str]:
    """Run every operation's strategies (valid and invalid data); returns the problems found."""
    problems: list[str] = []
    deadline = time.monotonic() + TIME_BUDGET_SECONDS
    for result in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz_operation(result.ok(), mode, base_url, deadline, problems)
    return problems


def fuzz_operation(operation: schemathesis.APIOperation, mode: GenerationMode, base_url: str, deadline: float,
                   problems: list[str]) -> None:
    headers = {"Authorization": f"Bearer {API_KEYS[0]}"}
    served = [MODEL, f"{MODEL}:温柔"]

    @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                         phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        if time.monotonic() > deadline:
            return
        if mode is GenerationMode.POSITIVE and isinstance(case.body, dict) and "model" in case.body:
            case.body["model"] = served[len(problems) % 2]
        response = case.call(base_url=base_url, headers=headers, timeout=60)
        content_type = (response.headers.get("content-type") or [""])[0]
        found = problem(response.status_code, response.content, content_type)
        if found:
            problems.append(f"{case.method} {case.formatted_path} {case.body!r:.3000}: {found}")

    try:
        check()
    except hypothesis.errors.Unsatisfiable:  # an operation without inputs has no invalid form
        assert mode is GenerationMode.NEGATIVE


async def test_fuzzed_requests_never_get_a_5xx_and_every_4xx_is_openai_shaped(inference):
    gateway = await start_gateway(inference.address, gateway_max_tokens=12, gateway_default_max_tokens=6)
    try:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            document = (await http.get("/openapi.json")).json()
        schema = schemathesis.openapi.from_dict(document).include(path_regex=FUZZED_PATHS)
        assert len(list(schema.get_all_operations())) >= 6
        problems = await asyncio.to_thread(fuzz, schema, gateway.url)
    finally:
        await gateway.stop()
    assert not problems, f"{len(problems)} bad answers:\n" + "\n".join(problems[:20])
