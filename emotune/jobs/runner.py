"""Runs a service's jobs as asyncio tasks on top of the JobStore, one owner per job across processes.

The runner owns state transitions (queued -> running -> succeeded/failed/cancelled), turns a handler's exception
into a failed job with the error in the events, honours cancellation requests, and takes over jobs whose owner
stopped (handlers are written to be resumable: they read ``ctx.checkpoint`` and save progress with
``ctx.save_checkpoint``).

Every job is run under a lease (``emotune.jobs.leases``): ``submit`` claims the new job before scheduling it; ``start``
adopts jobs whose lease expired or was released and keeps scanning for more while a slot is free; a lost or
unrenewable lease stops the job's task without recording a final state. ``shutdown`` stops tasks without
finishing their jobs and releases their leases, so the next process (or another replica) takes them over at once.
Only the lease holder writes a job's status.

Every service runs its jobs here, so its ``/metrics`` has the job metrics below, labelled by job ``kind``.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import copy
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from emotune.errors import Cancelled, EmotuneError
from emotune.jobs.leases import (
    LEASE_TAKEOVERS,
    LEASES_LOST,
    Held,
    LeaseLost,
    Observation,
    default_owner,
    leases_for,
)
from emotune.jobs.store import JobRecord, JobState, JobStore
from emotune.logging import get_logger
from emotune.metrics import JOB_RUN_SECONDS, JOBS_FINISHED, JOBS_RUNNING

log = get_logger(__name__)

#: How long ``JobRunner.cancel`` waits for the handler to unwind before answering with the current record.
CANCEL_WAIT_SECONDS = 10.0


class _OrderedWriter:
    """Runs a job's blocking store writes one at a time, in submission order, on a thread of its own.

    The thread exists only while there is work (a new one starts with the next write), so a context that is
    never closed leaks nothing. After a write fails, the ones queued behind it are not run: they fail with the
    same error (an event log with a hole in the middle is worse than one that stops).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: collections.deque[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = (
            collections.deque())
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def on_writer_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._lock:
            self._queue.append((fn, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
        return future

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._thread = None
                    return
                fn, future = self._queue.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            if self.error is not None:
                future.set_exception(self.error)
                continue
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits, and to the next write
                self.error = exc
                future.set_exception(exc)
            else:
                future.set_result(result)

    def barrier(self) -> concurrent.futures.Future[Any]:
        """Resolved once everything submitted before it has run."""
        return self.submit(lambda: None)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class JobContext:
    """What a job handler sees: its spec, an event emitter, progress with ETA, checkpoint, and cancellation.

    **Writes never block the event loop.** ``emit``, ``progress`` and ``save_checkpoint`` go to the job's own
    writer thread, which writes them to the store one at a time in the order they were made (the event log
    keeps the handler's order). Called on the event loop they return at once; called from a worker thread
    (``asyncio.to_thread``) they wait until written, as before. A write that failed is raised by the next
    ``emit`` / ``save_checkpoint`` / ``flush``, and the runner flushes before it records the job's final state,
    so the terminal event is always the last. ``await ctx.flush()`` where something outside the job must only
    happen once what was written before is stored (e.g. a checkpoint naming a sub-job's output prefix before
    the sub-job is started). ``run_in_order`` puts any other blocking store work (a checkpoint upload) in the
    same queue.
    """

    def __init__(self, jobs: JobStore, record: JobRecord, resumed: bool,
                 lease_check: Callable[[], None] | None = None, *, generation: int = 1) -> None:
        self.jobs, self.job_id, self.spec, self.resumed = jobs, record.job_id, record.spec, resumed
        #: This owner's lease generation (1 for the creator, +1 per takeover): see :meth:`outputs`.
        self.generation = generation
        self.checkpoint: dict[str, Any] = dict(record.checkpoint)
        self._rate_origins: dict[Any, tuple[float, int]] = {}  # per phase (the event's ``stage``)
        self._last_progress = float("-inf")
        # Raises LeaseLost once this process no longer holds the job (a clock read, no I/O); checked when a write
        # is made and again right before the writer thread performs it.
        self._lease_check = lease_check or (lambda: None)
        self._writer = _OrderedWriter(f"job-writes-{record.job_id}")

    # ------------------------------------------------------------------ ordered writes
    def run_in_order(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Run blocking ``fn`` on the job's writer thread after every write made before, before every write made
        after; returns its future. Off the event loop it waits for the result (and raises what ``fn`` raised).
        Inside such a function ``emit`` and ``save_checkpoint`` write at once (they are on the writer thread)."""
        self._lease_check()
        self._raise_failed()
        if self._writer.on_writer_thread():
            done: concurrent.futures.Future[Any] = concurrent.futures.Future()
            done.set_result(fn(*args, **kwargs))
            return done
        future = self._writer.submit(lambda: fn(*args, **kwargs))
        if not _on_event_loop():
            future.result()
        return future

    def _write(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        def checked() -> Any:
            self._lease_check()  # the lease may have been lost while this write waited its turn
            return fn(*args, **kwargs)

        self.run_in_order(checked)

    def _raise_failed(self) -> None:
        if self._writer.error is not None:
            raise self._writer.error

    async def flush(self) -> None:
        """Wait until every write made so far is stored; raise the first that failed."""
        await asyncio.wrap_future(self._writer.barrier())
        self._raise_failed()

    async def settle(self) -> None:
        """Wait until every write made so far has been tried (the runner, before it records a final state)."""
        await asyncio.shield(asyncio.wrap_future(self._writer.barrier()))

    # ------------------------------------------------------------------ the handler's API
    def emit(self, type: str, message: str = "", **data: Any) -> None:
        self._write(self.jobs.append, self.job_id, type, message, **copy.deepcopy(data))

    def progress(self, done: int, total: int, message: str = "", *, every_s: float = 0.0, **data: Any) -> None:
        """A progress event with rate and ETA measured from the first report of this process for this phase
        (``stage`` in ``data``: a job that embeds, then asks a judge, counts each from zero).

        Measuring from the first report (not from zero) keeps the ETA honest after a resume, when ``done``
        already includes work a previous process did. ``every_s``: report at most that often (the last report,
        ``done == total``, always goes out), for callers that report per item: every event is a stored object
        and a line in the job's event list.
        """
        now = time.monotonic()
        phase = data.get("stage")
        if phase not in self._rate_origins:
            self._rate_origins[phase] = (now, done)
        elif done < total and now - self._last_progress < every_s:
            return
        self._last_progress = now
        started, done_at_start = self._rate_origins[phase]
        elapsed, advanced = now - started, done - done_at_start
        rate = advanced / elapsed if elapsed > 0 and advanced > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else None
        self.emit("progress", message or f"{done}/{total}", done=done, total=total,
                  rate_per_s=round(rate, 3), eta_s=None if eta is None else round(eta, 1), **data)

    def save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Persist the handler's resumable state with the job (read back as ``ctx.checkpoint`` after a restart)."""
        self.checkpoint = dict(checkpoint)
        # A copy as of now: the handler goes on changing its dicts while the write waits its turn.
        self._write(self.jobs.update, self.job_id, checkpoint=copy.deepcopy(self.checkpoint))

    def outputs(self, root: str) -> str:
        """Where this owner writes the job's outputs under ``root``: ``<root>/<job id>/<job id>-g<generation>``
        (:func:`owner_outputs`). Each owner of a job has its own keys, so an old owner's late write after a takeover
        never lands on the new owner's; the job's result names the keys of the owner that recorded it."""
        return owner_outputs(root, self.job_id, self.generation)

    def owned(self, prefix: str) -> str:
        """Where this owner writes outputs it was asked to write under ``prefix`` (a stage service's sub-job,
        given its ``output_prefix``): :func:`owner_prefix` of this owner's generation."""
        return owner_prefix(prefix, self.generation)

    def earlier_owned(self, prefix: str) -> list[str]:
        """Where this job's earlier owners wrote under ``prefix``, newest first (finished work a new owner may
        reuse: checkpoints, complete outputs); empty for the creator."""
        return [owner_prefix(prefix, generation) for generation in range(self.generation - 1, 0, -1)]

    def cancel_requested(self) -> bool:
        return self.jobs.cancel_requested(self.job_id)

    def raise_if_cancelled(self) -> None:
        if self.cancel_requested():
            raise Cancelled(f"job {self.job_id} cancelled")


Handler = Callable[[JobContext], Awaitable[dict[str, Any]]]


def owner_outputs(root: str, job_id: str, generation: int) -> str:
    """The key prefix of the outputs that generation ``generation`` of job ``job_id``'s owners writes under
    ``root``: ``<root>/<job id>/<job id>-g<generation>``. The job's folder holds every owner's outputs (the gateway
    finds a model's job as the second path segment of ``models/<job id>/...``); the last segment still names the
    job, as services that name a product after it expect (the trainer names a model after it)."""
    return f"{root.rstrip('/')}/{job_id}/{job_id}-g{generation}"


def outputs_owner(key: str) -> tuple[str, int] | None:
    """The job and owner generation whose :func:`owner_outputs` hold ``key`` (``<root>/<job id>/<job id>-g<N>/...``:
    ``(job id, N)``), or None for a key of another layout (a job's from before that layout, an operator's)."""
    parts = key.split("/")
    if len(parts) < 3 or not parts[2].startswith(f"{parts[1]}-g"):
        return None
    generation = parts[2][len(parts[1]) + 2:]
    return (parts[1], int(generation)) if generation.isdigit() else None


def owner_prefix(prefix: str, generation: int) -> str:
    """Where generation ``generation`` of a job's owners writes the outputs it was asked to write under ``prefix``
    (a stage service's ``output_prefix``): ``prefix`` itself for the creator (generation 1, the keys such a job
    always wrote, which the CLI and the docs name) and ``<prefix>/g<generation>`` for each owner after a takeover,
    so an old owner's late upload never lands on the keys of the owner that took the job over. The job's result
    names the keys its recording owner wrote; readers follow the result."""
    prefix = prefix.rstrip("/")
    return prefix if generation <= 1 else f"{prefix}/g{generation}"


class JobRunner:
    """Runs the jobs of one ``kind``; see the module docstring for ownership (leases) and its public methods."""

    def __init__(self, jobs: JobStore, kind: str, handler: Handler, max_concurrent: int = 1, *,
                 lease_seconds: float = 15.0, owner: str | None = None,
                 events_retention_days: float | None = None, share_queue: bool = False) -> None:
        self.jobs, self.kind, self.handler = jobs, kind, handler
        #: With the adopt loop running (``start``), a job submitted while every slot here is busy is released at
        #: once instead of waiting for this process's slot: whichever replica has a free slot first adopts it
        #: (several trainers, one per GPU node).
        self.share_queue = share_queue
        if events_retention_days is None:
            from emotune.settings import Settings

            events_retention_days = Settings().job_events_retention_days
        #: Finished jobs' events older than this are deleted by a sweep every ``expire_every`` s (0: kept).
        self.events_retention = timedelta(days=events_retention_days)
        self.expire_every = 3600.0
        self._expirer: asyncio.Task[None] | None = None
        self.max_concurrent = max_concurrent
        self.owner = owner or default_owner()
        self.leases = leases_for(jobs, lease_seconds=lease_seconds, owner=self.owner, kind=kind)
        #: How often ``start``'s loop looks for jobs to adopt (while a slot is free).
        self.scan_every = self.leases.lease_seconds / 4
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._held: dict[str, Held] = {}
        self._keepers: dict[str, threading.Event] = {}  # set: stop renewing
        self._fences: dict[str, asyncio.TimerHandle] = {}
        self._observed: dict[str, Observation] = {}
        self._settled: set[str] = set()  # job ids known final or of another kind: never read again
        self._recording: set[str] = set()  # handler done, final state and lease clean-up under way
        self._pending_io: set[asyncio.Future[Any]] = set()
        self._scanner: asyncio.Task[None] | None = None
        self._scan_lock = asyncio.Lock()
        self._shutting_down = False

    @property
    def lease_seconds(self) -> float:
        return self.leases.lease_seconds

    # ------------------------------------------------------------------ public API
    async def submit(self, spec: dict[str, Any], job_id: str | None = None) -> JobRecord:
        """Create the job and claim its lease (the creator owns it), then schedule it here."""
        created_at = time.monotonic()
        record = await asyncio.to_thread(self.jobs.create, self.kind, spec, job_id)
        held = await self.leases.claim(record.job_id, (0, ()), created_at=created_at)
        if held is None:  # only when creating took longer than a lease: another process adopted it first
            log.warning("new job was claimed by another process", job_id=record.job_id, owner=self.owner)
            return record
        if self.share_queue and self._scanner is not None and len(self._tasks) >= self.max_concurrent:
            # released: adoptable at once by any replica's adopt loop (this one's included, once a slot frees)
            await self.leases.io(self.leases.release, held)
            self.jobs.disown(held)  # status writes of this job are the adopter's
            log.info("job queued for the first free replica", job_id=record.job_id, owner=self.owner)
            return record
        self._schedule(record, resumed=False, held=held)
        return record

    async def start(self) -> list[str]:
        """Adopt what is claimable now (``resume_unfinished``), then keep adopting in the background: every
        ``lease_seconds / 4`` while a slot is free, jobs of this kind whose owner released or stopped renewing."""
        adopted = await self.resume_unfinished()
        if self._scanner is None and not self._shutting_down:
            self._scanner = asyncio.create_task(self._adopt_loop(), name=f"adopt-{self.kind}")
        if self._expirer is None and self.events_retention and not self._shutting_down:
            self._expirer = asyncio.create_task(self._expire_loop(), name=f"expire-{self.kind}")
        return adopted

    async def _expire_loop(self) -> None:
        """Every ``expire_every`` s, delete the events of this kind's jobs finished over the retention ago. Every
        replica sweeps (deleting is idempotent); a sweep lists the statuses of this kind, not their events."""
        while not self._shutting_down:
            try:
                expired = await asyncio.to_thread(self.jobs.expire_events, self.kind, self.events_retention)
                if expired:
                    log.info("expired finished jobs' events", kind=self.kind, jobs=expired)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store is unreachable for a moment: next period
                log.warning("expiring job events failed", kind=self.kind, error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.expire_every)

    async def resume_unfinished(self) -> list[str]:
        """Adopt unfinished jobs of this kind that are claimable now, oldest first, up to the free slots.

        Claimable now: the lease was released (graceful shutdown) or this runner has already watched it unchanged
        for ``lease_seconds``. A job whose owner was killed is adopted by ``start``'s loop once that has passed.
        Returns the ids adopted by this call.
        """
        async with self._scan_lock:
            return await self._scan()

    async def cancel(self, job_id: str) -> JobRecord:
        """Request cancellation and wait (bounded) until the job is final.

        Run here: stop the task. Run elsewhere: its owner sees the marker at its next lease renewal and records
        the cancellation. Nobody runs it (its lease released or expired): claim the lease, then record it here.
        """
        record = await asyncio.to_thread(self.jobs.request_cancel, job_id)
        if record.state.terminal:
            return record
        task = self._tasks.get(job_id)
        if task is not None:
            if job_id not in self._recording:  # its handler has ended: its own final state is being written
                task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_WAIT_SECONDS)
            return await asyncio.to_thread(self.jobs.get, job_id)
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        observed = self._observed.get(job_id)
        while True:
            current = await asyncio.to_thread(self.jobs.get, job_id)
            if current.state.terminal or job_id in self._tasks:
                break
            observed = self.leases.observe(observed, await self.leases.io(self.leases.read, job_id))
            if self.leases.expired(observed):
                held = await self.leases.claim(job_id, observed.snapshot)
                if held is not None:
                    final = await self._record(held, job_id, JobState.CANCELLED, "cancelled")
                    await self._let_go(held, final)
                    break
                observed = None
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(0.2, self.scan_every))
        if job_id in self._tasks:  # adopted by this runner's own loop meanwhile
            await asyncio.wait({self._tasks[job_id]}, timeout=max(0.0, deadline - time.monotonic()))
        return await asyncio.to_thread(self.jobs.get, job_id)

    async def wait(self, job_id: str) -> None:
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        await self._drain_io()

    async def shutdown(self) -> None:
        """Stop the adopt loop and the running tasks without marking jobs terminal, and release their leases:
        the next process (or another replica) takes them over at once. A job whose handler has returned is let
        finish recording (a few store writes): cut short, its final state could be written with its lease left
        behind."""
        self._shutting_down = True
        for loop in (self._scanner, self._expirer):
            if loop is not None:
                loop.cancel()
                await asyncio.gather(loop, return_exceptions=True)
        tasks = list(self._tasks.values())
        for job_id, task in list(self._tasks.items()):
            if job_id not in self._recording:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._drain_io()

    # ------------------------------------------------------------------ adopting
    async def _adopt_loop(self) -> None:
        while not self._shutting_down:
            delay = self.scan_every
            if self._observed:  # wake when the first watched lease expires, not a scan period later
                soonest = min(o.expires_at(self.lease_seconds) for o in self._observed.values())
                delay = min(delay, max(self.scan_every / 4, soonest - time.monotonic() + 0.01))
            await asyncio.sleep(delay)
            if self.max_concurrent - len(self._tasks) <= 0:
                continue  # busy: leave queued work to an idle replica
            try:
                async with self._scan_lock:
                    await self._scan()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store is unreachable for a moment: next period
                log.warning("scanning for jobs to adopt failed", kind=self.kind,
                            error=f"{type(exc).__name__}: {exc}")

    def _unfinished(self, skip: set[str]) -> tuple[list[tuple[JobRecord, Any]], set[str]]:
        """Unfinished jobs of this kind not run here, each with a read of its lease; and ids now known settled."""
        status_prefix = f"{self.jobs.prefix}/status/"
        found, settled = [], set()
        for info in list(self.jobs.store.list(status_prefix)):
            job_id = info.key[len(status_prefix):].removesuffix(".json")
            if job_id in skip or job_id in self._settled:
                continue
            try:
                record = self.jobs.get(job_id)
            except EmotuneError:  # deleted meanwhile
                continue
            if record.kind != self.kind or record.state.terminal:
                settled.add(job_id)
                continue
            found.append((record, self.leases.read(job_id)))
        return found, settled

    async def _scan(self) -> list[str]:
        found, settled = await self.leases.io(self._unfinished, set(self._tasks))
        self._settled |= settled
        candidates = []
        for record, view in found:
            observed = self.leases.observe(self._observed.get(record.job_id), view)
            self._observed[record.job_id] = observed
            if self.leases.expired(observed) and record.job_id not in self._tasks:
                candidates.append((record, observed))
        watched = {record.job_id for record, _view in found}
        for job_id in list(self._observed):
            if job_id not in watched:
                del self._observed[job_id]
        free = self.max_concurrent - len(self._tasks)
        if free <= 0 or self._shutting_down or not candidates:
            return []
        chosen = sorted(candidates, key=lambda c: c[0].created_at)[:free]  # oldest first, as submitted
        claims = await asyncio.gather(*(self.leases.claim(r.job_id, o.snapshot) for r, o in chosen),
                                      return_exceptions=True)
        adopted = []
        for (record, observed), held in zip(chosen, claims, strict=True):
            if isinstance(held, BaseException):
                log.warning("claiming a job failed", job_id=record.job_id, error=f"{type(held).__name__}: {held}")
                continue
            if held is None or record.job_id in self._tasks:
                continue
            self._observed.pop(record.job_id, None)
            if self._shutting_down:
                await self._let_go(held, final=False)
                continue
            if held.generation > 1:
                LEASE_TAKEOVERS.labels(self.kind).inc()
            log.info("adopting job", job_id=record.job_id, state=record.state.value, generation=held.generation,
                     previous_owner="released" if observed.released else "expired", owner=self.owner)
            self._schedule(record, resumed=True, held=held)
            adopted.append(record.job_id)
        return adopted

    # ------------------------------------------------------------------ holding
    def _schedule(self, record: JobRecord, resumed: bool, held: Held) -> None:
        job_id = record.job_id
        self._held[job_id] = held
        task = asyncio.create_task(self._run(record, resumed, held), name=f"job-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _t, job_id=job_id, held=held: self._task_done(job_id, held))
        stop = threading.Event()
        keeper = threading.Thread(target=self._keep, args=(held, task, stop, asyncio.get_running_loop()),
                                  name=f"lease-{job_id}", daemon=True)
        self._keepers[job_id] = stop
        keeper.start()
        self._arm_fence(held, task)

    def _task_done(self, job_id: str, held: Held) -> None:
        self._tasks.pop(job_id, None)
        if self._held.get(job_id) is held:  # cancelled before it ever ran: _run's own clean-up did not happen
            self._stop_keeping(held)
            if self._shutting_down:
                self._track_io(self.leases.release, held)

    def _stop_keeping(self, held: Held) -> None:
        if self._held.get(held.job_id) is held:
            del self._held[held.job_id]
        keeper = self._keepers.pop(held.job_id, None)
        if keeper is not None:
            keeper.set()
        fence = self._fences.pop(held.job_id, None)
        if fence is not None:
            fence.cancel()

    def _track_io(self, fn: Callable[[Held], None], held: Held) -> None:
        future = asyncio.ensure_future(self.leases.io(fn, held))
        self._pending_io.add(future)
        future.add_done_callback(self._pending_io.discard)

    async def _drain_io(self) -> None:
        if self._pending_io:
            await asyncio.gather(*list(self._pending_io), return_exceptions=True)

    async def _let_go(self, held: Held, final: bool) -> None:
        """Stop renewing; delete the lease objects of a final job, release a job stopped by ``shutdown``. A job
        stopped because its lease was lost keeps its claim: others wait the full lease before taking it."""
        self._stop_keeping(held)
        try:
            if final:
                await self.leases.io(self.leases.drop, held)
            elif self._shutting_down and not held.lost:
                await self.leases.io(self.leases.release, held)
            else:
                held.finished = True
        except Exception as exc:  # noqa: BLE001 - best effort: without it others wait one lease
            log.warning("lease not released", job_id=held.job_id, error=f"{type(exc).__name__}: {exc}")

    def _keep(self, held: Held, task: asyncio.Task[None], stop: threading.Event,
              loop: asyncio.AbstractEventLoop) -> None:
        """Renew ``held`` every ``lease_seconds / 4`` (sooner after a failure), in a thread of its own so that a
        handler blocking the event loop for a while does not starve its own lease; stop the task when it is lost.
        The renewal moves ``held.last_ok`` itself; the fence timer on the loop reads it."""
        delay = self.leases.renew_every - (time.monotonic() - held.last_ok)
        cancel_seen = False
        while not stop.wait(max(0.0, delay)):
            try:
                outcome, started, cancel = self.leases.renew(held)
            except Exception as exc:  # noqa: BLE001 - retried; the fence stops the job if it keeps failing
                log.warning("lease renewal failed", job_id=held.job_id, error=f"{type(exc).__name__}: {exc}")
                delay = self.leases.renew_every / 4
                continue
            if outcome == "stopped" or held.lost:
                return
            if outcome == "lost":
                loop.call_soon_threadsafe(self._lose, held, task, "taken", "another process claimed the job")
                return
            if cancel and not cancel_seen:  # another process asked to cancel: the normal cancel path records it
                cancel_seen = True
                loop.call_soon_threadsafe(task.cancel)
            delay = self.leases.renew_every - (time.monotonic() - started)

    def _arm_fence(self, held: Held, task: asyncio.Task[None]) -> None:
        old = self._fences.pop(held.job_id, None)
        if old is not None:
            old.cancel()
        delay = held.last_ok + held.fence_after - time.monotonic()
        self._fences[held.job_id] = asyncio.get_running_loop().call_later(
            max(0.0, delay) + 0.001, self._fence, held, task)

    def _fence(self, held: Held, task: asyncio.Task[None]) -> None:
        if held.lost or held.finished or task.done():
            return
        if held.valid():  # the timer fired a hair early
            self._arm_fence(held, task)
            return
        self._lose(held, task, "fenced", f"no lease renewal succeeded within {held.fence_after:g}s")

    def _lose(self, held: Held, task: asyncio.Task[None], reason: str, why: str) -> None:
        if held.lost:
            return
        held.lost = why
        LEASES_LOST.labels(self.kind, reason).inc()
        log.warning("job lease lost: stopping the job here without recording a final state", job_id=held.job_id,
                    reason=why, owner=self.owner)
        task.cancel()

    # ------------------------------------------------------------------ running
    async def _run(self, record: JobRecord, resumed: bool, held: Held) -> None:
        job_id, final, running_since = record.job_id, False, None
        try:
            async with self._slots:
                held.check()
                current = await asyncio.to_thread(self.jobs.get, job_id)
                if current.state.terminal:  # finished by its previous owner after we looked
                    final = True
                    return
                if current.cancel_requested:
                    raise Cancelled(f"job {job_id} cancelled")
                held.check()
                if current.state != JobState.RUNNING:
                    await asyncio.to_thread(self.jobs.set_state, job_id, JobState.RUNNING)
                else:
                    await asyncio.to_thread(self.jobs.append, job_id, "log", "resumed after restart")
                running_since = time.monotonic()
                JOBS_RUNNING.labels(self.kind).inc()
                ctx = JobContext(self.jobs, current, resumed, held.check, generation=held.generation)
                try:
                    result = await self.handler(ctx)
                    await ctx.flush()  # a failed event write fails the job, as it did when it was written inline
                finally:
                    JOBS_RUNNING.labels(self.kind).dec()
                    self._recording.add(job_id)
                    # Whatever the handler emitted is stored (or failed) before the final state is written.
                    await _settled(ctx)
            final = await self._record(held, job_id, JobState.SUCCEEDED, result=result or {},
                                       running_since=running_since)
        except asyncio.CancelledError:
            if self._shutting_down:
                raise  # leave the job queued/running in the store: the next owner resumes it
            if held.valid():  # a cancel request; otherwise the lease was lost and someone else may own the job
                final = await self._record(held, job_id, JobState.CANCELLED, "cancelled", running_since=running_since)
        except LeaseLost as exc:
            log.warning("job stopped: lease lost", job_id=job_id, reason=str(exc))
        except Cancelled as exc:  # the handler saw the cancel marker
            final = await self._record(held, job_id, JobState.CANCELLED, exc.message, running_since=running_since)
        except EmotuneError as exc:
            final = await self._record(held, job_id, JobState.FAILED, exc.message, running_since=running_since)
        except Exception as exc:
            if held.valid():
                log.exception("job failed", job_id=job_id)
            final = await self._record(held, job_id, JobState.FAILED, f"{type(exc).__name__}: {exc}",
                                       running_since=running_since)
        finally:
            await self._let_go(held, final)
            self._recording.discard(job_id)

    async def _record(self, held: Held, job_id: str, state: JobState, error: str = "",
                      result: dict[str, Any] | None = None, running_since: float | None = None) -> bool:
        """Write a final state if this process still holds the lease; True once the job is final.

        A state written here is counted in the job metrics, with the handler's time when it ran here."""
        if not held.valid():
            log.warning("final state not recorded: this process no longer holds the job", job_id=job_id,
                        state=state.value, reason=held.lost or "lease expired")
            return False
        try:
            if result is not None:
                await asyncio.to_thread(self.jobs.set_state, job_id, state, result=result)
                written = True
            else:
                written = await asyncio.to_thread(self._finish_quietly, job_id, state, error)
                if written is None:  # final already (it finished while being cancelled): not ours to count
                    return True
        except LeaseLost as exc:  # the store refused the write: another process claimed the job meanwhile
            log.warning("final state not recorded: the store refused it", job_id=job_id, state=state.value,
                        reason=str(exc))
            return False
        if written:
            JOBS_FINISHED.labels(self.kind, state.value).inc()
            if running_since is not None:
                JOB_RUN_SECONDS.labels(self.kind, state.value).observe(time.monotonic() - running_since)
        return written

    def _finish_quietly(self, job_id: str, state: JobState, error: str) -> bool | None:
        """Record a final state unless the job already has one (e.g. it finished while being cancelled):
        True when written, None when it was final already, False otherwise."""
        try:
            self.jobs.set_state(job_id, state, error=error)
        except EmotuneError as exc:
            log.warning("final state not recorded", job_id=job_id, state=state.value, reason=exc.message)
            return None if self.jobs.get(job_id).state.terminal else False
        return True


async def _settled(ctx: JobContext) -> None:
    """Wait for the context's queued writes, even when the task is being cancelled (they then end quickly: a
    stopped job's lease check refuses them, or they are a few small writes)."""
    try:
        await ctx.settle()
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.wrap_future(ctx._writer.barrier())
        raise
