"""JobStore: every long operation is a job whose spec, status and append-only event log live in the store.

Layout under the prefix (default ``jobs``), chosen so that each read touches only what it needs on S3:

- ``status/<job_id>.json``  the :class:`JobRecord` (spec, state, result, error, resumable checkpoint); listing
  jobs lists this folder only, never the events;
- ``cancel/<job_id>``       a marker written by :meth:`JobStore.request_cancel`: any process may cancel without
  rewriting the status the runner owns;
- ``events/<job_id>/<seq:010d>.json``  one object per event (S3 has no append); zero-padded so key order is
  seq order and a watcher lists only keys after its offset;
- ``index/<kind>/<inverted ms>-<job_id>``  an empty object per job, newest first in key order: a page of jobs is
  one listing after the previous page's last entry plus a read of that page's statuses (:meth:`JobStore.page`);
- ``leases/<job_id>/...``  which process owns the job (``emotune.jobs.leases``; a copy of the cancel marker lives
  there too, so the owner sees it in the listing it makes to renew its lease).

One process (the job's runner, holding the job's lease) writes a job's status and events; any process reads and
watches it. A state change is logged as an event *before* the status is saved, so a reader that sees a terminal
status has the terminal event too, and :meth:`JobStore.watch` ends only once the status is terminal and every event was sent.

**On a store with conditional writes** (``store.conditional_writes``: the local store, AWS S3, MinIO) every status
write is a compare-and-swap: :meth:`JobStore.create` creates the status object with ``If-None-Match: *`` (two
creators of one id: one gets :class:`AlreadyExists`), the job's lease lives *in* the status object (``lease``:
owner, generation, token, renewals; ``emotune.jobs.leases.CasLeases``) and the owner writes status with ``If-Match``
on the etag of its own last write, so once another process has claimed the job the old owner's writes are
refused by the store (412, :class:`emotune.jobs.leases.LeaseLost` here). Events are created with ``If-None-Match: *``
(never overwritten). Without conditional writes (Swift) the status is read-modify-written and creation is
exists-then-write: see ``docs/jobs.md``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from emotune.errors import AlreadyExists, FailedPrecondition, InvalidInput, NotFound
from emotune.jobs.leases import CANCEL_MARKER, Held, LeaseLost, lease_prefix
from emotune.store.base import ArtifactStore, ConditionFailed
from emotune.store.keys import named_by, newest_first

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: Key of the lease inside a status object (conditional-write stores only); not a JobRecord field.
LEASE_FIELD = "lease"
# A status read that finds nothing while its key is listed is tried again (Swift: see JobStore._read_status).
STATUS_READ_ATTEMPTS = 4
STATUS_REREAD_SECONDS = 0.05
_CAS_RETRIES = 50


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
    return datetime.now(UTC)


class JobRecord(BaseModel):
    job_id: str
    kind: str
    state: JobState = JobState.QUEUED
    spec: dict[str, Any] = Field(default_factory=dict)
    result: dict[str, Any] = Field(default_factory=dict)
    error: str = ""
    #: Handler-owned progress state saved with ``JobContext.save_checkpoint``, read back after a restart.
    checkpoint: dict[str, Any] = Field(default_factory=dict)
    #: Derived from the cancel marker when read; never stored in the status object.
    cancel_requested: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class JobEvent(BaseModel):
    seq: int
    time: datetime = Field(default_factory=utcnow)
    # "state", "progress", "log", "metric", "artifact", "error", plus service-specific types
    type: str
    message: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


def validate_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise InvalidInput(
            f"job id {job_id!r} must be 1-128 letters, digits, '.', '_' or '-' (not starting with '.', '_', '-')",
            field="job_id",
        )
    return job_id


class JobStore:
    def __init__(self, store: ArtifactStore, prefix: str = "jobs") -> None:
        self.store, self.prefix = store, prefix.rstrip("/")
        self._next_seq: dict[str, int] = {}
        # Serializes this process's read-modify-write of status objects and seq allocation.
        self._lock = threading.RLock()
        #: Compare-and-swap writes (probed once per store; see the module docstring).
        self.cas = store.conditional_writes
        # Leases this process holds or held (CAS mode): status writes of these jobs go through them.
        self._owned: dict[str, Held] = {}

    def own(self, held: Held) -> None:
        """Status writes of ``held.job_id`` from now on go through ``held`` (If-Match on its etag)."""
        self._owned[held.job_id] = held

    def disown(self, held: Held) -> None:
        if self._owned.get(held.job_id) is held:
            del self._owned[held.job_id]

    # keys
    def _status_key(self, job_id: str) -> str:
        return f"{self.prefix}/status/{validate_job_id(job_id)}.json"

    def _cancel_key(self, job_id: str) -> str:
        return f"{self.prefix}/cancel/{validate_job_id(job_id)}"

    def _events_prefix(self, job_id: str) -> str:
        return f"{self.prefix}/events/{validate_job_id(job_id)}/"

    def _event_key(self, job_id: str, seq: int) -> str:
        return f"{self._events_prefix(job_id)}{seq:010d}.json"

    def _index_prefix(self, kind: str) -> str:
        return f"{self.prefix}/index/{validate_job_id(kind)}/"

    def _index_key(self, record: JobRecord) -> str:
        return self._index_prefix(record.kind) + newest_first(record.created_at, record.job_id)

    # jobs
    def create(self, kind: str, spec: dict[str, Any], job_id: str | None = None) -> JobRecord:
        job_id = validate_job_id(job_id or f"{kind}-{uuid.uuid4().hex[:16]}")
        record = JobRecord(job_id=job_id, kind=kind, spec=spec)
        if self.cas:  # one atomic create: of two creators of one id, exactly one gets here
            try:
                self.store.put_if_absent(self._status_key(job_id), _dump({**_doc(record), LEASE_FIELD: {}}))
            except ConditionFailed:
                raise AlreadyExists(f"job {job_id} already exists", job_id=job_id) from None
            self.append(job_id, "state", JobState.QUEUED.value, state=JobState.QUEUED.value)
            self.store.put_bytes(self._index_key(record), b"")  # only the one creator gets here
            return record
        with self._lock:
            if self.store.exists(self._status_key(job_id)):
                raise AlreadyExists(f"job {job_id} already exists", job_id=job_id)
            self.append(job_id, "state", JobState.QUEUED.value, state=JobState.QUEUED.value)
            self._save(record)
            self.store.put_bytes(self._index_key(record), b"")
        return record

    def _save(self, record: JobRecord) -> None:
        self.store.put_text(self._status_key(record.job_id), record.model_dump_json(exclude={"cancel_requested"}))

    def _modify(self, job_id: str, change: Callable[[JobRecord], JobRecord]) -> JobRecord:
        """Read the record, apply ``change``, write it back: a compare-and-swap on conditional-write stores
        (through this process's lease when it holds one, keeping the lease part as the lease left it)."""
        if not self.cas:
            with self._lock:
                record = change(self._load(job_id))
                self._save(record)
            return record
        key = self._status_key(job_id)
        held = self._owned.get(job_id)
        if held is not None:
            with held.lock:
                if held.lost or held.finished:
                    raise LeaseLost(f"job {job_id}: this process no longer holds its lease "
                                    f"({held.lost or 'released'})")
                assert held.doc is not None
                record = change(JobRecord.model_validate(held.doc))
                doc = {**_doc(record), LEASE_FIELD: held.doc.get(LEASE_FIELD, {})}
                try:
                    held.etag = self.store.put_if_match(key, _dump(doc), held.etag)
                except ConditionFailed:  # another process claimed the job: the store refused our write
                    held.lost = held.lost or "the store refused a status write (another process claimed the job)"
                    raise LeaseLost(f"job {job_id}: {held.lost}") from None
                held.doc = doc
            return record
        for _attempt in range(_CAS_RETRIES):
            try:
                raw, etag = self.store.get_with_etag(key)
            except NotFound:
                raise NotFound(f"job {job_id!r} not found", job_id=job_id) from None
            current = json.loads(raw)
            record = change(JobRecord.model_validate(current))
            try:
                self.store.put_if_match(key, _dump({**_doc(record), LEASE_FIELD: current.get(LEASE_FIELD, {})}), etag)
            except ConditionFailed:
                continue  # written meanwhile (a lease renewal): read again
            return record
        raise FailedPrecondition(f"job {job_id}: status changed {_CAS_RETRIES} times while being written",
                                 job_id=job_id)

    def get(self, job_id: str) -> JobRecord:
        record = self._load(job_id)
        record.cancel_requested = self.cancel_requested(job_id)
        return record

    def load(self, job_id: str) -> JobRecord:
        """The stored record without the cancel flag (one request instead of two)."""
        return self._load(job_id)

    def _load(self, job_id: str) -> JobRecord:
        key = self._status_key(job_id)
        try:
            raw = self._read_status(key, listed=False)
        except NotFound:
            raise NotFound(f"job {job_id!r} not found", job_id=job_id) from None
        return JobRecord.model_validate_json(raw)

    def _read_status(self, key: str, listed: bool) -> bytes:
        """A status object's bytes. A read that finds no object while the object is being overwritten is read again:
        OpenStack Swift (the timed fallback's store) opens an object by listing its files and then opening the
        newest, and an overwrite that lands in between deletes that file: the GET answers 404 (NoSuchKey) for an
        object that exists (swift/obj/diskfile.py, ``DiskFile.open``; the takeover e2e test's "No fine-tuning job
        found" under load). So a 404 is believed only once the key is not listed either (``listed``: it just was);
        an id that never existed costs one listing more, no wait."""
        for attempt in range(STATUS_READ_ATTEMPTS):
            try:
                return self.store.get_bytes(key)
            except NotFound:
                if attempt == STATUS_READ_ATTEMPTS - 1:
                    raise
                if not listed and not any(info.key == key for info in itertools.islice(self.store.list(key), 1)):
                    raise
                listed = False  # listed once: listed again before the next try
                time.sleep(STATUS_REREAD_SECONDS * (attempt + 1))
        raise AssertionError("unreachable")

    def cancel_requested(self, job_id: str) -> bool:
        return self.store.exists(self._cancel_key(job_id))

    def update(self, job_id: str, **changes: Any) -> JobRecord:
        """Change fields of the record (result, checkpoint, ...); the state goes through :meth:`set_state`."""
        return self._modify(job_id, lambda r: r.model_copy(update={**changes, "updated_at": utcnow()}))

    def set_state(
        self, job_id: str, state: JobState, *, error: str = "", result: dict[str, Any] | None = None,
        message: str = "",
    ) -> JobRecord:
        """Persist a state transition and log it as a ``state`` event (terminal states are final)."""
        def refuse_terminal(current: JobRecord) -> None:
            if current.state.terminal:
                raise FailedPrecondition(f"job {job_id} is already {current.state.value}", job_id=job_id)

        changes: dict[str, Any] = {"state": state, "error": error}
        if result is not None:
            changes["result"] = result

        def change(current: JobRecord) -> JobRecord:
            refuse_terminal(current)
            return current.model_copy(update={**changes, "updated_at": utcnow()})

        data: dict[str, Any] = {"state": state.value}
        if error:
            data["error"] = error
        with self._lock:
            held = self._owned.get(job_id) if self.cas else None
            refuse_terminal(JobRecord.model_validate(held.doc) if held is not None and held.doc is not None
                            else self._load(job_id))
            if held is not None:
                # No state event from a process that lost the job: a status write first proves (If-Match) that
                # it still held the lease a moment ago; a loss within that moment can still let this one event in.
                held.check()
                self._modify(job_id, lambda r: r.model_copy(update={"updated_at": utcnow()}))
            self.append(job_id, "state", message or state.value, **data)  # the event first, then the status
            return self._modify(job_id, change)

    def request_cancel(self, job_id: str) -> JobRecord:
        """Ask the job's runner (in whichever process) to stop; a no-op for finished jobs."""
        record = self.get(job_id)
        if record.state.terminal:
            return record
        self.store.put_text(self._cancel_key(job_id), utcnow().isoformat())
        # The same marker where the owner's lease renewal lists anyway: it stops the job within a renewal period.
        self.store.put_text(lease_prefix(self.prefix, job_id) + CANCEL_MARKER, utcnow().isoformat())
        return record.model_copy(update={"cancel_requested": True})

    def list(self, kind: str | None = None, limit: int = 0) -> list[JobRecord]:
        """Jobs, newest first."""
        status_prefix = f"{self.prefix}/status/"
        cancel_prefix = f"{self.prefix}/cancel/"
        cancelled = {info.key[len(cancel_prefix):] for info in self.store.list(cancel_prefix)}
        records = []
        for info in list(self.store.list(status_prefix)):
            try:
                record = JobRecord.model_validate_json(self._read_status(info.key, listed=True))
            except NotFound:  # deleted while listing
                continue
            if kind is None or record.kind == kind:
                record.cancel_requested = record.job_id in cancelled
                records.append(record)
        records.sort(key=lambda r: r.created_at, reverse=True)
        return records[:limit] if limit else records

    def page(self, kind: str, after: str | None = None, limit: int = 20,
             where: Callable[[JobRecord], bool] | None = None) -> tuple[list[JobRecord], bool]:
        """Jobs of ``kind``, newest first: the ``limit`` after job ``after`` and whether more follow. Reads one
        listing of the index (``limit + 1`` entries) and ``limit`` statuses, however many jobs there are.

        ``where``: only the jobs it accepts (e.g. one project's; ``after`` must then be one of them); the statuses
        of the jobs it refuses between them are read too."""
        self._ensure_index(kind)
        start_after = ""
        if after:
            try:
                first = self._load(after)
            except (NotFound, InvalidInput):
                return [], False
            if where is not None and not where(first):
                return [], False
            start_after = self._index_key(first)
        records: list[JobRecord] = []
        for info in self.store.list(self._index_prefix(kind), start_after=start_after):
            if len(records) == limit and where is None:
                return records, True
            try:
                record = self._load(named_by(info.key))
            except NotFound:  # deleted by hand
                continue
            if where is not None and not where(record):
                continue
            if len(records) == limit:
                return records, True
            record.cancel_requested = self.cancel_requested(record.job_id)
            records.append(record)
        return records, False

    def _ensure_index(self, kind: str) -> None:
        """Jobs created before the index existed get their entries once (a marker says it was done)."""
        marker = f"{self.prefix}/index/built-{validate_job_id(kind)}"
        if self.store.exists(marker):
            return
        for record in self.list(kind):
            self.store.put_bytes(self._index_key(record), b"")
        self.store.put_bytes(marker, b"")

    def expire_events(self, kind: str, older_than: timedelta) -> int:
        """Delete the events of finished jobs of ``kind`` that ended more than ``older_than`` ago (the operator's
        EMOTUNE_JOB_EVENTS_RETENTION_DAYS); the job's status and outputs stay. Returns the number of jobs."""
        cutoff, expired = utcnow() - older_than, 0
        for record in self.list(kind):
            if record.state.terminal and record.updated_at < cutoff:
                if self.store.delete_prefix(self._events_prefix(record.job_id)):
                    expired += 1
                with self._lock:
                    self._next_seq.pop(record.job_id, None)
        return expired

    # events
    def _allocate_seq(self, job_id: str) -> int:
        with self._lock:
            if job_id not in self._next_seq:
                existing = list(self.store.list(self._events_prefix(job_id)))
                self._next_seq[job_id] = _seq_of(existing[-1].key) + 1 if existing else 1
            seq = self._next_seq[job_id]
            self._next_seq[job_id] = seq + 1
            return seq

    def append(self, job_id: str, type: str, message: str = "", **data: Any) -> JobEvent:
        if not self.cas:
            event = JobEvent(seq=self._allocate_seq(job_id), type=type, message=message, data=data)
            self.store.put_text(self._event_key(job_id, event.seq), event.model_dump_json())
            return event
        for _attempt in range(_CAS_RETRIES):  # never overwrite an event: a seq taken meanwhile is skipped
            event = JobEvent(seq=self._allocate_seq(job_id), type=type, message=message, data=data)
            try:
                self.store.put_if_absent(self._event_key(job_id, event.seq), event.model_dump_json().encode())
            except ConditionFailed:
                with self._lock:
                    self._next_seq.pop(job_id, None)  # list again
                continue
            return event
        raise FailedPrecondition(f"job {job_id}: no free event number after {_CAS_RETRIES} tries", job_id=job_id)

    def events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        """Events with seq > ``after``, in order (lists only the keys after the offset)."""
        start_after = self._event_key(job_id, after) if after > 0 else ""
        events = []
        for info in self.store.list(self._events_prefix(job_id), start_after=start_after):
            events.append(JobEvent.model_validate_json(self.store.get_bytes(info.key)))
        return events

    def _any_after(self, job_id: str, seq: int) -> int | None:
        """The seq of the first event after ``seq`` (one listing request, whatever the log's length)."""
        start_after = self._event_key(job_id, seq) if seq > 0 else ""
        for info in self.store.list(self._events_prefix(job_id), start_after=start_after):
            return _seq_of(info.key)
        return None

    def last_seq(self, job_id: str) -> int:
        """The newest event's seq (0: none), found by a galloping then binary search of one-key listings:
        O(log n) requests, never a listing of the whole log."""
        if self._any_after(job_id, 0) is None:
            return 0
        low, high = 0, 1  # an event after low; none known after high yet
        while self._any_after(job_id, high) is not None:
            low, high = high, high * 2
        while high - low > 1:  # invariant: an event after low, none after high
            middle = (low + high) // 2
            if self._any_after(job_id, middle) is None:
                high = middle
            else:
                low = middle
        return high

    def events_page(self, job_id: str, before: int | None = None, limit: int = 20) -> tuple[list[JobEvent], bool]:
        """Events newest first (as OpenAI lists them): up to ``limit`` with seq < ``before`` (default: from the
        newest) and whether older ones remain; reads one page of keys, not the log."""
        upper = (before - 1) if before else self.last_seq(job_id)
        if upper < 1:
            return [], False
        start = max(0, upper - limit)
        events = []
        for info in self.store.list(self._events_prefix(job_id), start_after=self._event_key(job_id, start)
                                    if start else ""):
            if _seq_of(info.key) > upper:
                break
            events.append(JobEvent.model_validate_json(self.store.get_bytes(info.key)))
        older = start > 0 and self._first_seq(job_id) <= start
        return events[::-1], older

    def _first_seq(self, job_id: str) -> int:
        first = self._any_after(job_id, 0)
        return first if first is not None else 1 << 62

    def event_count(self, job_id: str) -> int:
        keys = [info.key for info in self.store.list(self._events_prefix(job_id))]
        return _seq_of(keys[-1]) if keys else 0

    async def watch(self, job_id: str, after: int = 0, poll_seconds: float = 0.2) -> AsyncIterator[JobEvent]:
        """Yield events with seq > ``after`` as they are written; stop once the job is terminal and drained."""
        await asyncio.to_thread(self._load, job_id)  # NotFound early
        while True:
            # Status first: its terminal state is saved after the terminal event, so that event is in the batch.
            terminal = (await asyncio.to_thread(self._load, job_id)).state.terminal
            batch = await asyncio.to_thread(self.events, job_id, after)
            for event in batch:
                after = event.seq
                yield event
            if terminal and not batch:
                return
            if not batch:
                await asyncio.sleep(poll_seconds)


def _doc(record: JobRecord) -> dict[str, Any]:
    return record.model_dump(mode="json", exclude={"cancel_requested"})


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _seq_of(event_key: str) -> int:
    return int(event_key.rsplit("/", 1)[1].split(".", 1)[0])
