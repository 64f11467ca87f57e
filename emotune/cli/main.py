"""The ``emotune`` command. Each part with commands of its own (the services, ``local``, ``voice``) registers a Typer
``app`` in the ``emotune.cli`` entry-point group (``pyproject.toml``), so the core names no service."""

from __future__ import annotations

from importlib.metadata import entry_points

import typer

from emotune.cli.gateway_commands import chat, evaluate, follow_job, submit

CLI_GROUP = "emotune.cli"

app = typer.Typer(help="emotune: styled data -> validated set -> LoRA fine-tune -> served chat model.",
                  no_args_is_help=True)


def _add_subcommands(root: typer.Typer) -> None:
    for entry in sorted(entry_points(group=CLI_GROUP), key=lambda e: e.name):
        try:
            sub = entry.load()
        except ModuleNotFoundError as exc:
            # Each image installs only its own extra (the trainer image has no openai, no gateway): a sub-command
            # whose dependencies are absent is simply not offered. A missing emotune module is a bug.
            if exc.name and not exc.name.startswith("emotune"):
                continue
            raise
        root.add_typer(sub, name=entry.name)


_add_subcommands(app)
app.command()(chat)
app.command()(evaluate)
app.command()(submit)
app.command("follow")(follow_job)

if __name__ == "__main__":
    app()
