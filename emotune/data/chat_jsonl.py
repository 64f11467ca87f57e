"""OpenAI's chat fine-tuning JSONL: one pydantic model for a line, and the upload checker built on it.

:class:`OpenAIChatLine` is the one rule for a chat line, used both by the upload checker
(:func:`check_chat_jsonl`) and by the dataset importer (``emotune.data.formats``, format ``openai``): ``{"messages":
[...]}`` with roles system/user/assistant, contents that are not empty, at least one assistant message, and an
optional ``weight`` (0 or 1) on assistant messages. The checker also counts tokens against the per-example limit.
Problems are collected per line so a user fixes the file in one pass; a file with any problem is refused (nothing
half-imported). The message shape is shared with the prompt of a preference line (``emotune.data.preference``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from emotune.data.textio import LineError, ReadReport, field_path, iter_jsonl

ALLOWED_ROLES = ("system", "user", "assistant")
# OpenAI allows 65,536 tokens per example for most models; our small CPU models far less, checked at job time.
DEFAULT_MAX_TOKENS_PER_EXAMPLE = 65_536
MAX_REPORTED_ERRORS = 50


def approx_tokens(text: str) -> int:
    """An upper-bound-ish estimate without a tokenizer: one token per CJK char, ~4 chars per token otherwise."""
    cjk = sum(1 for ch in text if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff")
    return cjk + (len(text) - cjk + 3) // 4


def not_empty(value: str) -> str:
    """A content validator: whitespace alone teaches nothing, so it is refused as empty."""
    if not value.strip():
        raise ValueError("is empty")
    return value


def validation_errors(exc: ValidationError) -> list[tuple[str, str | None]]:
    """A model's errors as (message, field path) pairs, the way line errors name them (``messages[1].role``)."""
    return [(err["msg"].removeprefix("Value error, "), field_path(err["loc"])) for err in exc.errors()]


class TextPart(BaseModel):
    """One part of a content list. Only text parts: emotune trains text models (no image or audio parts)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str

    @field_validator("type", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if value != "text":
            raise ValueError(f"only text parts are read, found {value!r}")
        return value


class ChatMessage(BaseModel):
    """A chat message as OpenAI's fine-tuning files hold it: role, content, optional name.

    Content is a string or a list of text parts (``[{"type": "text", "text": ...}]``), held as parts either way;
    OpenAI's fine-tuning input accepts both (its message types are those of the chat API), so both are read.
    (The cookbook's data-preparation notebook checks for a string only; it predates content parts.)
    """

    model_config = ConfigDict(extra="forbid")  # tool_calls / function_call / refusal: emotune trains no tool use
    role: Literal["system", "user", "assistant"]
    content: list[TextPart]
    name: str | None = None

    @field_validator("role", mode="before")
    @classmethod
    def _known_role(cls, value: Any) -> Any:
        if value not in ALLOWED_ROLES:
            raise ValueError(f"unknown role {value!r} (expected one of {', '.join(ALLOWED_ROLES)})")
        return value

    @field_validator("content", mode="before")
    @classmethod
    def _parts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [{"type": "text", "text": value}]
        if isinstance(value, list):
            return value
        raise ValueError(f"expected text or a list of text parts, found {type(value).__name__}")

    @field_validator("content")
    @classmethod
    def _not_empty(cls, parts: list[TextPart]) -> list[TextPart]:
        not_empty("".join(part.text for part in parts))
        return parts

    @property
    def text(self) -> str:
        return "".join(part.text for part in self.content)


class FineTuneMessage(ChatMessage):
    """A message of a chat fine-tuning line: ``weight`` 0 leaves an assistant message out of OpenAI's training."""

    weight: Literal[0, 1] | None = None

    @field_validator("weight")
    @classmethod
    def _assistant_only(cls, weight: int | None, info: ValidationInfo) -> int | None:
        if weight is not None and info.data.get("role") != "assistant":
            raise ValueError("only assistant messages have a weight")
        return weight


class OpenAIChatLine(BaseModel):
    """One line of OpenAI's chat fine-tuning JSONL. Other top-level keys (``id`` / ``style`` that an export with
    ``meta=True`` writes) are ignored here; the importer reads them itself."""

    messages: list[FineTuneMessage]

    @field_validator("messages")
    @classmethod
    def _has_assistant(cls, messages: list[FineTuneMessage]) -> list[FineTuneMessage]:
        if not messages:
            raise ValueError("has no messages")
        if not any(m.role == "assistant" for m in messages):
            raise ValueError("no assistant message: nothing to learn from this example")
        return messages

    @property
    def assistant_turns(self) -> int:
        return sum(m.role == "assistant" for m in self.messages)


@dataclass
class CheckResult:
    examples: int = 0
    assistant_turns: int = 0
    tokens: int = 0
    errors: list[LineError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.examples > 0

    def summary(self) -> str:
        shown = "; ".join(str(e) for e in self.errors[:5])
        more = f" (+{len(self.errors) - 5} more)" if len(self.errors) > 5 else ""
        return shown + more if self.errors else f"{self.examples} examples"


def check_chat_jsonl(
    text: str,
    source: str,
    *,
    count_tokens: Callable[[str], int] = approx_tokens,
    max_tokens: int = DEFAULT_MAX_TOKENS_PER_EXAMPLE,
) -> CheckResult:
    """Every problem of every line, each with its line number and field; ``examples`` counts the good lines."""
    result = CheckResult()
    report = ReadReport(source)

    def fail(line: int, message: str, field_name: str | None) -> None:
        if len(report.errors) < MAX_REPORTED_ERRORS:
            report.fail(line, message, field_name)

    for line, value in iter_jsonl(text, report):
        if not isinstance(value, dict):
            fail(line, "each line must be an object with a 'messages' list", None)
            continue
        try:
            example = OpenAIChatLine.model_validate(value)
        except ValidationError as exc:
            for message, field_name in validation_errors(exc):
                fail(line, message, field_name)
            continue
        tokens = sum(count_tokens(m.text) for m in example.messages)
        if tokens > max_tokens:
            fail(line, f"example is {tokens} tokens, over the limit of {max_tokens}", "messages")
            continue
        result.examples += 1
        result.assistant_turns += example.assistant_turns
        result.tokens += tokens
    result.errors = report.errors
    return result
