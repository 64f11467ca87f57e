"""Following a job, for ``emotune datagen run``, ``emotune train run`` and the main job (``emotune local demo``):
whether the job runs in this process (JobStore + JobRunner) or on a service (the shared ``Jobs`` gRPC service).

On a terminal: one rich progress bar. When stdout is not a terminal (a file, a pipe: nohup, systemd, CI,
``docker logs``) a bar draws nothing until the end, so :class:`ProgressLines` prints a plain line per stage at a
steady pace instead (``[datagen] 12/60 (20%) 0.80/s ETA 1m00s``): the first report, every 5 % step or every
10 s, whichever comes first, and the last one.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from emotune.grpc.client import open_channel, to_domain_error
from emotune.jobs.runner import JobRunner
from emotune.jobs.store import JobStore
from emotune.settings import Settings
from emotune.v1 import jobs_pb2, jobs_pb2_grpc

Events = AsyncIterator[tuple[str, str, dict[str, Any]]]
Describe = Callable[[dict[str, Any]], str]  # a progress event's data -> the bar's description


def format_duration(seconds: float | None) -> str:
    """``45s``, ``1m05s``, ``2h03m``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_rate(rate: float | None) -> str:
    """Items per second with two significant digits or so; ``?/s`` when unknown."""
    if rate is None or not math.isfinite(rate) or rate <= 0:
        return "?/s"
    return f"{rate:.0f}/s" if rate >= 10 else f"{rate:.1f}/s" if rate >= 1 else f"{rate:.2f}/s"


def progress_line(stage: str, done: int, total: int, rate: float | None, eta_s: float | None,
                  detail: str = "") -> str:
    """``[datagen] 12/60 (20%) 0.80/s ETA 1m00s`` (+ ``  detail``)."""
    percent = f" ({100 * done / total:.0f}%)" if total else ""
    line = f"[{stage}] {done}/{total or '?'}{percent} {format_rate(rate)} ETA {format_duration(eta_s)}"
    return f"{line}  {detail}" if detail else line


@dataclass
class _StageProgress:
    first_at: float
    first_done: int
    printed_at: float = -math.inf
    printed_step: int = -1
    printed_done: int = -1
    rate: float | None = None


class ProgressLines:
    """Plain progress lines for a stdout that is not a terminal, one stage at a time or several interleaved.

    A line is printed for a stage's first report, whenever it crosses a ``step_percent`` step, when
    ``every_s`` seconds have passed since its last line (a heartbeat, even if nothing moved), and when it
    reaches its total. Rate and ETA come from the event when it has them (``rate_per_s``, ``eta_s``; a rate
    from the ETA when only that is given, as the trainer reports), else from what this follower has seen of the
    stage, else the stage's last known rate.
    """

    def __init__(self, print_line: Callable[[str], None], every_s: float = 10.0, step_percent: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.print_line, self.every_s, self.step_percent, self.clock = print_line, every_s, step_percent, clock
        self.stages: dict[str, _StageProgress] = {}

    def update(self, stage: str, done: int, total: int, *, rate: float | None = None, eta_s: float | None = None,
               detail: str = "") -> bool:
        """Report a stage's progress; True when a line was printed."""
        now = self.clock()
        done, total = int(done or 0), int(total or 0)
        seen = self.stages.get(stage)
        if seen is None or done < seen.first_done:  # a new stage, or the stage started over
            seen = self.stages[stage] = _StageProgress(now, done)
        if not rate and eta_s and total > done:
            rate = (total - done) / eta_s
        if not rate and now - seen.first_at >= 1.0 and done > seen.first_done:  # not within one burst
            rate = (done - seen.first_done) / (now - seen.first_at)
        rate = rate or seen.rate
        seen.rate = rate
        if eta_s is None and rate and total:
            eta_s = max(0, total - done) / rate
        step = int(100 * done / total // self.step_percent) if total else 0
        finished = bool(total) and done >= total
        due = (seen.printed_done < 0 or step > seen.printed_step or now - seen.printed_at >= self.every_s
               or (finished and seen.printed_done < done))
        if not due:
            return False
        seen.printed_at, seen.printed_step, seen.printed_done = now, step, done
        self.print_line(progress_line(stage, done, total, rate, 0.0 if finished else eta_s, detail))
        return True


class JobInterrupted(Exception):
    """Ctrl-C while following an in-process job: the job was cancelled and can be resumed by id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


async def follow(events: Events, console: Console, describe: Describe,
                 printed: tuple[str, ...] = ("log", "artifact")) -> str:
    """Render the events until the job ends; return its final state. Events of the ``printed`` types are printed
    above the bar (warnings in yellow). Not on a terminal: plain lines instead of the bar (:class:`ProgressLines`)."""
    if not console.is_terminal:
        return await _follow_plain(events, console, describe, printed)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    state = ""
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("queued", total=None)
        async for type, message, data in events:
            if type == "progress":
                progress.update(task, completed=data.get("done", 0), total=data.get("total") or None,
                                description=describe(data))
            elif type == "state":
                state = data.get("state", message)
                if data.get("error"):
                    progress.console.print(f"[red]{data['error']}[/red]")
            elif type in printed:
                style = "yellow" if data.get("level") == "warning" else "default"
                progress.console.print(f"[{style}]{message}[/{style}]")
    return state


async def _follow_plain(events: Events, console: Console, describe: Describe, printed: tuple[str, ...]) -> str:
    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    lines = ProgressLines(say)
    state = ""
    async for type, message, data in events:
        if type == "progress" and "done" in data:
            stage = str(data.get("stage") or data.get("phase") or "progress")
            lines.update(stage, data.get("done", 0), data.get("total") or 0, rate=data.get("rate_per_s"),
                         eta_s=data.get("eta_s"), detail=describe(data))
        elif type == "state":
            state = data.get("state", message)
            say(f"job {state}")
            if data.get("error"):
                say(f"error: {data['error']}")
        elif type in printed:
            say(f"warning: {message}" if data.get("level") == "warning" else message)
    return state


async def follow_in_process(jobs: JobStore, runner: JobRunner, job_id: str, console: Console, describe: Describe,
                            printed: tuple[str, ...] = ("log", "artifact")) -> tuple[str, dict[str, Any]]:
    """Follow a job this process runs; on Ctrl-C cancel it (resumable) and raise :class:`JobInterrupted`."""
    console.print(f"job [bold]{job_id}[/bold]")

    async def events() -> Events:
        async for event in jobs.watch(job_id, poll_seconds=0.2):
            yield event.type, event.message, event.data

    try:
        state = await follow(events(), console, describe, printed)
    except (KeyboardInterrupt, asyncio.CancelledError):
        await runner.cancel(job_id)
        await runner.wait(job_id)
        raise JobInterrupted(job_id) from None
    return state, (await asyncio.to_thread(jobs.get, job_id)).result | {"job_id": job_id}


async def follow_on_service(settings: Settings, address: str, start: Callable[[grpc.aio.Channel], Awaitable[str]],
                            console: Console, describe: Describe,
                            printed: tuple[str, ...] = ("log", "artifact")) -> tuple[str, dict[str, Any]]:
    """Start a job on the service at ``address`` (``start`` returns its id) and follow it over the Jobs service."""
    async with open_channel(address, settings) as channel:
        try:
            job_id = await start(channel)
            console.print(f"job [bold]{job_id}[/bold] on {address}")
            jobs = jobs_pb2_grpc.JobsStub(channel)

            async def events() -> Events:
                async for event in jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id), timeout=None):
                    yield event.type, event.message, MessageToDict(event.data, preserving_proto_field_name=True)

            state = await follow(events(), console, describe, printed)
            job = await jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job_id))
        except grpc.aio.AioRpcError as exc:
            raise to_domain_error(exc) from None
    return state, MessageToDict(job.result, preserving_proto_field_name=True) | {"job_id": job_id}
