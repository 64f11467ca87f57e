"""The UI's gateway client and the Chat page against the real gateway (+ CPU inference) on loopback: models and
styles listed, streaming with finish reason and usage, and every failure explained in plain words — bad key,
unknown model, overloaded (a gateway allowing one completion at a time), unreachable — without losing the chat."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest
from openai import OpenAI

from emotune.local.supervisor import METRICS_PORTS
from emotune.services.ui.chat import Conversation
from emotune.services.ui.config import UISettings
from emotune.services.ui.gateway_client import Gateway, GatewayError, Sampling
from tests.support import free_port

pytestmark = pytest.mark.slow

BASE_MODEL = "smollm2-135m"
GREEDY = Sampling(temperature=0.0, top_p=1.0, max_tokens=6)


def client_for(stack, key: str | None = None) -> Gateway:
    return Gateway(UISettings(gateway_url=stack.gateway_url, ui_api_key=key or stack.api_key))


@contextlib.contextmanager
def busy(stack):
    """Keep one streamed completion in flight on ``stack``'s gateway (it takes the only slot)."""
    client = OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=stack.api_key, max_retries=0)
    stream = client.chat.completions.create(model=BASE_MODEL, stream=True, max_tokens=400, temperature=0.0,
                                            messages=[{"role": "user", "content": "Write a long story about ships."}])
    next(iter(stream))  # the slot is taken once the first chunk arrives
    try:
        yield
    finally:
        stream.close()
        wait_idle(stack)


def wait_idle(stack, timeout: float = 60) -> None:
    """Until the gateway reports no completion in flight (the held stream's slot is released)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = httpx.get(f"http://127.0.0.1:{stack.port(METRICS_PORTS['gateway'])}/metrics").text
        if "emotune_gateway_in_flight 0.0" in metrics:
            return
        time.sleep(0.2)
    raise AssertionError("the gateway kept a completion in flight")


def test_models_and_a_streamed_answer(ui_stack):
    gateway = client_for(ui_stack)
    assert {BASE_MODEL, f"{BASE_MODEL}:pirate", f"{BASE_MODEL}:butler"} <= set(gateway.model_ids())
    stream = gateway.stream_chat(BASE_MODEL, [{"role": "user", "content": "Say hello."}], GREEDY)
    text = "".join(stream)
    assert text.strip()
    assert stream.finish_reason == "length"  # 6 tokens are not enough for a whole greeting
    assert stream.usage["completion_tokens"] == 6 and stream.usage["prompt_tokens"] > 5


def test_failures_are_explained(ui_stack):
    with pytest.raises(GatewayError) as bad_key:
        client_for(ui_stack, key="sk-wrong").model_ids()
    assert bad_key.value.kind == "auth" and bad_key.value.status == 401
    assert "refused the API key" in bad_key.value.message and "EMOTUNE_UI_API_KEY" in bad_key.value.message

    with pytest.raises(GatewayError) as gone:
        "".join(client_for(ui_stack).stream_chat(f"{BASE_MODEL}:nosuchstyle", [{"role": "user", "content": "hi"}],
                                                 GREEDY))
    assert gone.value.kind == "not_found" and f"{BASE_MODEL}:nosuchstyle" in gone.value.message

    with pytest.raises(GatewayError) as bad_request:
        client_for(ui_stack).stream_chat(BASE_MODEL, [{"role": "user", "content": "hi"}],
                                         Sampling(max_tokens=10**6))
    assert bad_request.value.kind == "bad_request" and bad_request.value.status == 400

    closed = free_port()
    with pytest.raises(GatewayError) as unreachable:
        Gateway(UISettings(gateway_url=f"http://127.0.0.1:{closed}")).model_ids()
    assert unreachable.value.kind == "unreachable" and f"127.0.0.1:{closed}/v1" in unreachable.value.message


def test_overloaded_gateway_names_the_wait(tight_gateway):
    with busy(tight_gateway), pytest.raises(GatewayError) as overloaded:
        client_for(tight_gateway).stream_chat(BASE_MODEL, [{"role": "user", "content": "hi"}], GREEDY)
    assert overloaded.value.kind == "overloaded" and overloaded.value.retry_after == 3
    assert "retry in 3 s" in overloaded.value.message


def test_chat_page_bad_key(ui_stack, ui_app):
    at = ui_app(EMOTUNE_GATEWAY_URL=ui_stack.gateway_url, EMOTUNE_UI_API_KEY="sk-wrong").run()
    assert not at.exception
    assert any("refused the API key (401)" in e.value for e in at.sidebar.error)
    assert at.chat_input(key="chat_input").disabled


def test_chat_page_overloaded_keeps_the_message_then_regenerates(tight_gateway, ui_app):
    at = ui_app(EMOTUNE_GATEWAY_URL=tight_gateway.gateway_url, EMOTUNE_UI_API_KEY=tight_gateway.api_key)
    chat = Conversation()
    chat.add_user("The secret word is giraffe.")
    chat.add_answer("The secret word is giraffe.", model=BASE_MODEL)
    at.session_state["chat"] = chat
    at.run()
    at.sidebar.slider(key="chat_temperature").set_value(0.0)
    at.sidebar.number_input(key="chat_max_tokens").set_value(12)
    at.run()
    assert at.sidebar.selectbox(key="chat_model").value.name == BASE_MODEL

    with busy(tight_gateway):
        at.chat_input(key="chat_input").set_value("What is the secret word?").run()
    assert any("overloaded (429)" in e.value and "retry in 3 s" in e.value for e in at.main.error)
    assert [m.content for m in chat.messages][-1] == "What is the secret word?" and chat.awaiting_answer
    assert [m.markdown[0].value for m in at.chat_message] == ["The secret word is giraffe."] * 2 + [
        "What is the secret word?"]

    at.sidebar.button(key="chat_regenerate").click().run()
    assert not at.main.error
    assert [m.role for m in chat.messages] == ["user", "assistant", "user", "assistant"]
    assert "giraffe" in chat.messages[-1].content.lower()  # answered with the whole conversation
    assert chat.messages[-1].model == BASE_MODEL


class _OverloadedOnce(BaseHTTPRequestHandler):
    """A gateway whose first answer to creating a job is 503 (OpenAI's error body), as when the pipeline service
    timed out; the next one creates the job. Records the Idempotency-Key of every attempt."""

    keys: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.keys.append(self.headers.get("Idempotency-Key"))
        if len(self.keys) == 1:
            status, body = 503, {"error": {"message": "the pipeline service did not answer in time",
                                           "type": "server_error", "param": None, "code": None}}
        else:
            status, body = 200, {"id": "ftjob-abc", "object": "fine_tuning.job", "model": BASE_MODEL,
                                 "created_at": 1, "status": "queued", "training_file": "file-1", "seed": 1,
                                 "hyperparameters": {}, "organization_id": "org", "result_files": []}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_a_retried_job_creation_repeats_its_idempotency_key():
    """The openai client retries a 503; both attempts carry one key, so the gateway returns one job."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OverloadedOnce)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gateway = Gateway(UISettings(gateway_url=f"http://127.0.0.1:{server.server_address[1]}", ui_api_key="k",
                                     ui_max_retries=2))
        assert gateway.create_job({"model": BASE_MODEL})["id"] == "ftjob-abc"
    finally:
        server.shutdown()
        server.server_close()
    first, retry = _OverloadedOnce.keys
    assert first and first.startswith("ui-") and retry == first
