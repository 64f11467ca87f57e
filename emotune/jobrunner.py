"""Runs a service's jobs as asyncio tasks on top of the JobStore.

The runner owns state transitions (queued -> running -> succeeded/failed/cancelled), turns a handler's exception
into a failed job with the error in the events, honours cancellation requests, and on start-up resumes jobs a
previous process left queued or running (handlers are written to be resumable: they read ``ctx.checkpoint`` and
save progress with ``ctx.save_checkpoint``). ``shutdown`` stops tasks without finishing their jobs, so the next
process resumes them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from emotune.errors import Cancelled, EmotuneError
from emotune.jobs import JobRecord, JobState, JobStore
from emotune.logging import get_logger

log = get_logger(__name__)

#: How long ``JobRunner.cancel`` waits for the handler to unwind before answering with the current record.
CANCEL_WAIT_SECONDS = 10.0


class JobContext:
    """What a job handler sees: its spec, an event emitter, progress with ETA, checkpoint, and cancellation."""

    def __init__(self, jobs: JobStore, record: JobRecord, resumed: bool) -> None:
        self.jobs, self.job_id, self.spec, self.resumed = jobs, record.job_id, record.spec, resumed
        self.checkpoint: dict[str, Any] = dict(record.checkpoint)
        self._rate_origin: tuple[float, int] | None = None

    def emit(self, type: str, message: str = "", **data: Any) -> None:
        self.jobs.append(self.job_id, type, message, **data)

    def progress(self, done: int, total: int, message: str = "", **data: Any) -> None:
        """A progress event with rate and ETA measured from the first report of this process.

        Measuring from the first report (not from zero) keeps the ETA honest after a resume, when ``done``
        already includes work a previous process did.
        """
        now = time.monotonic()
        if self._rate_origin is None:
            self._rate_origin = (now, done)
        started, done_at_start = self._rate_origin
        elapsed, advanced = now - started, done - done_at_start
        rate = advanced / elapsed if elapsed > 0 and advanced > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else None
        self.emit("progress", message or f"{done}/{total}", done=done, total=total,
                  rate_per_s=round(rate, 3), eta_s=None if eta is None else round(eta, 1), **data)

    def save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Persist the handler's resumable state with the job (read back as ``ctx.checkpoint`` after a restart)."""
        self.checkpoint = dict(checkpoint)
        self.jobs.update(self.job_id, checkpoint=self.checkpoint)

    def cancel_requested(self) -> bool:
        return self.jobs.cancel_requested(self.job_id)

    def raise_if_cancelled(self) -> None:
        if self.cancel_requested():
            raise Cancelled(f"job {self.job_id} cancelled")


Handler = Callable[[JobContext], Awaitable[dict[str, Any]]]


class JobRunner:
    def __init__(self, jobs: JobStore, kind: str, handler: Handler, max_concurrent: int = 1) -> None:
        self.jobs, self.kind, self.handler = jobs, kind, handler
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._shutting_down = False

    async def submit(self, spec: dict[str, Any], job_id: str | None = None) -> JobRecord:
        record = await asyncio.to_thread(self.jobs.create, self.kind, spec, job_id)
        self._schedule(record, resumed=False)
        return record

    async def resume_unfinished(self) -> list[str]:
        """Pick up jobs of this kind that a previous process left queued or running."""
        records = await asyncio.to_thread(self.jobs.list, self.kind)
        resumed = [r for r in records if not r.state.terminal and r.job_id not in self._tasks]
        for record in sorted(resumed, key=lambda r: r.created_at):  # oldest first, as they were submitted
            log.info("resuming job", job_id=record.job_id, state=record.state.value)
            self._schedule(record, resumed=True)
        return [r.job_id for r in resumed]

    async def cancel(self, job_id: str) -> JobRecord:
        """Request cancellation; stop the task if it runs here and wait (bounded) until the job is final."""
        record = await asyncio.to_thread(self.jobs.request_cancel, job_id)
        if record.state.terminal:
            return record
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_WAIT_SECONDS)
        else:
            # Not running in this process (e.g. still queued after a restart): cancel in the store. If another
            # process does run it, it sees the marker at its next check and stops.
            await asyncio.to_thread(self._finish_quietly, job_id, JobState.CANCELLED, "cancelled")
        return await asyncio.to_thread(self.jobs.get, job_id)

    def _schedule(self, record: JobRecord, resumed: bool) -> None:
        task = asyncio.create_task(self._run(record, resumed), name=f"job-{record.job_id}")
        self._tasks[record.job_id] = task
        task.add_done_callback(lambda _t, job_id=record.job_id: self._tasks.pop(job_id, None))

    async def _run(self, record: JobRecord, resumed: bool) -> None:
        job_id = record.job_id
        try:
            async with self._slots:
                current = await asyncio.to_thread(self.jobs.get, job_id)
                if current.cancel_requested:
                    raise Cancelled(f"job {job_id} cancelled")
                if current.state != JobState.RUNNING:
                    await asyncio.to_thread(self.jobs.set_state, job_id, JobState.RUNNING)
                else:
                    await asyncio.to_thread(self.jobs.append, job_id, "log", "resumed after restart")
                result = await self.handler(JobContext(self.jobs, current, resumed))
            await asyncio.to_thread(self.jobs.set_state, job_id, JobState.SUCCEEDED, result=result or {})
        except asyncio.CancelledError:
            if self._shutting_down:
                raise  # leave the job queued/running in the store: the next process resumes it
            await asyncio.to_thread(self._finish_quietly, job_id, JobState.CANCELLED, "cancelled")
        except Cancelled as exc:  # the handler saw the cancel marker
            await asyncio.to_thread(self._finish_quietly, job_id, JobState.CANCELLED, exc.message)
        except EmotuneError as exc:
            await asyncio.to_thread(self._finish_quietly, job_id, JobState.FAILED, exc.message)
        except Exception as exc:
            log.exception("job failed", job_id=job_id)
            await asyncio.to_thread(self._finish_quietly, job_id, JobState.FAILED, f"{type(exc).__name__}: {exc}")

    def _finish_quietly(self, job_id: str, state: JobState, error: str) -> None:
        """Record a final state unless the job already has one (e.g. it finished while being cancelled)."""
        try:
            self.jobs.set_state(job_id, state, error=error)
        except EmotuneError as exc:
            log.warning("final state not recorded", job_id=job_id, state=state.value, reason=exc.message)

    async def wait(self, job_id: str) -> None:
        task = self._tasks.get(job_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def shutdown(self) -> None:
        """Stop running tasks without marking jobs terminal: the next process resumes them."""
        tasks = list(self._tasks.values())
        self._shutting_down = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
