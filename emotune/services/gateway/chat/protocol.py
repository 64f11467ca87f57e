"""Request and response shapes of ``/v1/chat/completions`` (the subset of OpenAI's API emotune serves).

Unknown fields are ignored, as OpenAI-compatible servers do; known features emotune does not serve (``n`` > 1,
``tools``) are refused with a 400 naming the parameter, rather than silently ignored. ``logprobs`` and a JSON
``response_format`` are served where the model's engine can (llamacpp) and refused, naming the engine, elsewhere.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from emotune.services.gateway.generation import MAX_TOP_LOGPROBS, Answer, SamplingFields, Text
from emotune.v1 import inference_pb2

ANY_JSON_OBJECT = json.dumps({"type": "object"})


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: Text


class ChatMessageParam(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    def schema_text(self) -> str:
        """The JSON Schema the reply must match, as inference takes it ('' = free text)."""
        if self.type == "text":
            return ""
        if self.type == "json_object":
            return ANY_JSON_OBJECT
        if self.json_schema is None:
            raise ValueError("type 'json_schema' needs a json_schema object ({'name': ..., 'schema': {...}})")
        return json.dumps(self.json_schema.json_schema or {})


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessageParam] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[dict[str, Any]] | None = None
    response_format: ResponseFormat | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: dict[str, Any] | None = None


class ChatCompletion(Answer):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[Choice]


def _token(logprob: inference_pb2.TokenLogprob) -> dict[str, Any]:
    return {"token": logprob.token, "logprob": logprob.logprob, "bytes": list(logprob.bytes)}


def chat_logprobs(logprobs: list[inference_pb2.TokenLogprob]) -> dict[str, Any]:
    """OpenAI's chat ``logprobs`` object: one entry per token, each with its ``top_logprobs``."""
    return {"content": [{**_token(p), "top_logprobs": [_token(top) for top in p.top_logprobs]} for p in logprobs],
            "refusal": None}
