"""``emotune train``: fine-tune from the command line with a live progress bar (step, loss, tokens/s, ETA).

By default the job runs in this process against the configured artifact store (``EMOTUNE_STORE_*``); with
``--remote HOST:PORT`` it is submitted to a running trainer service and watched over gRPC. A local dataset file
is first copied into the store. ``emotune train xtuner-config`` prints the XTuner config a spec generates.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
import yaml
from google.protobuf.json_format import ParseDict
from rich.console import Console

from emotune.errors import EmotuneError
from emotune.jobs.follow import JobInterrupted, follow_in_process, follow_on_service
from emotune.logging import configure_logging
from emotune.services.trainer.config import TrainerSettings
from emotune.store import open_store
from emotune.store.artifacts import download_artifact

app = typer.Typer(help="LoRA fine-tuning (hf on CPU/GPU, XTuner QLoRA on GPU).", no_args_is_help=True)
console = Console(stderr=True)


def _read_spec(path: Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    spec = yaml.safe_load(path.read_text(encoding="utf-8")) if path else {}
    if not isinstance(spec, dict):
        raise typer.BadParameter(f"{path} must hold a mapping of TrainingSpec fields", param_hint="--spec")
    return {**spec, **{k: v for k, v in overrides.items() if v not in (None, "", 0)}}


PRINTED = ("log", "metric", "checkpoint", "artifact")


def _describe(data: dict[str, Any]) -> str:
    return f"epoch {data.get('epoch', 0):.2f} · loss {data.get('loss', 0):.4f} · {data.get('tokens_per_s', 0):.0f} tok/s"


async def _run_local(settings: TrainerSettings, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from emotune.services.trainer.service import TrainerService

    service = TrainerService(settings, open_store(settings))
    record = await service.start(request)
    return await follow_in_process(service.jobs, service.runner, record.job_id, console, _describe, PRINTED)


async def _run_remote(settings: TrainerSettings, address: str, request: dict[str, Any]) -> tuple[str, dict]:
    from emotune.v1 import trainer_pb2, trainer_pb2_grpc

    async def start(channel: grpc.aio.Channel) -> str:
        spec = ParseDict(request, trainer_pb2.TrainingSpec())
        return (await trainer_pb2_grpc.TrainerStub(channel).StartTraining(spec)).job_id

    return await follow_on_service(settings, address, start, console, _describe, PRINTED)


@app.command()
def run(
    spec: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="TrainingSpec fields (YAML/JSON)")] = None,
    data: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="local records JSONL to train on")] = None,
    dataset: Annotated[str, typer.Option(help="dataset artifact key in the store (instead of --data)")] = "",
    base_model: Annotated[str, typer.Option(help="qwen2.5-0.5b | smollm2-135m | gemma3-270m | a local HF model dir")] = "",
    backend: Annotated[str, typer.Option(help="hf | xtuner")] = "",
    max_steps: Annotated[int, typer.Option(help="optimizer steps (overrides epochs)")] = 0,
    output: Annotated[str, typer.Option(help="artifact prefix (default models/<job id>)")] = "",
    remote: Annotated[str, typer.Option(help="submit to the trainer service at HOST:PORT instead")] = "",
    export: Annotated[Path | None, typer.Option(help="also copy the merged model into this folder")] = None,
) -> None:
    """Fine-tune a base model on a dataset and publish adapter, merged model and report artifacts."""
    settings = TrainerSettings()
    configure_logging(settings.log_level, settings.log_json)
    store = open_store(settings)
    if data is not None:
        content = data.read_bytes()
        dataset = f"inputs/{hashlib.sha256(content).hexdigest()[:16]}/{data.name}"
        store.put_bytes(dataset, content)
    request = _read_spec(spec, {"dataset_artifact": dataset, "base_model": base_model, "backend": backend,
                                "max_steps": max_steps, "output_prefix": output})
    try:
        if remote:
            state, result = asyncio.run(_run_remote(settings, remote, request))
        else:
            state, result = asyncio.run(_run_local(settings, request))
    except JobInterrupted as stopped:
        console.print(f"cancelled job {stopped.job_id}")
        raise typer.Exit(130) from None
    except EmotuneError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    if state != "succeeded":
        console.print(f"job {result['job_id']} {state}")
        raise typer.Exit(1)
    console.print(f"merged model [bold]{result['merged_artifact']}[/bold] (best step {result.get('best_step')}, "
                  f"held-out loss {result.get('best_eval_loss')}); adapter {result['adapter_artifact']}")
    if export:
        download_artifact(store, result["merged_artifact"], export)
        console.print(f"files in {export} (Modelfile and lmdeploy_chat_template.json included)")


@app.command("xtuner-config")
def xtuner_config(
    spec: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="TrainingSpec fields (YAML/JSON)")],
    base_model_dir: Annotated[Path, typer.Option(exists=True, file_okay=False, help="HF model folder")],
    train_file: Annotated[Path, typer.Option(help="pre-tokenized JSONL the config points at")] = Path("train.jsonl"),
    device: Annotated[str, typer.Option(help="cuda (QLoRA) | cpu (fp32 LoRA)")] = "cuda",
) -> None:
    """Print the XTuner config a spec generates (the GPU path's config, reviewable before a run)."""
    from emotune.models.chat_template import ChatFormat
    from emotune.services.trainer.spec import TrainingSpec
    from emotune.services.trainer.xtuner_backend import render_config

    try:
        parsed = TrainingSpec.parse({"dataset_artifact": "-", **_read_spec(spec, {}), "backend": "xtuner"},
                                    spec.name)
        fmt = ChatFormat.from_pretrained(base_model_dir, parsed.chat_template or None)
    except EmotuneError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from None
    typer.echo(render_config(parsed, base_dir=base_model_dir, train_file=train_file, device=device,
                             prompt_template=fmt.xtuner_template(), system=fmt.segments.default_system,
                             resume=False, save_steps=parsed.eval_every_steps or 100))


@app.command("spec-schema")
def spec_schema() -> None:
    """Print the JSON schema of the training spec (every field, default and bound)."""
    from emotune.services.trainer.spec import TrainingSpec

    typer.echo(json.dumps(TrainingSpec.model_json_schema(), indent=2))
