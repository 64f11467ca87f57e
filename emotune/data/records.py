"""The internal dataset record: messages + style + provenance, one JSON object per line.

Every stage (datagen, validator, trainer, evaluation) reads and writes this one format; converters to XTuner,
alpaca, sharegpt and OpenAI chat JSONL live in ``emotune.data.formats``.

A **preference pair** is the same record with ``rejected`` set: ``messages`` is the prompt followed by the chosen
(preferred) assistant reply, ``rejected`` the dispreferred reply to the same prompt. So a pair is also a valid
supervised sample (on its chosen reply): every stage that reads records reads pairs unchanged, and one dataset
serves SFT, DPO, or SFT then DPO. A dataset artifact of pairs is the usual ``records.jsonl``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from emotune.data.textio import ReadReport, field_path, iter_jsonl

Role = Literal["system", "user", "assistant"]
RECORDS_FILE = "records.jsonl"  # a dataset artifact's records (its other files: failures.jsonl, stats.json)


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role
    content: str


class Provenance(BaseModel):
    """Where a sample came from, kept with the sample so any reply can be traced and regenerated."""

    model_config = ConfigDict(extra="allow")
    teacher: str = ""  # provider, e.g. "zhipuai", "openai", "import"
    model: str = ""
    temperature: float | None = None
    prompt_version: str = ""
    raw_response: str = ""
    source: str = ""  # question file / importer / job id
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    style: str | None = None
    messages: list[Message] = Field(min_length=1)
    provenance: Provenance = Field(default_factory=Provenance)
    meta: dict[str, Any] = Field(default_factory=dict)
    rejected: Message | None = Field(
        None, exclude_if=lambda value: value is None,
        description="preference pairs: the dispreferred assistant reply to messages[:-1] (messages[-1] is the "
                    "chosen one); absent on supervised records")

    @model_validator(mode="after")
    def _pair_shape(self) -> Record:
        if self.rejected is not None:
            if self.rejected.role != "assistant":
                raise ValueError("the rejected reply must have role 'assistant'")
            if self.messages[-1].role != "assistant":
                raise ValueError("a preference pair's messages must end with the chosen assistant reply")
            if not any(m.role == "user" for m in self.messages[:-1]):
                raise ValueError("a preference pair's prompt (messages before the chosen reply) needs a user turn")
        return self

    @property
    def is_pair(self) -> bool:
        return self.rejected is not None

    @property
    def prompt_messages(self) -> list[Message]:
        """What a pair's two replies answer: every message before the last (chosen) reply."""
        return self.messages[:-1]

    @property
    def assistant_text(self) -> str:
        """The last assistant reply (what the validator scores)."""
        return next((m.content for m in reversed(self.messages) if m.role == "assistant"), "")

    @property
    def first_user_text(self) -> str:
        return next((m.content for m in self.messages if m.role == "user"), "")


def record_id(*parts: object) -> str:
    """A stable id from the sample's identity, e.g. (style, source question, mode, variant)."""
    joined = "\x1f".join(str(p) for p in parts)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()[:20]


def dumps_records(records: Iterable[Record]) -> str:
    return "".join(r.model_dump_json(exclude_none=False) + "\n" for r in records)


def parse_records(text: str, source: str = "<records>", *, strict: bool = False) -> tuple[list[Record], ReadReport]:
    """Parse JSONL records; a bad line (broken JSON, missing field) is reported with its line and field."""
    report = ReadReport(source)
    records: list[Record] = []
    for number, value in iter_jsonl(text, report, strict=strict):
        try:
            records.append(Record.model_validate(value))
        except ValidationError as exc:
            err = exc.errors()[0]
            report.fail(number, err["msg"], field_path(err["loc"]), strict=strict)
            report.read -= 1
    return records, report

