"""``emotune serve ...``: run the inference service, list / load / unload models, chat from the terminal."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import grpc
import typer
from rich.console import Console
from rich.table import Table

from emotune.data.styles import load_styles
from emotune.grpc.client import open_channel, to_domain_error
from emotune.services.inference.config import InferenceSettings
from emotune.v1 import inference_pb2, inference_pb2_grpc

app = typer.Typer(help="The inference service (gRPC): serve models, load artifacts, chat.", no_args_is_help=True)
console = Console(stderr=True)
T = TypeVar("T")
Address = Annotated[str | None, typer.Option(help="inference address (default EMOTUNE_INFERENCE_ADDR)")]


def _call(rpc: Callable[[inference_pb2_grpc.InferenceStub], Awaitable[T]], address: str | None) -> T:
    """Run one call against the service; a failure is printed as its domain error (exit code 1)."""
    settings = InferenceSettings()

    async def run() -> T:
        async with open_channel(address or settings.inference_addr, settings) as channel:
            try:
                return await rpc(inference_pb2_grpc.InferenceStub(channel))
            except grpc.aio.AioRpcError as exc:
                error = to_domain_error(exc)
                console.print(f"[red]{type(error).__name__}: {error.message}")
                raise typer.Exit(1) from None

    return asyncio.run(run())


@app.command()
def run() -> None:
    """Start the service in the foreground (same as ``python -m emotune.services.inference``)."""
    from emotune.services.inference.__main__ import main

    main()


@app.command()
def models(address: Address = None) -> None:
    """List served models, their styles and the in-flight count."""
    response = _call(lambda stub: stub.ListModels(inference_pb2.ListModelsRequest()), address)
    table = Table("id", "engine", "source", "styles", "memory")
    for m in response.models:
        source = m.artifact or m.base_model
        if m.adapter_artifact:
            source += f" + {m.adapter_artifact}"
        memory = f"{m.memory_bytes / 2**20:.0f} MiB" if m.loaded else "published, loads on first request"
        table.add_row(m.id, m.engine, source, ", ".join(s.style for s in m.styles), memory)
    Console().print(table)
    console.print(f"in flight: {response.in_flight}/{response.max_concurrency}, queued: {response.queued}")


@app.command()
def load(
    model_id: Annotated[str, typer.Argument(help="id clients will use (no ':')")],
    artifact: Annotated[str, typer.Option(help="artifact key of a merged or base model")] = "",
    base_model: Annotated[str, typer.Option(help="packaged base model name or local directory")] = "",
    adapter: Annotated[str, typer.Option(help="artifact key of a LoRA adapter")] = "",
    styles: Annotated[Path | None, typer.Option(help="styles YAML whose serving triggers to attach")] = None,
    engine: Annotated[str, typer.Option(help="transformers or lmdeploy (default: the service's)")] = "",
    publish: Annotated[bool, typer.Option(help="record it in the store: every replica serves it, after "
                                               "restarts too, until 'unload --forget'")] = False,
    address: Address = None,
) -> None:
    """Load (or replace) a model; the service keeps serving its other models meanwhile."""
    triggers = [inference_pb2.StyleTrigger(style=s.name, system_prompt=s.serving_prompt)
                for s in (load_styles(styles).styles if styles else [])]
    request = inference_pb2.LoadModelRequest(model_id=model_id, artifact=artifact, base_model=base_model,
                                             adapter_artifact=adapter, engine=engine, styles=triggers,
                                             publish=publish)
    with console.status(f"loading {model_id} ..."):
        info = _call(lambda stub: stub.LoadModel(request, timeout=1800), address)
    console.print(f"[green]loaded {info.id}[/] ({info.engine}, {info.memory_bytes / 2**20:.0f} MiB, "
                  f"styles: {', '.join(s.style for s in info.styles) or 'none'})")


@app.command()
def unload(
    model_id: str,
    forget: Annotated[bool, typer.Option(help="also unpublish it: no replica serves it any more")] = False,
    delete_artifacts: Annotated[bool, typer.Option(help="with --forget: delete its adapter / model too")] = False,
    address: Address = None,
) -> None:
    """Stop serving a model here (running generations finish first); with --forget, everywhere."""
    request = inference_pb2.UnloadModelRequest(model_id=model_id, forget=forget, delete_artifacts=delete_artifacts)
    response = _call(lambda stub: stub.UnloadModel(request), address)
    console.print("unloaded" if response.unloaded else f"{model_id} was not loaded")


@app.command()
def chat(
    model: Annotated[str, typer.Argument(help="<model> or <model>:<style>")],
    prompt: Annotated[str, typer.Argument(help="the user message")],
    max_tokens: int = 128,
    temperature: Annotated[float | None, typer.Option(help="0 = greedy; default: the model's")] = None,
    seed: int | None = None,
    address: Address = None,
) -> None:
    """Stream one reply to stdout; the finish reason and token counts go to stderr."""
    sampling = inference_pb2.SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed)
    request = inference_pb2.ChatRequest(model=model, sampling=sampling,
                                        messages=[inference_pb2.ChatMessage(role="user", content=prompt)])

    async def stream(stub: inference_pb2_grpc.InferenceStub) -> None:
        async for chunk in stub.Chat(request):
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            if chunk.finish_reason:
                console.print(f"\n[dim]{chunk.finish_reason}: {chunk.usage.prompt_tokens} prompt + "
                              f"{chunk.usage.completion_tokens} completion tokens")

    _call(stream, address)
