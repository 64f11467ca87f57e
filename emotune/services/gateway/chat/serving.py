"""Chat completions: OpenAI request -> inference ``Chat`` (messages rendered with the model's chat template)
-> OpenAI completion or SSE chunks (the shared lifecycle is :mod:`emotune.services.gateway.generation`)."""

from __future__ import annotations

from typing import Any

from emotune.services.gateway.chat.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    chat_logprobs,
)
from emotune.services.gateway.errors import OpenAIError
from emotune.services.gateway.generation import GenerationServing, Reply
from emotune.v1 import inference_pb2


class ChatServing(GenerationServing[ChatCompletionRequest]):
    id_prefix = "chatcmpl-"
    chunk_object = "chat.completion.chunk"

    def upstream_request(self, body: ChatCompletionRequest, request_id: str) -> inference_pb2.ChatRequest:
        if len(body.messages) > self.settings.gateway_max_messages:
            raise OpenAIError(400, f"at most {self.settings.gateway_max_messages} messages per request, got "
                                   f"{len(body.messages)}", param="messages")
        if body.tools:
            raise OpenAIError(400, "'tools' is not supported by emotune", param="tools")
        if body.top_logprobs and not body.logprobs:
            raise OpenAIError(400, "'top_logprobs' needs 'logprobs': true", param="top_logprobs")
        try:
            schema = body.response_format.schema_text() if body.response_format else ""
        except ValueError as exc:
            raise OpenAIError(400, f"response_format: {exc}", param="response_format") from None
        sampling = self.sampling(body, body.max_completion_tokens or body.max_tokens,
                                 logprobs=bool(body.logprobs),
                                 top_logprobs=body.top_logprobs or 0, json_schema=schema)
        messages = [inference_pb2.ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text())
                    for m in body.messages]
        return inference_pb2.ChatRequest(model=body.model, messages=messages, sampling=sampling,
                                         request_id=request_id, whole_reply=not body.stream)

    def answer(self, body: ChatCompletionRequest, completion_id: str, created: int, reply: Reply) -> dict[str, Any]:
        choice = Choice(message=AssistantMessage(content=reply.text), finish_reason=reply.finish_reason,
                        logprobs=chat_logprobs(reply.logprobs) if body.logprobs else None)
        return ChatCompletion(id=completion_id, created=created, model=body.model, usage=reply.usage,
                              choices=[choice]).model_dump()

    def opening(self, body: ChatCompletionRequest) -> dict[str, Any]:
        return {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}

    def choice(self, body: ChatCompletionRequest, text: str, logprobs: list[inference_pb2.TokenLogprob],
               offset: int, finish_reason: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": {"content": text} if text or logprobs else {},
                "logprobs": chat_logprobs(logprobs) if logprobs else None, "finish_reason": finish_reason}
