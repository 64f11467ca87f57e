"""Request and response shapes of ``/v1/completions`` (OpenAI's legacy text completions, the subset emotune
serves): one text prompt (a string or a list of one string), one choice. Token-id prompts, ``suffix``,
``best_of`` > 1 and ``echo`` with ``logprobs`` are refused with a 400 naming the parameter."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from emotune.services.gateway.generation import MAX_TOP_LOGPROBS, Answer, SamplingFields, Text
from emotune.v1 import inference_pb2


class CompletionRequest(SamplingFields):
    prompt: Text | list[Text] | list[int] | list[list[int]]
    echo: bool | None = False
    # OpenAI's legacy logprobs: how many alternatives per token (0 = only the chosen token's); None = none.
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1)

    @field_validator("prompt")
    @classmethod
    def _one_text(cls, prompt: str | list[Any]) -> str:
        if isinstance(prompt, str):
            return prompt
        if len(prompt) == 1 and isinstance(prompt[0], str):
            return prompt[0]
        if prompt and all(isinstance(item, str) for item in prompt):
            raise ValueError(f"one prompt per request (got a list of {len(prompt)})")
        raise ValueError("give the prompt as text: token-id prompts are not served (token ids differ per model)")

    @property
    def text(self) -> str:
        assert isinstance(self.prompt, str)  # normalised by the validator
        return self.prompt


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop", "length"]


class Completion(Answer):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]


def completion_logprobs(logprobs: list[inference_pb2.TokenLogprob], offset: int) -> dict[str, Any]:
    """OpenAI's legacy ``logprobs`` object; ``text_offset`` counts characters from the start of the answer
    text, whose first generated character is at ``offset``."""
    offsets = []
    for p in logprobs:
        offsets.append(offset)
        offset += len(p.token)
    return {"tokens": [p.token for p in logprobs], "token_logprobs": [p.logprob for p in logprobs],
            "top_logprobs": [{top.token: top.logprob for top in p.top_logprobs} for p in logprobs],
            "text_offset": offsets}
