"""Terminal commands that talk to a running gateway like any app would (the official ``openai`` client)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from emotune.models.basemodels import DEFAULT_BASE_MODEL

if TYPE_CHECKING:
    from openai import OpenAI

console = Console()
GatewayUrl = typer.Option("http://127.0.0.1:8000", "--gateway", envvar="EMOTUNE_GATEWAY_URL")
ApiKey = typer.Option(None, "--api-key", envvar="EMOTUNE_API_KEY", help="a gateway API key")
ApiKeyFile = typer.Option(Path("var/api-key"), "--api-key-file", help="read the key from this file")
# An evaluation generates three replies per question and style on the inference service: minutes on a CPU.
EVALUATE_DEADLINE_SECONDS = 3600.0


def _client(gateway: str, api_key: str | None, api_key_file: Path) -> OpenAI:
    from openai import OpenAI  # only the commands that talk to a gateway need the client

    if not api_key:
        if not api_key_file.is_file():
            raise typer.BadParameter(f"no --api-key and no key file at {api_key_file}", param_hint="--api-key")
        api_key = api_key_file.read_text().strip()
    return OpenAI(base_url=f"{gateway.rstrip('/')}/v1", api_key=api_key, max_retries=2, timeout=600)


def chat(
    model: str = typer.Argument(..., help=f"model id, e.g. {DEFAULT_BASE_MODEL} or ft-...:温柔"),
    message: str | None = typer.Option(None, "--message", "-m", help="send one message and exit"),
    temperature: float = 0.7,
    max_tokens: int = 256,
    gateway: str = GatewayUrl, api_key: str | None = ApiKey, api_key_file: Path = ApiKeyFile,
) -> None:
    """Chat with a model, streaming, keeping the whole conversation (empty line or Ctrl-D ends)."""
    client = _client(gateway, api_key, api_key_file)
    history: list[dict[str, str]] = []
    while True:
        text = message if message is not None else _prompt()
        if not text:
            return
        history.append({"role": "user", "content": text})
        reply = []
        for chunk in client.chat.completions.create(model=model, messages=history, stream=True,
                                                    temperature=temperature, max_tokens=max_tokens):
            delta = chunk.choices[0].delta.content if chunk.choices else None
            if delta:
                reply.append(delta)
                console.print(delta, end="", markup=False, highlight=False)
        console.print()
        history.append({"role": "assistant", "content": "".join(reply)})
        if message is not None:
            return


def _prompt() -> str:
    try:
        return console.input("[bold]you>[/] ").strip()
    except EOFError:
        return ""


def submit(
    styles_file: Path = typer.Argument(..., exists=True, help="styles YAML/JSON"),
    questions: Path = typer.Option(..., "--questions", exists=True, help="seed questions, one per line"),
    model: str = typer.Option(DEFAULT_BASE_MODEL, "--model"),
    style: list[str] = typer.Option([], "--style", help="styles to train (repeat; default all)"),
    questions_per_style: int = 30,
    epochs: int = 3,
    watch: bool = typer.Option(True, "--follow/--no-follow", help="follow progress until the job ends"),
    gateway: str = GatewayUrl, api_key: str | None = ApiKey, api_key_file: Path = ApiKeyFile,
) -> None:
    """Submit a fine-tuning job that generates its data from a styles file."""
    from emotune.data.styles import load_styles
    from emotune.local.demo import DemoOptions, follow, submit_job

    names = tuple(style) or tuple(load_styles(styles_file).names)  # validates the file locally first
    client = _client(gateway, api_key, api_key_file)
    job = submit_job(client, DemoOptions(base_model=model, styles_file=styles_file, styles=names,
                                         questions_file=questions, questions_per_style=questions_per_style,
                                         epochs=epochs, suffix="cli"))
    console.print(f"submitted {job.id}")
    if watch:
        job = follow(client, job.id, console, timeout_s=24 * 3600)
        console.print(f"{job.id}: {job.status} {job.fine_tuned_model or ''}")


def follow_job(job_id: str, gateway: str = GatewayUrl, api_key: str | None = ApiKey,
               api_key_file: Path = ApiKeyFile) -> None:
    """Follow a fine-tuning job's progress until it ends."""
    from emotune.local.demo import follow

    job = follow(_client(gateway, api_key, api_key_file), job_id, console, timeout_s=24 * 3600)
    console.print(f"{job.id}: {job.status} {job.fine_tuned_model or ''}")


def evaluate(
    tuned: str = typer.Argument(..., help="the fine-tuned model id (as served)"),
    styles_file: Path = typer.Option(..., "--styles", exists=True, help="styles YAML/JSON"),
    questions: Path = typer.Option(..., "--questions", exists=True, help="held-out questions, one per line"),
    base: str = typer.Option(DEFAULT_BASE_MODEL, "--base", help="the base model id (as served)"),
    style: list[str] = typer.Option([], "--style", help="styles to evaluate (repeat; default all)"),
    count: int = typer.Option(5, "--count", help="questions per style"),
    max_tokens: int = 96,
    chart: Path = typer.Option(Path("evaluation.png"), help="where to write the bar chart"),
) -> None:
    """Style evaluation: base (trigger only) vs base (full prompt) vs tuned (trigger only), scored by the
    validator, with the gate's verdict; runs in the pipeline service (``EMOTUNE_PIPELINE_ADDR``)."""
    import asyncio
    import json

    from emotune.data.importers import import_questions
    from emotune.data.styles import dump_styles, load_styles
    from emotune.fine_tuning.report import evaluation_chart_png, format_table
    from emotune.grpc.client import open_channel
    from emotune.settings import Settings
    from emotune.v1 import pipeline_pb2, pipeline_pb2_grpc

    document = load_styles(styles_file)
    held_out = import_questions(questions, "lines").questions[:count]
    settings = Settings()

    async def run() -> dict:
        async with open_channel(settings.pipeline_addr, settings) as channel:
            reply = await pipeline_pb2_grpc.PipelineStub(channel).Evaluate(pipeline_pb2.EvaluateRequest(
                styles_yaml=dump_styles(document), style_names=list(style) or document.names,
                questions=held_out, base_model=base, tuned_model=tuned, max_tokens=max_tokens,
            ), timeout=EVALUATE_DEADLINE_SECONDS)
            return json.loads(reply.json)

    result = asyncio.run(run())
    console.print(format_table(result), markup=False, highlight=False)
    chart.write_bytes(evaluation_chart_png(result["table"]))
    console.print(f"chart: {chart}")
    if not result["promoted"]:
        raise typer.Exit(1)
