"""The ``emotune`` command. Each service contributes a sub-command from ``services/<name>/cli.py`` (``app``)."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(help="emotune: styled data -> validated set -> LoRA fine-tune -> served chat model.",
                  no_args_is_help=True)

# (sub-command, module providing a Typer ``app``)
SUBCOMMANDS = [
    ("datagen", "services.datagen.cli"),
    ("validate", "services.validator.cli"),
    ("train", "services.trainer.cli"),
    ("serve", "services.inference.cli"),
    ("gateway", "services.gateway.cli"),
    ("local", "emotune.local.cli"),
    ("voice", "emotune.voice.cli"),
]

for name, module in SUBCOMMANDS:
    try:
        sub = importlib.import_module(module).app
    except ModuleNotFoundError as exc:
        # Each image installs only its own extra (the trainer image has no openai, no gateway): a sub-command
        # whose service or dependencies are absent is simply not offered. A missing emotune module is a bug.
        if exc.name and (module.startswith(exc.name) or not exc.name.startswith(("emotune", "services"))):
            continue
        raise
    app.add_typer(sub, name=name)

from emotune.client import chat, evaluate, follow_job, submit  # noqa: E402 - after the sub-commands on purpose

app.command()(chat)
app.command()(evaluate)
app.command()(submit)
app.command("follow")(follow_job)

if __name__ == "__main__":
    app()
