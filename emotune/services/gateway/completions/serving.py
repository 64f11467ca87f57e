"""Legacy completions: OpenAI request -> inference ``Chat`` with a raw prompt (tokenized as-is, no chat
template, no style) -> OpenAI ``text_completion`` or SSE chunks (lifecycle: :mod:`emotune.services.gateway.generation`).

``echo`` puts the prompt in front of the answer; prompt log probabilities are not computed, so ``echo`` with
``logprobs`` is refused.
"""

from __future__ import annotations

from typing import Any

from emotune.services.gateway.completions.protocol import (
    Completion,
    CompletionChoice,
    CompletionRequest,
    completion_logprobs,
)
from emotune.services.gateway.errors import OpenAIError
from emotune.services.gateway.generation import GenerationServing, Reply
from emotune.v1 import inference_pb2


class CompletionServing(GenerationServing[CompletionRequest]):
    id_prefix = "cmpl-"
    chunk_object = "text_completion"

    def upstream_request(self, body: CompletionRequest, request_id: str) -> inference_pb2.ChatRequest:
        refused = (("suffix", bool(body.suffix), "'suffix' (insertion) is not supported"),
                   ("best_of", (body.best_of or 1) != 1, "'best_of' must be 1: emotune returns one choice"),
                   ("echo", bool(body.echo) and body.logprobs is not None,
                    "'echo' with 'logprobs' needs the prompt's log probabilities, which emotune does not compute"))
        for param, bad, message in refused:
            if bad:
                raise OpenAIError(400, message, param=param)
        sampling = self.sampling(body, body.max_tokens, logprobs=body.logprobs is not None,
                                 top_logprobs=body.logprobs or 0)
        return inference_pb2.ChatRequest(model=body.model, prompt=body.text, sampling=sampling,
                                         request_id=request_id, whole_reply=not body.stream)

    def answer(self, body: CompletionRequest, completion_id: str, created: int, reply: Reply) -> dict[str, Any]:
        echoed = body.text if body.echo else ""
        choice = CompletionChoice(text=echoed + reply.text, finish_reason=reply.finish_reason,
                                  logprobs=completion_logprobs(reply.logprobs, 0) if body.logprobs is not None
                                  else None)
        return Completion(id=completion_id, created=created, model=body.model, usage=reply.usage,
                          choices=[choice]).model_dump()

    def opening(self, body: CompletionRequest) -> dict[str, Any] | None:
        return {"index": 0, "text": body.text, "logprobs": None, "finish_reason": None} if body.echo else None

    def choice(self, body: CompletionRequest, text: str, logprobs: list[inference_pb2.TokenLogprob],
               offset: int, finish_reason: str | None) -> dict[str, Any]:
        return {"index": 0, "text": text,
                "logprobs": completion_logprobs(logprobs, offset) if body.logprobs is not None else None,
                "finish_reason": finish_reason}
