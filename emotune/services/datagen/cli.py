"""``emotune datagen``: generate a styled dataset from the command line, with a live progress bar.

By default the job runs in this process against the configured artifact store (``EMOTUNE_STORE_*``); with
``--remote HOST:PORT`` it is submitted to a running datagen service and watched over gRPC. Either way the
question file is first copied into the store, and the result is the dataset artifact the job publishes.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from google.protobuf.json_format import ParseDict
from rich.console import Console

from emotune.data.textio import read_text
from emotune.errors import EmotuneError
from emotune.jobs.follow import JobInterrupted, follow_in_process, follow_on_service
from emotune.services.datagen.config import DatagenSettings
from emotune.store import open_store
from emotune.store.artifacts import download_artifact
from emotune.store.base import ArtifactStore

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


def _describe(data: dict[str, Any]) -> str:
    return f"ok {data.get('ok', 0)} · failed {data.get('failed', 0)} · {data.get('rate_per_s', 0):.1f}/s"


async def _run_local(settings: DatagenSettings, request: dict[str, Any], resume: str) -> tuple[str, dict[str, Any]]:
    from emotune.services.datagen.service import DatagenService

    service = DatagenService(settings, open_store(settings))
    record = await service.start(request, resume_job_id=resume)
    return await follow_in_process(service.jobs, service.runner, record.job_id, console, _describe)


async def _run_remote(settings: DatagenSettings, address: str, request: dict[str, Any],
                      resume: str) -> tuple[str, dict[str, Any]]:
    from emotune.v1 import datagen_pb2, datagen_pb2_grpc

    async def start(channel: grpc.aio.Channel) -> str:
        spec = ParseDict({**request, "resume_job_id": resume}, datagen_pb2.GenerationSpec())
        return (await datagen_pb2_grpc.DatagenStub(channel).StartGeneration(spec)).job_id

    return await follow_on_service(settings, address, start, console, _describe)


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
    teacher: Annotated[str, typer.Option(help="a teacher named in the settings (EMOTUNE_DATAGEN_TEACHERS; "
                                         "default: 'default', EMOTUNE_DATAGEN_TEACHER_*)")] = "",
    provider: Annotated[str, typer.Option(help="openai | zhipuai: the built-in teacher of that provider")] = "",
    base_url: Annotated[str, typer.Option(help="a teacher endpoint of your own, sent no key (only with "
                                          "EMOTUNE_DATAGEN_TEACHER_ALLOW_REQUEST_URL=true; public hosts)")] = "",
    model: Annotated[str, typer.Option(help="teacher model id (default: the named teacher's)")] = "",
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
        "teacher": {"name": teacher, "provider": provider, "base_url": base_url, "model": model,
                    "max_concurrency": concurrency, "requests_per_second": rps},
    }
    try:
        if remote:
            state, result = asyncio.run(_run_remote(settings, remote, request, resume))
        else:
            state, result = asyncio.run(_run_local(settings, request, resume))
    except JobInterrupted as stopped:
        console.print(f"cancelled; continue later with: emotune datagen run --resume {stopped.job_id}")
        raise typer.Exit(130) from None
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
