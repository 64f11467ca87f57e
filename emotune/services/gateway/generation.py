"""What chat completions and legacy completions share: the sampling parameters both accept, and one upstream
``Chat`` call turned into a JSON answer or server-sent events.

The first upstream chunk is awaited before answering, so failures that happen before any text (unknown model
404, inference queue full 429, bad parameters or a feature the model's engine lacks 400) come back as proper
HTTP errors, not inside a 200 stream. A client that disconnects at any point cancels the upstream call, which
stops the generation. Each resource (``chat``, ``completions``) supplies its request and its answer's shape.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from emotune.services.gateway import metrics
from emotune.services.gateway.auth import Caller
from emotune.services.gateway.context import GatewayContext
from emotune.services.gateway.errors import OpenAIError
from emotune.services.gateway.owners import upstream_error
from emotune.services.gateway.sse import ClientGone, EventStream, event, unless_disconnected
from emotune.services.gateway.upstream import ChatCall
from emotune.v1 import inference_pb2

CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; nobody reads it
MAX_STOP_SEQUENCES = 4
MAX_TOP_LOGPROBS = 20


def _encodable(text: str) -> str:
    """JSON may carry lone surrogates ("\\ud800") that no UTF-8 encoder (nor gRPC) accepts: refused up front."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains an unpaired surrogate (\\ud800-\\udfff): not valid Unicode text") from None
    return text


# Text that is sent on to the model.
Text = Annotated[str, AfterValidator(_encodable)]


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingFields(BaseModel):
    """Parameters of both ``/v1/chat/completions`` and ``/v1/completions``. Unknown fields are ignored, as
    OpenAI-compatible servers do; known ones emotune cannot honour are refused with a 400 naming them."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    stop: Text | list[Text] | None = Field(None, validate_default=True)
    n: int | None = Field(1, ge=1)
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # An end-user id for the caller's own abuse tracking: accepted, changes nothing.
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences, got {len(stops)}")
        return [s for s in stops if s]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Answer(BaseModel):
    """What every non-streamed answer has; each resource adds its ``object`` and ``choices``."""

    id: str
    created: int
    model: str
    usage: Usage
    system_fingerprint: str | None = None


@dataclass
class Reply:
    """A whole generation: its text, how it ended, its token counts and (when asked for) log probabilities."""

    text: str
    finish_reason: str
    usage: Usage
    logprobs: list[inference_pb2.TokenLogprob] = field(default_factory=list)


def _finish_reason(chunk: inference_pb2.ChatChunk) -> str:
    if chunk.finish_reason in ("stop", "length"):
        return chunk.finish_reason
    raise OpenAIError(503, f"the generation ended upstream without completing ({chunk.finish_reason})",
                      type="server_error", code="service_unavailable")


def _usage(model: str, chunk: inference_pb2.ChatChunk) -> Usage:
    prompt, completion = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
    metrics.TOKENS.labels(model, "prompt").inc(prompt)
    metrics.TOKENS.labels(model, "completion").inc(completion)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


Body = TypeVar("Body", bound=SamplingFields)


class GenerationServing(ABC, Generic[Body]):
    """One generation request -> inference ``Chat`` -> an OpenAI answer (JSON, or SSE ending in ``[DONE]``)."""

    id_prefix: str
    chunk_object: str

    def __init__(self, context: GatewayContext) -> None:
        self.settings = context.settings
        self.inference = context.inference
        self.limiter = context.limiter
        self.models = context.models

    @abstractmethod
    def upstream_request(self, body: Body, request_id: str) -> inference_pb2.ChatRequest:
        """The inference request (raises OpenAIError 400 for parameters emotune refuses)."""

    @abstractmethod
    def answer(self, body: Body, completion_id: str, created: int, reply: Reply) -> dict[str, Any]:
        """The non-streamed answer."""

    @abstractmethod
    def choice(self, body: Body, text: str, logprobs: list[inference_pb2.TokenLogprob], offset: int,
               finish_reason: str | None) -> dict[str, Any]:
        """One streamed choice: new text from ``offset`` (characters already sent), its tokens' logprobs."""

    def opening(self, body: Body) -> dict[str, Any] | None:
        """A choice sent before any generated text (chat: the assistant role), or None."""
        return None

    def sampling(self, body: Body, max_tokens: int | None, *, logprobs: bool = False, top_logprobs: int = 0,
                 json_schema: str = "") -> inference_pb2.SamplingParams:
        settings = self.settings
        if (body.n or 1) != 1:
            raise OpenAIError(400, "'n' must be 1: emotune returns one choice per request", param="n")
        if body.logit_bias:
            raise OpenAIError(400, "'logit_bias' is not supported: token ids differ between models", param="logit_bias")
        max_tokens = max_tokens or settings.gateway_default_max_tokens
        if max_tokens > settings.gateway_max_tokens:
            raise OpenAIError(400, f"max_tokens is {max_tokens}; this gateway allows at most "
                                   f"{settings.gateway_max_tokens}", param="max_tokens")
        return inference_pb2.SamplingParams(
            max_tokens=max_tokens, stop=body.stop, temperature=body.temperature, top_p=body.top_p, seed=body.seed,
            presence_penalty=body.presence_penalty or 0.0, frequency_penalty=body.frequency_penalty or 0.0,
            logprobs=logprobs, top_logprobs=top_logprobs, json_schema=json_schema)

    async def create(self, body: Body, request: Request, caller: Caller) -> Response:
        received = time.perf_counter()
        completion_id = f"{self.id_prefix}{uuid.uuid4().hex}"
        upstream = self.upstream_request(body, completion_id)
        known = await self.models.check(caller, body.model)  # another project's fine-tune: 404 model_not_found
        self.limiter.enter()
        call: ChatCall | None = None
        try:
            call = self.inference.chat(upstream)
            try:
                first = await unless_disconnected(request, call.next())
            except OpenAIError as exc:
                raise upstream_error(known, body.model, exc) from None
            if body.stream:
                stream_call = call

                def close() -> None:
                    stream_call.cancel()
                    self.limiter.leave()

                call = None  # the stream owns the call and the slot from here on
                return EventStream(self._events(body, stream_call, first, completion_id, received), on_close=close)
            reply = await unless_disconnected(request, self._reply(body, call, first))
            return JSONResponse(self.answer(body, completion_id, int(time.time()), reply))
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        finally:
            if call is not None:
                call.cancel()
                self.limiter.leave()

    async def _reply(self, body: Body, call: ChatCall, chunk: inference_pb2.ChatChunk | None) -> Reply:
        parts: list[str] = []
        logprobs: list[inference_pb2.TokenLogprob] = []
        while chunk is not None:
            parts.append(chunk.text)
            logprobs += chunk.logprobs
            if chunk.finish_reason:
                return Reply("".join(parts), _finish_reason(chunk), _usage(body.model, chunk), logprobs)
            chunk = await call.next()
        raise OpenAIError(502, "the inference stream ended without a finish reason", type="server_error")

    async def _events(self, body: Body, call: ChatCall, chunk: inference_pb2.ChatChunk | None,
                      completion_id: str, received: float) -> AsyncIterator[str]:
        created = int(time.time())

        def frame(choice: dict[str, Any]) -> str:
            data = {"id": completion_id, "object": self.chunk_object, "created": created, "model": body.model,
                    "choices": [choice]}
            if body.include_usage:
                data["usage"] = None
            return event(data)

        opening = self.opening(body)
        if opening is not None:
            yield frame(opening)
        sent = len(opening.get("text", "")) if opening else 0
        first_token = True
        try:
            while chunk is not None:
                if chunk.text or chunk.logprobs:
                    if first_token and chunk.text:
                        first_token = False
                        metrics.TTFT.labels(body.model).observe(time.perf_counter() - received)
                    yield frame(self.choice(body, chunk.text, list(chunk.logprobs), sent, None))
                    sent += len(chunk.text)
                if chunk.finish_reason:
                    yield frame(self.choice(body, "", [], sent, _finish_reason(chunk)))
                    usage = _usage(body.model, chunk)
                    if body.include_usage:
                        yield event({"id": completion_id, "object": self.chunk_object, "created": created,
                                     "model": body.model, "choices": [], "usage": usage.model_dump()})
                    yield event("[DONE]")
                    return
                chunk = await call.next()
            raise OpenAIError(502, "the inference stream ended without a finish reason", type="server_error")
        except OpenAIError as exc:  # headers are sent: report in-band, as OpenAI does
            yield event(exc.body())
