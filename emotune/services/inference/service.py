"""The inference domain: validate a chat request, resolve ``<model>[:<style>]``, wait for a generation slot,
stream the engine's chunks and account for them (metrics, in-flight count)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from emotune.errors import InvalidInput
from emotune.services.inference import metrics
from emotune.services.inference.admission import Admission
from emotune.services.inference.engines.base import ChatParams, Chunk
from emotune.services.inference.registry import ModelRegistry, apply_style

ROLES = ("system", "user", "assistant")
MAX_STOP_STRINGS = 16
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class Limits:
    default_max_tokens: int = 256
    max_tokens_limit: int = 4096


class InferenceService:
    def __init__(self, registry: ModelRegistry, admission: Admission, limits: Limits) -> None:
        self.registry, self.admission, self.limits = registry, admission, limits

    def params(self, *, max_tokens: int = 0, temperature: float | None = None, top_p: float | None = None,
               stop: Sequence[str] = (), seed: int | None = None, presence_penalty: float = 0.0,
               frequency_penalty: float = 0.0, logprobs: bool = False, top_logprobs: int = 0,
               json_schema: str = "") -> ChatParams:
        """Checked sampling parameters (``max_tokens`` 0 = the service default)."""
        if max_tokens < 0 or max_tokens > self.limits.max_tokens_limit:
            raise InvalidInput(f"must be between 1 and {self.limits.max_tokens_limit} (0 = default "
                               f"{self.limits.default_max_tokens}), got {max_tokens}", field="sampling.max_tokens")
        if temperature is not None and not 0.0 <= temperature <= 2.0:
            raise InvalidInput(f"must be between 0 and 2, got {temperature}", field="sampling.temperature")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise InvalidInput(f"must be in (0, 1], got {top_p}", field="sampling.top_p")
        stops = tuple(s for s in stop if s)
        if len(stops) > MAX_STOP_STRINGS:
            raise InvalidInput(f"at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}", field="sampling.stop")
        for name, penalty in (("presence_penalty", presence_penalty), ("frequency_penalty", frequency_penalty)):
            if not -2.0 <= penalty <= 2.0:
                raise InvalidInput(f"must be between -2 and 2, got {penalty}", field=f"sampling.{name}")
        if not 0 <= top_logprobs <= MAX_TOP_LOGPROBS:
            raise InvalidInput(f"must be between 0 and {MAX_TOP_LOGPROBS}, got {top_logprobs}",
                               field="sampling.top_logprobs")
        return ChatParams(max_tokens=max_tokens or self.limits.default_max_tokens, temperature=temperature,
                          top_p=top_p, stop=stops, seed=seed, presence_penalty=presence_penalty,
                          frequency_penalty=frequency_penalty, logprobs=logprobs or top_logprobs > 0,
                          top_logprobs=top_logprobs, json_schema=_schema(json_schema))

    @staticmethod
    def messages(pairs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
        if not pairs:
            raise InvalidInput("at least one message is required", field="messages")
        for i, (role, _content) in enumerate(pairs):
            if role not in ROLES:
                raise InvalidInput(f"role must be one of {', '.join(ROLES)}, got {role!r}",
                                   field=f"messages[{i}].role")
        return [{"role": role, "content": content} for role, content in pairs]

    async def chat(self, model: str, messages: list[dict[str, str]], params: ChatParams,
                   prompt: str | None = None) -> AsyncIterator[Chunk]:
        """Every refusal (unknown model, bad conversation, full queue) happens before the first chunk, which is
        empty and means "accepted"; callers can answer their own client as soon as they see it. A published
        fine-tune not loaded here is loaded first (the request waits for it).

        With ``prompt`` (a raw text continued as-is) the messages are ignored; a style id is refused, since a
        style is a system prompt and a raw prompt has no place for one."""
        served, style_prompt, serving = await self.registry.resolve(model)
        serving.refuse_unsupported(params)
        if prompt is not None:
            if style_prompt:
                raise InvalidInput(f"{model!r} is a style id: a style is a system prompt for chat messages, and a "
                                   f"raw prompt has none; use the model id {served.id!r}", field="model")
            chat = serving.prepare_prompt(prompt, params)
        else:
            if style_prompt:
                messages = apply_style(messages, style_prompt)
            chat = serving.prepare(messages, params)
        ticket = self.admission.enter()
        try:
            yield Chunk()
            slot = await ticket.admitted()
        finally:
            ticket.leave()
        admitted = time.monotonic()
        try:
            generation = serving.start(chat, on_finished=slot.release)
        except BaseException:
            slot.release()
            raise
        waiting_first = True
        try:
            async for chunk in generation:
                if waiting_first and (chunk.text or chunk.finish_reason):
                    waiting_first = False
                    metrics.TTFT.labels(served.id).observe(time.monotonic() - admitted)
                if chunk.finish_reason:
                    metrics.GENERATIONS.labels(served.id, chunk.finish_reason).inc()
                    metrics.TOKENS.labels(served.id, "prompt").inc(chunk.prompt_tokens)
                    metrics.TOKENS.labels(served.id, "completion").inc(chunk.completion_tokens)
                yield chunk
        finally:
            generation.cancel()


def _schema(text: str) -> dict[str, Any] | None:
    """The JSON Schema of a constrained reply ('' = none): a JSON object, else InvalidInput."""
    if not text:
        return None
    try:
        schema = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"is not JSON: {exc}", field="sampling.json_schema") from None
    if not isinstance(schema, dict):
        raise InvalidInput("must be a JSON Schema object", field="sampling.json_schema")
    return schema
