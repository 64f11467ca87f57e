"""``emotune datagen``: generate a styled dataset from the command line, with a live progress bar.

By default the job runs in this process against the configured artifact store (``EMOTUNE_STORE_*``); with
``--remote HOST:PORT`` it is submitted to a running datagen service and watched over gRPC. Either way the
question file is first copied into the store, and the result is the dataset artifact the job publishes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import typer
from google.protobuf.json_format import MessageToDict, ParseDict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from emotune.errors import EmotuneError
from emotune.store import open_store
from emotune.store.artifacts import download_artifact
from emotune.store.base import ArtifactStore
from emotune.textio import read_text
from services.datagen.config import DatagenSettings

app = typer.Typer(help="Generate styled training data with a teacher LLM.", no_args_is_help=True)
console = Console(stderr=True)


def upload_questions(store: ArtifactStore, path: Path) -> str:
    """Copy a question file or export folder into the store under a content-addressed key; return the key."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise typer.BadParameter(f"{path} holds no files", param_hint="--questions")
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    root = f"inputs/{digest.hexdigest()[:16]}/{path.name}"
    for file in files:
        store.put_file(f"{root}/{file.relative_to(path).as_posix()}" if path.is_dir() else root, file)
    return root


class _Bar:
    """Renders progress events (in-process or gRPC) as one rich progress bar plus a closing summary."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("queued", total=None)
        self.result: dict[str, Any] = {}
        self.state = ""

    def event(self, type: str, message: str, data: dict[str, Any]) -> None:
        if type == "progress":
            self.progress.update(self.task, completed=data.get("done", 0), total=data.get("total") or None,
                                 description=f"ok {data.get('ok', 0)} · failed {data.get('failed', 0)} · "
                                             f"{data.get('rate_per_s', 0):.1f}/s")
        elif type == "state":
            self.state = data.get("state", message)
            if data.get("error"):
                self.progress.console.print(f"[red]{data['error']}[/red]")
        elif type in ("log", "artifact"):
            self.progress.console.print(message)


async def _watch_local(service, job_id: str) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    async for event in service.jobs.watch(job_id, poll_seconds=0.2):
        yield event.type, event.message, event.data


async def _run_local(settings: DatagenSettings, request: dict[str, Any], resume: str) -> tuple[str, dict[str, Any]]:
    from services.datagen.service import DatagenService

    service = DatagenService(settings, open_store(settings))
    record = await service.start(request, resume_job_id=resume)
    console.print(f"job [bold]{record.job_id}[/bold]")
    try:
        state = await _follow(_watch_local(service, record.job_id))
    except (KeyboardInterrupt, asyncio.CancelledError):
        await service.runner.cancel(record.job_id)
        await service.runner.wait(record.job_id)
        console.print(f"cancelled; continue later with: emotune datagen run --resume {record.job_id}")
        raise typer.Exit(130) from None
    return state, (await asyncio.to_thread(service.jobs.get, record.job_id)).result | {"job_id": record.job_id}


async def _run_remote(settings: DatagenSettings, address: str, request: dict[str, Any],
                      resume: str) -> tuple[str, dict[str, Any]]:
    import grpc

    from emotune.grpc.client import open_channel, to_domain_error
    from emotune.v1 import datagen_pb2, datagen_pb2_grpc, jobs_pb2, jobs_pb2_grpc

    async with open_channel(address, settings) as channel:
        try:
            ref = await datagen_pb2_grpc.DatagenStub(channel).StartGeneration(
                ParseDict({**request, "resume_job_id": resume}, datagen_pb2.GenerationSpec()))
            console.print(f"job [bold]{ref.job_id}[/bold] on {address}")
            jobs = jobs_pb2_grpc.JobsStub(channel)

            async def events() -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
                async for event in jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=ref.job_id)):
                    yield event.type, event.message, MessageToDict(event.data)

            state = await _follow(events())
            job = await jobs.GetJob(jobs_pb2.GetJobRequest(job_id=ref.job_id))
        except grpc.aio.AioRpcError as exc:
            raise to_domain_error(exc) from None
    return state, MessageToDict(job.result) | {"job_id": ref.job_id}


async def _follow(events: AsyncIterator[tuple[str, str, dict[str, Any]]]) -> str:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = _Bar(progress)
        async for type, message, data in events:
            bar.event(type, message, data)
    return bar.state


@app.command()
def run(
    styles: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="styles YAML/JSON (emotune schema)")],
    questions: Annotated[Path | None, typer.Option(exists=True, help="question file or export folder")] = None,
    format: Annotated[str, typer.Option(help="lines|lccc|json|jsonl|chatgpt|wechat (default: detected)")] = "",
    field_path: Annotated[str, typer.Option(help="dotted path of the question in json/jsonl items")] = "",
    question: Annotated[list[str] | None, typer.Option("--question", "-q", help="inline seed question (repeatable)")] = None,
    limit: Annotated[int, typer.Option(help="use only the first N questions (0 = all)")] = 0,
    mode: Annotated[str, typer.Option(help="single | multi | combinatorial")] = "single",
    style: Annotated[list[str] | None, typer.Option("--style", "-s", help="only this style (repeatable)")] = None,
    variants: Annotated[int, typer.Option(help="answers per question and style")] = 1,
    seed: Annotated[int, typer.Option(help="seed of the per-item random choices (combinatorial)")] = 0,
    provider: Annotated[str, typer.Option(help="openai | zhipuai (default: the configured teacher)")] = "",
    base_url: Annotated[str, typer.Option(help="teacher endpoint, e.g. https://api.deepseek.com/v1")] = "",
    model: Annotated[str, typer.Option(help="teacher model id")] = "",
    api_key_env: Annotated[str, typer.Option(help="name of the env var holding the teacher's key")] = "",
    concurrency: Annotated[int, typer.Option(help="parallel requests (capped per provider; 0 = the cap)")] = 0,
    rps: Annotated[float, typer.Option(help="request rate limit per second (0 = none)")] = 0.0,
    output: Annotated[str, typer.Option(help="artifact prefix of the dataset (default: datasets/<job id>)")] = "",
    resume: Annotated[str, typer.Option(help="continue this failed/cancelled job (other options ignored)")] = "",
    remote: Annotated[str, typer.Option(help="submit to the datagen service at HOST:PORT instead")] = "",
    export: Annotated[Path | None, typer.Option(help="also copy the dataset files into this folder")] = None,
) -> None:
    """Generate styled answers to seed questions (or combinatorial prompts) and publish a dataset artifact."""
    settings = DatagenSettings()
    store = open_store(settings)
    request: dict[str, Any] = {
        "styles_yaml": read_text(styles), "style_names": style or [], "mode": mode, "variants_per_question": variants,
        "seed": seed, "output_prefix": output,
        "questions": {"format": format, "field_path": field_path, "questions": question or [], "limit": limit,
                      "artifact_key": upload_questions(store, questions) if questions and not resume else ""},
        "teacher": {"provider": provider, "base_url": base_url, "model": model, "api_key_env": api_key_env,
                    "max_concurrency": concurrency, "requests_per_second": rps},
    }
    try:
        if remote:
            state, result = asyncio.run(_run_remote(settings, remote, request, resume))
        else:
            state, result = asyncio.run(_run_local(settings, request, resume))
    except EmotuneError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    if state != "succeeded":
        console.print(f"job {result['job_id']} {state}; continue it with: emotune datagen run --resume "
                      f"{result['job_id']}")
        raise typer.Exit(1)
    console.print(f"dataset [bold]{result['dataset_artifact']}[/bold]: {int(result['records'])} records, "
                  f"{int(result['failures'])} failures")
    if export:
        download_artifact(store, result["dataset_artifact"], export)
        console.print(f"files in {export}")
