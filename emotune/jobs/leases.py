"""Job leases: one live owner per job across every process that shares a store.

Two implementations behind one interface (:func:`leases_for` picks by ``store.conditional_writes``):

- :class:`CasLeases`, on stores with conditional writes (the local store, AWS S3, MinIO): the lease is a field of
  the job's status object and every claim, renewal, release and status write is a compare-and-swap on it
  (``If-Match`` on the etag last read or written). The store decides who wins a claim, and refuses every write of
  an owner that lost the job: no timing assumption is needed for mutual exclusion. Liveness (when a silent owner
  counts as gone) is observed as below.
- :class:`Leases`, the timed protocol below, only for stores without conditional writes (OpenStack Swift's
  s3api answers a PUT with ``If-None-Match: *`` with 501 NotImplemented). It needs strongly consistent
  put/list/get plus a bound on write latency, and fences an old owner by its own clock only.

The rest of this docstring describes the timed protocol.

Layout under the JobStore prefix (``jobs``)::

    leases/<job_id>/<generation:010d>-<token>.json   one claim object per contender (token: random hex)
    leases/<job_id>/cancel                             a cancel marker the owner sees in its renewal listing

A claim holds ``{owner, generation, token, renewals, released}``. The holder of generation ``g`` rewrites only its
own claim (``renewals + 1``) every ``lease_seconds / 4``.

**Liveness is observed, never compared across clocks.** A watcher remembers, per job, the snapshot of the highest
generation (its claim keys and their ``renewals``/``released``) and the time *by its own monotonic clock, after the
read returned* that it first saw that snapshot. The generation is expired once the snapshot has not changed for
``lease_seconds``, or at once when it says ``released`` (the holder stopped its task before writing that). A job
with no claim at all counts as generation 0 and expires the same way.

**Claiming generation g+1 (Fischer's timed mutual exclusion).** W = ``min(5, lease_seconds / 4)`` bounds a write;
D = 1.2 W + 50 ms.

1. list the job's claims; if the snapshot differs from the expired one (a renewal, a higher generation), lose;
2. put our claim for g+1; if more than W passed from before the list to after the put returned, delete it, lose;
3. sleep D, rewrite our claim (its first renewal), list again: we win iff our key is the smallest of g+1, no
   generation above g+1 exists, and generation g still shows the expired snapshot (or says released). Losers
   delete their claim.

*Two contenders A, B never both win:* say A's key is smaller and B won, so B's final list (at b_f, at least D after
B's put returned) did not show A's claim. A's put was therefore not visible at b_f, so A's put returned after b_f,
and A's first list started less than W before that: after b_f - W, i.e. after B's put returned (D > W). So A's
first list saw B's claim for g+1 and A lost at step 1. A claim aborted for slowness can only become visible late,
which can make another contender lose, never make two win. Contenders that crash after step 2 leave a claim that
makes the generation nobody's; it expires like any other and g+2 is claimed.

*A holder and a taker never both run:* a renewal is a put of the holder's own claim followed by a list; it
succeeds only if that list shows no higher generation. A taker T put its claim, then (step 3) listed generation
g. Both wrote, then read: by linearizability at least one read sees the other's write, so either T sees the
renewal (T loses) or the holder sees T's claim (the holder stops). What remains is a holder that silently stopped
renewing (partition, stall): **self-fencing** cancels its task (without recording a final state) once no renewal
succeeded within ``lease_seconds / 2`` of the *start* of the last successful one. A taker saw that renewal no earlier
than it started, and waits ``lease_seconds`` after seeing it, so the old holder stopped ``lease_seconds / 2`` before
(the margin covers clock-rate differences and the task unwinding). Every ``JobContext`` write also checks the
lease (a clock read, no I/O), so a task stalled past its fence cannot write before the fence timer fires.

**Creator's fast path.** The process that creates a job claims generation 1 right after creating the status
object; if creating plus the claim took at most W it wins without the D wait: anyone else must first observe the
job unclaimed for ``lease_seconds`` (> W), and by then the creator's claim is visible to their step 1.

Guarantees and assumptions are written out for operators in ``docs/jobs.md``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from prometheus_client import Counter

from emotune.errors import NotFound
from emotune.logging import get_logger
from emotune.store.base import ArtifactStore

log = get_logger(__name__)
T = TypeVar("T")

_CLAIM = re.compile(r"^(\d{10})-([0-9a-f]{8,64})\.json$")
CANCEL_MARKER = "cancel"

LEASE_TAKEOVERS = Counter(
    "emotune_job_lease_takeovers_total", "jobs this process adopted from another (or a dead) owner", ["kind"])
LEASES_LOST = Counter(
    "emotune_job_leases_lost_total", "job leases this process gave up while running the job", ["kind", "reason"])


class LeaseLost(Exception):
    """Raised by a job's writes once this process no longer holds the job's lease (the task is being stopped)."""


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def lease_prefix(jobs_prefix: str, job_id: str) -> str:
    return f"{jobs_prefix.rstrip('/')}/leases/{job_id}/"


# (key, renewals, released) of every claim of one generation, sorted by key: what a watcher compares.
Entries = tuple[tuple[str, int, bool], ...]


@dataclass(frozen=True)
class View:
    """One read of a job's claims: the highest generation and the entries of the generations that were asked for."""

    generation: int  # 0: no claim at all
    keys: tuple[str, ...]  # every claim key, any generation
    entries: dict[int, Entries]
    cancel: bool = False

    @property
    def snapshot(self) -> tuple[int, Entries]:
        return self.generation, self.entries.get(self.generation, ())

    @property
    def released(self) -> bool:
        return any(released for _key, _renewals, released in self.entries.get(self.generation, ()))

    def keys_of(self, generation: int) -> list[str]:
        return sorted(k for k in self.keys if _generation(k) == generation)


@dataclass
class Observation:
    """What a watcher saw of a job's lease and since when (its own monotonic clock)."""

    snapshot: tuple[int, Entries]
    released: bool
    since: float

    def expires_at(self, lease_seconds: float) -> float:
        return self.since if self.released else self.since + lease_seconds


@dataclass
class Held:
    """A lease this process holds."""

    job_id: str
    generation: int
    key: str
    content: dict[str, Any]
    last_ok: float  # monotonic start of the last successful renewal (or of the winning claim's put)
    fence_after: float
    lost: str = ""  # why the lease was given up ("" while held)
    finished: bool = False  # released or deleted: no renewal may write any more
    lock: threading.Lock = field(default_factory=threading.Lock)
    # CasLeases: the status object as last written or read by this holder, and its etag (If-Match).
    etag: str = ""
    doc: dict[str, Any] | None = None

    def valid(self) -> bool:
        return not self.lost and not self.finished and time.monotonic() - self.last_ok < self.fence_after

    def check(self) -> None:
        if not self.valid():
            raise LeaseLost(f"job {self.job_id}: this process no longer holds its lease ({self.lost or 'expired'})")


def _generation(key: str) -> int:
    match = _CLAIM.match(key.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else -1


class Leases:
    """The lease protocol for the jobs under one JobStore prefix; blocking I/O runs on a small private pool (so
    renewals never queue behind handlers' ``asyncio.to_thread`` work)."""

    def __init__(self, store: ArtifactStore, prefix: str = "jobs", *, lease_seconds: float = 15.0,
                 owner: str | None = None, kind: str = "") -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be > 0")
        self.store, self.prefix, self.kind = store, prefix.rstrip("/"), kind
        self.owner = owner or default_owner()
        self.lease_seconds = float(lease_seconds)
        self.write_bound = min(5.0, self.lease_seconds / 4)  # W
        self.settle = 1.2 * self.write_bound + 0.05  # D
        self.renew_every = self.lease_seconds / 4
        self.fence_after = self.lease_seconds / 2
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lease")

    async def io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ reads
    def prefix_of(self, job_id: str) -> str:
        return lease_prefix(self.prefix, job_id)

    def read(self, job_id: str, generations: Iterable[int] | None = None) -> View:
        """List the job's claims; read the contents of the highest generation (or of ``generations``)."""
        prefix = self.prefix_of(job_id)
        keys, cancel = [], False
        for info in self.store.list(prefix):
            name = info.key[len(prefix):]
            if name == CANCEL_MARKER:
                cancel = True
            elif _CLAIM.match(name):
                keys.append(info.key)
        top = max((_generation(k) for k in keys), default=0)
        wanted = {top} if generations is None else set(generations)
        entries: dict[int, Entries] = {}
        for gen in wanted:
            found = []
            for key in sorted(k for k in keys if _generation(k) == gen):
                try:
                    content = json.loads(self.store.get_bytes(key))
                except NotFound:  # a loser deleted its claim meanwhile
                    continue
                found.append((key, int(content.get("renewals", 0)), bool(content.get("released", False))))
            entries[gen] = tuple(found)
        return View(top, tuple(sorted(keys)), entries, cancel)

    def observe(self, previous: Observation | None, view: View) -> Observation:
        """Fold a fresh read into what was seen before (``since`` moves only when something changed)."""
        now = time.monotonic()
        if previous is not None and previous.snapshot == view.snapshot:
            return previous
        return Observation(view.snapshot, view.released, now)

    def expired(self, observation: Observation) -> bool:
        return time.monotonic() >= observation.expires_at(self.lease_seconds)

    # ------------------------------------------------------------------ claim
    def _put(self, held: Held) -> None:
        held.content["time"] = datetime.now(UTC).isoformat()
        self.store.put_text(held.key, json.dumps(held.content), "application/json")

    async def claim(self, job_id: str, expected: tuple[int, Entries], *,
                    created_at: float | None = None) -> Held | None:
        """Try to take generation ``expected[0] + 1`` of a lease observed expired at ``expected``.

        ``created_at``: the monotonic time before this process created the job (the creator's fast path).
        """
        generation = expected[0] + 1
        token = uuid.uuid4().hex[:16]
        key = f"{self.prefix_of(job_id)}{generation:010d}-{token}.json"
        held = Held(job_id, generation, key, {"owner": self.owner, "generation": generation, "token": token,
                                              "renewals": 0, "released": False}, 0.0, self.fence_after)
        started = time.monotonic()
        view = await self.io(self.read, job_id)
        if view.snapshot != expected and not (view.generation == expected[0] and view.released):
            return None  # renewed, released-and-retaken, or claimed meanwhile
        put_started = time.monotonic()
        try:
            await self.io(self._put, held)
        except asyncio.CancelledError:
            self._pool.submit(self.store.delete, key)
            raise
        took = time.monotonic() - (created_at if created_at is not None else started)
        if created_at is not None and took <= self.write_bound:
            held.last_ok = put_started
            return held
        if time.monotonic() - started > self.write_bound:
            log.info("lease claim too slow; withdrawn", job_id=job_id, generation=generation,
                     seconds=round(time.monotonic() - started, 3), bound=self.write_bound)
            await self.io(self.store.delete, key)
            return None
        try:
            await asyncio.sleep(self.settle)
            # Rewrite the claim before the final list: the fence then counts from here, not from the first put
            # (D ago). Fischer's argument needs only that the final list starts D after the first put returned.
            refreshed = time.monotonic()
            held.content["renewals"] = 1
            await self.io(self._put, held)
            final = await self.io(self.read, job_id, [expected[0]] if expected[0] else [])
        except asyncio.CancelledError:
            self._pool.submit(self.store.delete, key)
            raise
        before = final.entries.get(expected[0], ())
        previous_released = any(r for _k, _n, r in before)
        won = (final.generation == generation and final.keys_of(generation)[:1] == [key]
               and (expected[0] == 0 or before == expected[1] or previous_released))
        if not won:
            await self.io(self.store.delete, key)
            return None
        held.last_ok = refreshed
        return held

    # ------------------------------------------------------------------ holding
    def renew(self, held: Held) -> tuple[str, float, bool]:
        """Rewrite our claim, then list: ("ok" | "lost" | "stopped", start, cancel marker seen); "ok" moves
        ``held.last_ok`` to the start of this renewal."""
        started = time.monotonic()
        with held.lock:
            if held.finished or held.lost:
                return "stopped", started, False
            held.content["renewals"] = int(held.content["renewals"]) + 1
            self._put(held)
        view = self.read(held.job_id, generations=())
        if view.generation > held.generation:
            return "lost", started, view.cancel
        if not held.lost:  # lost is final: a renewal that completes after the fence does not revive the lease
            held.last_ok = max(held.last_ok, started)
        return "ok", started, view.cancel

    def release(self, held: Held) -> None:
        """Mark our claim released (graceful stop): the next process takes the job over at once."""
        with held.lock:
            if held.finished:
                return
            held.finished = True
            held.content["released"] = True
            self._put(held)

    def drop(self, held: Held) -> None:
        """The job is final: stop renewing and delete its lease objects (claims and cancel marker)."""
        with held.lock:
            held.finished = True
            self.store.delete_prefix(self.prefix_of(held.job_id))

    def mark_cancel(self, job_id: str) -> None:
        self.store.put_text(self.prefix_of(job_id) + CANCEL_MARKER, datetime.now(UTC).isoformat())


class CasLeases(Leases):
    """The lease as a field of the job's status object, claimed and renewed with compare-and-swap.

    ``jobs`` is the :class:`emotune.jobs.store.JobStore` whose status objects hold the leases; a claim registers the
    lease with it (``jobs.own``), so the owner's status writes are ``If-Match`` on the etag of its own last write
    (a renewal included) and fail once another process claimed the job.

    Snapshot of a lease: ``(generation, ((token, renewals, released),))`` (``(0, ())`` unclaimed); a watcher calls
    it expired once unchanged for ``lease_seconds`` by its own clock, or at once when released, as in the timed
    protocol. A claim reads the status, checks that the lease is still that snapshot, and writes generation + 1
    with ``If-Match`` on the etag it read: of concurrent claimants exactly one is accepted, and a renewal that
    landed in between makes every claim fail. A renewal is an ``If-Match`` write of our own last etag: refused
    (412) means another process claimed the job, and the task is stopped.
    """

    def __init__(self, jobs: Any, *, lease_seconds: float = 15.0, owner: str | None = None, kind: str = "") -> None:
        super().__init__(jobs.store, jobs.prefix, lease_seconds=lease_seconds, owner=owner, kind=kind)
        self.jobs = jobs

    def _key(self, job_id: str) -> str:
        return str(self.jobs._status_key(job_id))

    @staticmethod
    def _snapshot(lease: dict[str, Any]) -> tuple[int, Entries]:
        if not lease:
            return 0, ()
        return int(lease["generation"]), ((str(lease["token"]), int(lease.get("renewals", 0)),
                                           bool(lease.get("released", False))),)

    def read(self, job_id: str, generations: Iterable[int] | None = None) -> View:
        raw, _etag = self.store.get_with_etag(self._key(job_id))
        generation, entries = self._snapshot(json.loads(raw).get("lease") or {})
        return View(generation, (), {generation: entries})

    async def claim(self, job_id: str, expected: tuple[int, Entries], *,
                    created_at: float | None = None) -> Held | None:
        return await self.io(self._claim, job_id, expected)

    def _claim(self, job_id: str, expected: tuple[int, Entries]) -> Held | None:
        from emotune.store.base import ConditionFailed

        started = time.monotonic()
        key = self._key(job_id)
        raw, etag = self.store.get_with_etag(key)
        doc = json.loads(raw)
        current = self._snapshot(doc.get("lease") or {})
        released = any(r for _t, _n, r in current[1])
        if current != expected and not (current[0] == expected[0] and released):
            return None  # renewed, released-and-retaken, or claimed meanwhile
        generation = expected[0] + 1
        token = uuid.uuid4().hex[:16]
        lease = {"owner": self.owner, "generation": generation, "token": token, "renewals": 0, "released": False,
                 "time": datetime.now(UTC).isoformat()}
        doc = {**doc, "lease": lease}
        try:
            new_etag = self.store.put_if_match(key, _dump(doc), etag)
        except ConditionFailed:
            return None
        held = Held(job_id, generation, key, lease, started, self.fence_after, etag=new_etag, doc=doc)
        self.jobs.own(held)
        return held

    def _write_lease(self, held: Held, **changes: Any) -> None:
        """``If-Match`` write of our lease with ``changes``; raises ConditionFailed when the job was claimed."""
        assert held.doc is not None
        lease = {**held.content, **changes, "time": datetime.now(UTC).isoformat()}
        doc = {**held.doc, "lease": lease}
        held.etag = self.store.put_if_match(held.key, _dump(doc), held.etag)
        held.doc, held.content = doc, lease

    def renew(self, held: Held) -> tuple[str, float, bool]:
        from emotune.store.base import ConditionFailed

        started = time.monotonic()
        with held.lock:
            if held.finished or held.lost:
                return "stopped", started, False
            try:
                self._write_lease(held, renewals=int(held.content["renewals"]) + 1)
            except ConditionFailed:
                return "lost", started, False
        cancel = self.store.exists(self.prefix_of(held.job_id) + CANCEL_MARKER)
        if not held.lost:
            held.last_ok = max(held.last_ok, started)
        return "ok", started, cancel

    def release(self, held: Held) -> None:
        from emotune.store.base import ConditionFailed

        with held.lock:
            if held.finished:
                return
            held.finished = True
            if held.lost:
                return
            try:
                self._write_lease(held, released=True)
            except ConditionFailed:  # taken meanwhile: nothing of ours to release
                pass

    def drop(self, held: Held) -> None:
        with held.lock:
            held.finished = True
            self.store.delete_prefix(self.prefix_of(held.job_id))  # the cancel marker; the lease is in the status
        self.jobs.disown(held)


def leases_for(jobs: Any, *, lease_seconds: float = 15.0, owner: str | None = None, kind: str = "") -> Leases:
    """:class:`CasLeases` where the job store writes with compare-and-swap, else the timed :class:`Leases`."""
    if getattr(jobs, "cas", False):
        return CasLeases(jobs, lease_seconds=lease_seconds, owner=owner, kind=kind)
    return Leases(jobs.store, jobs.prefix, lease_seconds=lease_seconds, owner=owner, kind=kind)


def _dump(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
