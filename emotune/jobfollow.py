"""Following a job from a terminal, for ``emotune datagen run`` and ``emotune train run``: one rich progress bar
whether the job runs in this process (JobStore + JobRunner) or on a service (the shared ``Jobs`` gRPC service)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from emotune.grpc.client import open_channel, to_domain_error
from emotune.jobrunner import JobRunner
from emotune.jobs import JobStore
from emotune.settings import Settings
from emotune.v1 import jobs_pb2, jobs_pb2_grpc

Events = AsyncIterator[tuple[str, str, dict[str, Any]]]
Describe = Callable[[dict[str, Any]], str]  # a progress event's data -> the bar's description


class JobInterrupted(Exception):
    """Ctrl-C while following an in-process job: the job was cancelled and can be resumed by id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


async def follow(events: Events, console: Console, describe: Describe,
                 printed: tuple[str, ...] = ("log", "artifact")) -> str:
    """Render the events until the job ends; return its final state. Events of the ``printed`` types are printed
    above the bar (warnings in yellow)."""
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
