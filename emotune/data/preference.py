"""Preference pairs: OpenAI's preference JSONL in (checked line by line), pair records out to the DPO formats.

OpenAI's DPO fine-tuning file has one pair per line::

    {"input": {"messages": [{"role": "user", "content": "..."}]},
     "preferred_output": [{"role": "assistant", "content": "..."}],
     "non_preferred_output": [{"role": "assistant", "content": "..."}]}

:class:`OpenAIPreferenceLine` is that line as one pydantic model (its input messages are a chat line's,
:class:`~emotune.data.chat_jsonl.ChatMessage`: text or text parts); :func:`check_preference_jsonl` reports every bad
line with its number and the field at fault (``input.messages[1].content``), like the chat checker
(:mod:`emotune.data.chat_jsonl`). A pair becomes one :class:`~emotune.data.records.Record`: the prompt messages plus the
preferred reply as ``messages``, the non-preferred reply as ``rejected``.

Exports of pair records (:func:`dumps_pairs`): OpenAI preference JSONL, LLaMA-Factory ranking data (sharegpt
layout with ``chosen``/``rejected`` and ``"ranking": true`` in its ``dataset_info.json`` entry,
:func:`llamafactory_ranking_info`) and XTuner's DPO data (``{"prompt": [...], "chosen": [...], "rejected": [...]}``
message lists, what ``xtuner.dataset.preference_dataset`` reads).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from emotune.data.chat_jsonl import (
    DEFAULT_MAX_TOKENS_PER_EXAMPLE,
    MAX_REPORTED_ERRORS,
    ChatMessage,
    CheckResult,
    approx_tokens,
    not_empty,
    validation_errors,
)
from emotune.data.formats import SHAREGPT, to_sharegpt
from emotune.data.records import Message, Provenance, Record, record_id
from emotune.data.textio import ReadReport, iter_jsonl
from emotune.errors import InvalidInput

PREFERENCE_KEYS = ("input", "preferred_output", "non_preferred_output")
PairFormat = Literal["openai", "llamafactory", "xtuner"]
PAIR_FORMATS: tuple[str, ...] = get_args(PairFormat)


class OutputMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["assistant"]
    content: str

    @field_validator("content")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        return not_empty(value)


class PreferenceInput(BaseModel):
    model_config = ConfigDict(extra="forbid")  # tools / parallel_tool_calls: emotune trains no tool use
    messages: list[ChatMessage] = Field(min_length=1)  # the same messages as a chat line's, without weights

    @field_validator("messages")
    @classmethod
    def _ends_with_user(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages and messages[-1].role != "user":
            raise ValueError("the last input message must be the user's: both outputs answer it")
        return messages


class OpenAIPreferenceLine(BaseModel):
    """One line of OpenAI's preference fine-tuning JSONL (one chosen and one rejected single-turn reply)."""

    model_config = ConfigDict(extra="forbid")
    input: PreferenceInput
    preferred_output: list[OutputMessage] = Field(min_length=1, max_length=1)
    non_preferred_output: list[OutputMessage] = Field(min_length=1, max_length=1)

    @field_validator("non_preferred_output")
    @classmethod
    def _differ(cls, rejected: list[OutputMessage], info: ValidationInfo) -> list[OutputMessage]:
        chosen = info.data.get("preferred_output")
        if chosen and rejected and chosen[0].content.strip() == rejected[0].content.strip():
            raise ValueError("preferred and non-preferred outputs are the same text: nothing to prefer")
        return rejected

    def to_record(self, style: str | None = None, source: str = "") -> Record:
        messages = [Message(role=m.role, content=m.text) for m in self.input.messages]
        chosen = Message(role="assistant", content=self.preferred_output[0].content)
        rejected = Message(role="assistant", content=self.non_preferred_output[0].content)
        identity = json.dumps([[m.role, m.content] for m in [*messages, chosen, rejected]], ensure_ascii=False)
        return Record(id=record_id(style, "pair", identity), style=style, messages=[*messages, chosen],
                      rejected=rejected, provenance=Provenance(teacher="import", source=source))

    @property
    def text(self) -> str:
        outputs = [*self.preferred_output, *self.non_preferred_output]
        return "".join([*(m.text for m in self.input.messages), *(m.content for m in outputs)])


def looks_like_preference(text: str) -> bool:
    """Whether a fine-tune file is preference JSONL (its first JSON line has OpenAI's preference keys)."""
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            first = json.loads(line)
        except ValueError:
            return False
        return isinstance(first, dict) and any(key in first for key in PREFERENCE_KEYS)
    return False


def check_preference_jsonl(text: str, source: str, *, count_tokens: Callable[[str], int] = approx_tokens,
                           max_tokens: int = DEFAULT_MAX_TOKENS_PER_EXAMPLE) -> CheckResult:
    """Every problem of every line, each with its line number and field; ``examples`` counts the good pairs."""
    result = CheckResult()
    report = ReadReport(source)

    def fail(line: int, message: str, field: str | None) -> None:
        if len(report.errors) < MAX_REPORTED_ERRORS:
            report.fail(line, message, field)

    for line, value in iter_jsonl(text, report):
        if not isinstance(value, dict):
            fail(line, "each line must be an object with input, preferred_output and non_preferred_output", None)
            continue
        try:
            pair = OpenAIPreferenceLine.model_validate(value)
        except ValidationError as exc:
            for message, field in validation_errors(exc):
                fail(line, message, field)
            continue
        tokens = count_tokens(pair.text)
        if tokens > max_tokens:
            fail(line, f"example is {tokens} tokens, over the limit of {max_tokens}", "input.messages")
            continue
        result.examples += 1
        result.assistant_turns += 1
        result.tokens += tokens
    result.errors = report.errors
    return result


def parse_preference_jsonl(text: str, source: str = "<preference>", *, style: str | None = None) -> list[Record]:
    """The pairs of a checked preference file as pair records; the first bad line raises InvalidInput."""
    records = []
    report = ReadReport(source)
    for line, value in iter_jsonl(text, report, strict=True):
        try:
            pair = OpenAIPreferenceLine.model_validate(value)
        except ValidationError as exc:
            message, field = validation_errors(exc)[0]
            raise InvalidInput(message, file=source, line=line, field=field) from None
        records.append(pair.to_record(style, f"{source}:{line}"))
    return records


# ------------------------------------------------------------------------------------------------- exports


def _split(record: Record) -> tuple[list[dict[str, str]], dict[str, str], dict[str, str]]:
    if record.rejected is None:
        raise InvalidInput("not a preference pair (no rejected reply)", field="rejected", record=record.id)
    prompt = [{"role": m.role, "content": m.content} for m in record.prompt_messages]
    chosen = {"role": "assistant", "content": record.messages[-1].content}
    return prompt, chosen, {"role": "assistant", "content": record.rejected.content}


def to_openai_preference(record: Record) -> dict[str, Any]:
    prompt, chosen, rejected = _split(record)
    return {"input": {"messages": prompt}, "preferred_output": [chosen], "non_preferred_output": [rejected]}


def to_xtuner_dpo(record: Record) -> dict[str, Any]:
    """XTuner DPO item: ``prompt`` / ``chosen`` / ``rejected`` message lists (its preference dataset renders them
    with the tokenizer's chat template). Lost: id, style, provenance, meta."""
    prompt, chosen, rejected = _split(record)
    return {"prompt": prompt, "chosen": [chosen], "rejected": [rejected]}


def to_llamafactory_ranking(record: Record) -> dict[str, Any]:
    """LLaMA-Factory ranking item (sharegpt layout): the prompt turns as ``conversations``, the two replies as
    ``chosen`` / ``rejected`` messages. Lost: id, style, provenance, meta; one system prompt (first) only."""
    _split(record)
    prompt = Record(id=record.id, messages=[*record.prompt_messages, Message(role="assistant", content="-")])
    conversations = to_sharegpt(prompt)["conversations"][:-1]
    return {"conversations": conversations,
            "chosen": {"from": SHAREGPT.assistant_tag, "value": record.messages[-1].content},
            "rejected": {"from": SHAREGPT.assistant_tag, "value": record.rejected.content}}


def llamafactory_ranking_info(name: str, file: str) -> dict[str, Any]:
    """The ``dataset_info.json`` entry for a file written by ``dumps_pairs(..., "llamafactory")``
    (``stage: dpo`` with ``pref_beta`` / ``pref_ftx`` trains on it)."""
    return {name: {"file_name": file, "formatting": "sharegpt", "ranking": True,
                   "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}}


def dumps_pairs(records: Iterable[Record], fmt: PairFormat) -> str:
    """Pair records as OpenAI preference JSONL, LLaMA-Factory ranking JSON or XTuner DPO JSONL."""
    convert = {"openai": to_openai_preference, "llamafactory": to_llamafactory_ranking, "xtuner": to_xtuner_dpo}
    if fmt not in convert:
        raise InvalidInput(f"unknown pair format {fmt!r}; known: {', '.join(PAIR_FORMATS)}", field="format")
    items = [convert[fmt](record) for record in records]
    if fmt == "llamafactory":
        return json.dumps(items, ensure_ascii=False, indent=2) + "\n"
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
