"""Chat completions: OpenAI request -> inference ``Chat`` stream -> OpenAI completion or SSE chunks.

The first upstream chunk is awaited before answering, so failures that happen before any text (unknown model
404, inference queue full 429, bad parameters 400) come back as proper HTTP errors, not inside a 200 stream.
A client that disconnects at any point cancels the upstream call, which stops the generation.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from emotune.v1 import inference_pb2
from services.gateway import metrics
from services.gateway.chat.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    Usage,
)
from services.gateway.context import GatewayContext
from services.gateway.errors import OpenAIError
from services.gateway.sse import ClientGone, EventStream, event, unless_disconnected
from services.gateway.upstream import ChatCall

CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client went away"; nobody reads it


def _finish_reason(chunk: inference_pb2.ChatChunk) -> str:
    if chunk.finish_reason in ("stop", "length"):
        return chunk.finish_reason
    raise OpenAIError(503, f"the generation ended upstream without completing ({chunk.finish_reason})",
                      type="server_error", code="service_unavailable")


class ChatServing:
    def __init__(self, context: GatewayContext) -> None:
        self.settings = context.settings
        self.inference = context.inference
        self.limiter = context.limiter

    def upstream_request(self, body: ChatCompletionRequest, request_id: str) -> inference_pb2.ChatRequest:
        settings = self.settings
        if len(body.messages) > settings.gateway_max_messages:
            raise OpenAIError(400, f"at most {settings.gateway_max_messages} messages per request, got "
                                   f"{len(body.messages)}", param="messages")
        for param, unsupported in (("n", (body.n or 1) != 1), ("logprobs", bool(body.logprobs)),
                                   ("tools", bool(body.tools))):
            if unsupported:
                raise OpenAIError(400, f"'{param}' is not supported by emotune (n must be 1, no logprobs, no tools)",
                                  param=param)
        wanted = (body.response_format or {}).get("type", "text")
        if wanted != "text":  # never ignored: a caller asking for JSON must not get prose back
            raise OpenAIError(400, f"response_format type {wanted!r} is not supported by emotune's engines yet "
                                   "(only 'text'); constrained JSON decoding is not served", param="response_format")
        max_tokens = body.max_completion_tokens or body.max_tokens or settings.gateway_default_max_tokens
        if max_tokens > settings.gateway_max_tokens:
            raise OpenAIError(400, f"max_tokens is {max_tokens}; this gateway allows at most "
                                   f"{settings.gateway_max_tokens}", param="max_tokens")
        sampling = inference_pb2.SamplingParams(max_tokens=max_tokens, stop=body.stop, temperature=body.temperature,
                                                top_p=body.top_p, seed=body.seed)
        messages = [inference_pb2.ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text())
                    for m in body.messages]
        return inference_pb2.ChatRequest(model=body.model, messages=messages, sampling=sampling,
                                         request_id=request_id, whole_reply=not body.stream)

    async def create(self, body: ChatCompletionRequest, request: Request) -> Response:
        received = time.perf_counter()
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        upstream = self.upstream_request(body, completion_id)
        self.limiter.enter()
        call: ChatCall | None = None
        try:
            call = self.inference.chat(upstream)
            first = await unless_disconnected(request, call.next())
            if body.stream:
                stream_call = call

                def close() -> None:
                    stream_call.cancel()
                    self.limiter.leave()

                call = None  # the stream owns the call and the slot from here on
                events = self._events(body, stream_call, first, completion_id, received)
                return EventStream(events, on_close=close)
            return await unless_disconnected(request, self._complete(body, call, first, completion_id))
        except ClientGone:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        finally:
            if call is not None:
                call.cancel()
                self.limiter.leave()

    async def _complete(self, body: ChatCompletionRequest, call: ChatCall,
                        chunk: inference_pb2.ChatChunk | None, completion_id: str) -> JSONResponse:
        parts: list[str] = []
        while chunk is not None and not chunk.finish_reason:
            parts.append(chunk.text)
            chunk = await call.next()
        if chunk is None:
            raise OpenAIError(502, "the inference stream ended without a finish reason", type="server_error")
        parts.append(chunk.text)
        usage = self._usage(body.model, chunk)
        completion = ChatCompletion(
            id=completion_id, created=int(time.time()), model=body.model, usage=usage,
            choices=[Choice(message=AssistantMessage(content="".join(parts)), finish_reason=_finish_reason(chunk))],
        )
        return JSONResponse(completion.model_dump())

    async def _events(self, body: ChatCompletionRequest, call: ChatCall, chunk: inference_pb2.ChatChunk | None,
                      completion_id: str, received: float) -> AsyncIterator[str]:
        created = int(time.time())
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def frame(delta: dict[str, str], finish_reason: str | None = None) -> str:
            data = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": body.model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
            if include_usage:
                data["usage"] = None
            return event(data)

        yield frame({"role": "assistant", "content": ""})
        first_token = True
        try:
            while chunk is not None:
                if chunk.text:
                    if first_token:
                        first_token = False
                        metrics.TTFT.labels(body.model).observe(time.perf_counter() - received)
                    yield frame({"content": chunk.text})
                if chunk.finish_reason:
                    yield frame({}, _finish_reason(chunk))
                    usage = self._usage(body.model, chunk)
                    if include_usage:
                        yield event({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                                     "model": body.model, "choices": [], "usage": usage.model_dump()})
                    yield event("[DONE]")
                    return
                chunk = await call.next()
            raise OpenAIError(502, "the inference stream ended without a finish reason", type="server_error")
        except OpenAIError as exc:  # headers are sent: report in-band, as OpenAI does
            yield event(exc.body())

    @staticmethod
    def _usage(model: str, chunk: inference_pb2.ChatChunk) -> Usage:
        prompt, completion = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
        metrics.TOKENS.labels(model, "prompt").inc(prompt)
        metrics.TOKENS.labels(model, "completion").inc(completion)
        return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
