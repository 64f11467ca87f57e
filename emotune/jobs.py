"""JobStore: every long operation is a job whose spec, status and append-only event log live in the store.

Layout under ``jobs/<job_id>/``: ``spec.json``, ``status.json`` and ``events/<seq:010d>.json`` (one object per
event, so appending never rewrites history and works on S3, which has no append). Any process can read a job;
one process (the job's runner) writes it. Watching resumes from an event offset.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from emotune.errors import FailedPrecondition, NotFound
from emotune.store.base import ArtifactStore


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class JobRecord(BaseModel):
    job_id: str
    kind: str
    state: JobState = JobState.QUEUED
    spec: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    error: str = ""
    cancel_requested: bool = False
    # Handler-owned state saved as it goes (stage reached, sub-job ids, stream offsets), so a restarted
    # process resumes the job where it stopped instead of starting over.
    checkpoint: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class JobEvent(BaseModel):
    seq: int
    time: datetime = Field(default_factory=utcnow)
    # "state", "progress", "log", "metric", "artifact", "error"
    type: str
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class JobStore:
    def __init__(self, store: ArtifactStore, prefix: str = "jobs") -> None:
        self.store, self.prefix = store, prefix.rstrip("/")
        self._next_seq: dict[str, int] = {}
        self._lock = threading.Lock()

    # keys
    def _key(self, job_id: str, name: str) -> str:
        return f"{self.prefix}/{job_id}/{name}"

    def _event_key(self, job_id: str, seq: int) -> str:
        return self._key(job_id, f"events/{seq:010d}.json")

    # jobs
    def create(self, kind: str, spec: dict[str, Any], job_id: str | None = None) -> JobRecord:
        job_id = job_id or f"{kind}-{uuid.uuid4().hex[:16]}"
        if self.store.exists(self._key(job_id, "status.json")):
            raise FailedPrecondition(f"job {job_id} already exists", job_id=job_id)
        record = JobRecord(job_id=job_id, kind=kind, spec=spec)
        self.store.put_text(self._key(job_id, "spec.json"), json.dumps(spec, ensure_ascii=False, indent=1))
        self._save(record)
        self.append(job_id, "state", "queued", state=JobState.QUEUED.value)
        return record

    def _save(self, record: JobRecord) -> None:
        self.store.put_text(self._key(record.job_id, "status.json"), record.model_dump_json())

    def get(self, job_id: str) -> JobRecord:
        try:
            return JobRecord.model_validate_json(self.store.get_bytes(self._key(job_id, "status.json")))
        except NotFound:
            raise NotFound(f"job {job_id!r} not found", job_id=job_id) from None

    def update(self, job_id: str, **changes: Any) -> JobRecord:
        record = self.get(job_id).model_copy(update={**changes, "updated_at": utcnow()})
        self._save(record)
        return record

    def set_state(
        self, job_id: str, state: JobState, *, error: str = "", result: dict[str, Any] | None = None,
        message: str = "",
    ) -> JobRecord:
        """Persist a state transition and log it as a ``state`` event (terminal states are final)."""
        current = self.get(job_id)
        if current.state.terminal:
            raise FailedPrecondition(f"job {job_id} is already {current.state.value}", job_id=job_id)
        changes: dict[str, Any] = {"state": state, "error": error}
        if result is not None:
            changes["result"] = result
        record = self.update(job_id, **changes)
        data: dict[str, Any] = {"state": state.value}
        if error:
            data["error"] = error
        self.append(job_id, "state", message or state.value, **data)
        return record

    def request_cancel(self, job_id: str) -> JobRecord:
        record = self.get(job_id)
        if record.state.terminal:
            return record
        return self.update(job_id, cancel_requested=True)

    def list(self, kind: str | None = None, limit: int = 0) -> list[JobRecord]:
        records = [
            JobRecord.model_validate_json(self.store.get_bytes(info.key))
            for info in self.store.list(f"{self.prefix}/")
            if info.key.endswith("/status.json") and info.key.count("/") == 2
        ]
        records = [r for r in records if kind is None or r.kind == kind]
        records.sort(key=lambda r: r.created_at, reverse=True)
        return records[:limit] if limit else records

    # events
    def _allocate_seq(self, job_id: str) -> int:
        with self._lock:
            if job_id not in self._next_seq:
                existing = list(self.store.list(self._key(job_id, "events/")))
                self._next_seq[job_id] = (int(existing[-1].key.rsplit("/", 1)[1][:10]) + 1) if existing else 1
            seq = self._next_seq[job_id]
            self._next_seq[job_id] = seq + 1
            return seq

    def append(self, job_id: str, type: str, message: str = "", **data: Any) -> JobEvent:
        event = JobEvent(seq=self._allocate_seq(job_id), type=type, message=message, data=data)
        self.store.put_text(self._event_key(job_id, event.seq), event.model_dump_json())
        return event

    def events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        start = self._event_key(job_id, after)
        return [
            JobEvent.model_validate_json(self.store.get_bytes(info.key))
            for info in self.store.list(self._key(job_id, "events/"))
            if info.key > start
        ]

    def event_count(self, job_id: str) -> int:
        return sum(1 for _ in self.store.list(self._key(job_id, "events/")))

    async def watch(self, job_id: str, after: int = 0, poll_seconds: float = 0.2) -> AsyncIterator[JobEvent]:
        """Yield events with seq > ``after`` as they are written; stop once the job is terminal and drained."""
        self.get(job_id)  # NotFound early
        while True:
            terminal = (await asyncio.to_thread(self.get, job_id)).state.terminal
            batch = await asyncio.to_thread(self.events, job_id, after)
            for event in batch:
                after = event.seq
                yield event
            if terminal and not batch:
                return
            if not batch:
                await asyncio.sleep(poll_seconds)
