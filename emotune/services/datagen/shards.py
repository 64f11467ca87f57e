"""Append-only result shards: how a generation job survives ``kill -9``.

Every finished sample (a record, or a classified failure) goes into a buffer that is written as one object
``<prefix>/<n:06d>.jsonl`` when it holds ``shard_size`` outcomes or has waited ``flush_seconds``. A shard key is
used once and never rewritten; a flush that may or may not have landed (cancelled, store error) retires its key
and the outcomes go out again in the next shard. Readers keep the *last* outcome per id, so such repeats, and a
sample retried after an earlier exhausted failure, never show up twice.

On restart the job reads every shard and skips the ids that are done: records, and failures that are final
(content-safety refusals...). Failures that only ran out of retries are tried again.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from emotune.data.records import Record
from emotune.logging import get_logger
from emotune.store.base import ArtifactStore

log = get_logger(__name__)
_SHARD_NAME = re.compile(r"/(\d{6})\.jsonl$")


class Failure(BaseModel):
    """A sample the teacher could not produce, with the reason (kept in the dataset's failures file)."""

    id: str
    style: str
    mode: str
    variant: int
    source: str = ""
    reason: str  # content_safety, rate_limited, timeout, malformed_output, ...
    # final: never retried; exhausted: a retryable error outlived the retries (tried again on resume)
    kind: Literal["final", "exhausted"]
    message: str = ""
    status: int | None = None
    code: str = ""
    attempts: int = 0
    retry_reasons: list[str] = Field(default_factory=list)
    prompt: str = ""
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class Outcome(BaseModel):
    id: str
    style: str
    record: Record | None = None
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.record is not None

    @property
    def finished(self) -> bool:
        """Done for good: a record, or a failure no retry will fix."""
        return self.ok or (self.failure is not None and self.failure.kind == "final")


def shard_key(prefix: str, index: int) -> str:
    return f"{prefix.rstrip('/')}/{index:06d}.jsonl"


def read_shards(store: ArtifactStore, prefix: str) -> tuple[dict[str, Outcome], int]:
    """Every outcome written under ``prefix`` (last one per id wins) and the next free shard index."""
    outcomes: dict[str, Outcome] = {}
    next_index = 0
    for info in store.list(prefix.rstrip("/") + "/"):
        found = _SHARD_NAME.search(info.key)
        if not found:
            continue
        next_index = max(next_index, int(found.group(1)) + 1)
        for number, line in enumerate(store.get_text(info.key).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                outcome = Outcome.model_validate_json(line)
            except ValidationError as exc:  # only possible if someone edited a shard by hand
                log.warning("skipping unreadable shard line", key=info.key, line=number, error=str(exc)[:200])
                continue
            outcomes[outcome.id] = outcome
    return outcomes, next_index


class ShardWriter:
    def __init__(self, store: ArtifactStore, prefix: str, shard_size: int, next_index: int) -> None:
        self.store, self.prefix, self.shard_size = store, prefix, shard_size
        self._next = next_index
        self._buffer: list[Outcome] = []
        self._oldest: float | None = None
        self._lock = asyncio.Lock()
        self.shards_written = 0

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def age(self) -> float:
        """Seconds the oldest buffered outcome has waited (0 when empty)."""
        return 0.0 if self._oldest is None else time.monotonic() - self._oldest

    async def add(self, outcome: Outcome) -> None:
        self._buffer.append(outcome)
        if self._oldest is None:
            self._oldest = time.monotonic()
        if len(self._buffer) >= self.shard_size:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            if not self._buffer:
                return
            batch, self._buffer, self._oldest = self._buffer, [], None
            key, self._next = shard_key(self.prefix, self._next), self._next + 1
            payload = "".join(o.model_dump_json() + "\n" for o in batch).encode("utf-8")
            try:
                await asyncio.to_thread(self.store.put_bytes, key, payload, "application/x-ndjson")
            except BaseException:
                # The write may have landed anyway: its key stays retired, the outcomes go out again next time.
                self._buffer[:0] = batch
                self._oldest = self._oldest or time.monotonic()
                raise
            self.shards_written += 1
