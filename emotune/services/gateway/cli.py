"""``emotune gateway ...``: run the gateway, or check one from the terminal with the official openai client."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import openai
import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn

app = typer.Typer(help="The OpenAI-compatible gateway (HTTP).", no_args_is_help=True)
console = Console(stderr=True)
BaseUrl = Annotated[str, typer.Option(help="gateway base URL", envvar="EMOTUNE_GATEWAY_URL")]
ApiKey = Annotated[str, typer.Option(help="API key (env EMOTUNE_API_KEY)", envvar="EMOTUNE_API_KEY")]


@app.command()
def run() -> None:
    """Start the gateway in the foreground (same as ``python -m emotune.services.gateway``)."""
    from emotune.services.gateway.__main__ import main

    main()


def _client(base_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY", "none"))


@app.command()
def models(base_url: BaseUrl = "http://127.0.0.1:8000/v1", api_key: ApiKey = "") -> None:
    """List model ids, including ``<model>:<style>`` ids."""
    try:
        for model in _client(base_url, api_key).models.list():
            print(model.id)
    except openai.APIStatusError as exc:
        console.print(f"[red]{exc.status_code}: {exc.message}")
        raise typer.Exit(1) from None


@app.command()
def chat(
    model: Annotated[str, typer.Argument(help="<model> or <model>:<style>")],
    prompt: str,
    max_tokens: int = 128,
    temperature: float | None = None,
    base_url: BaseUrl = "http://127.0.0.1:8000/v1",
    api_key: ApiKey = "",
) -> None:
    """Stream one reply through the gateway (a spinner until the first token)."""
    try:
        stream = _client(base_url, api_key).chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
            temperature=temperature, stream=True, stream_options={"include_usage": True})
        with Progress(SpinnerColumn(), TextColumn("waiting for the first token"), console=console,
                      transient=True) as progress:
            progress.add_task("ttft")
            first = next(stream, None)
        for chunk in [first, *stream] if first else []:
            if chunk.choices and chunk.choices[0].delta.content:
                sys.stdout.write(chunk.choices[0].delta.content)
                sys.stdout.flush()
            if chunk.usage:
                console.print(f"\n[dim]{chunk.usage.prompt_tokens} prompt + {chunk.usage.completion_tokens} "
                              "completion tokens")
    except openai.APIStatusError as exc:
        console.print(f"[red]{exc.status_code}: {exc.message}")
        raise typer.Exit(1) from None
