"""Distillation methods side by side: the main job trained with supervised fine-tuning (the baseline) and with DPO,
on one local stack, same styles, questions and seed, and what each taught the student.

Each method is a full main job (datagen → validation → [pairs] → training → serving → evaluation; with the same
seed the teacher writes the same candidates). Per style the table prints, for the tuned model with only the
trigger: ``accuracy`` (the share the evaluation's classifier reads as the style), ``style`` (score), ``sense``,
``loops`` and whether the gate promoted it, then each DPO variant's ratio to the baseline's accuracy. It also
prints the training time of each job. Expect ~25 min a method on 2 cores; the stack is stopped at the end.

    python -m benchmarks.distillation_methods [--methods supervised,dpo:other_style,dpo:base_model] [--seed 3]
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from openai import OpenAI
from rich.console import Console

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from emotune.local.demo import DemoOptions, run_demo
from emotune.local.supervisor import LocalStack, free_port_offset

COLUMNS = ("style_accuracy", "style_score", "sense", "loops")


def method_options(method: str, seed: int) -> DemoOptions:
    """``supervised``, ``dpo:other_style`` or ``dpo:base_model`` as the main job's options."""
    name, _, rejected = method.partition(":")
    overrides = {"pairs_rejected": rejected} if rejected else {}
    return DemoOptions.for_teacher(method=name, seed=seed, suffix=name, **overrides)


def tuned_rows(report: dict) -> dict[str, dict]:
    """Per style: the tuned model's (trigger only) row of the evaluation, with the gate's verdict."""
    evaluation = report.get("evaluation") or {}
    verdicts = evaluation.get("verdicts") or {}
    return {row["style"]: {**row, "promoted": bool(verdicts.get(row["style"], {}).get("promoted"))}
            for row in evaluation.get("table", []) if row["config"] == "tuned_trigger"}


def training_seconds(client: OpenAI, job_id: str) -> float | None:
    events = client.fine_tuning.jobs.list_events(job_id, limit=500).data
    return next((e.data["seconds"] for e in events if e.message == "training succeeded" and e.data
                 and "seconds" in e.data), None)


def print_comparison(results: dict[str, dict[str, dict]], seconds: dict[str, float | None],
                     console: Console) -> None:
    baseline = next(iter(results))
    console.rule(f"tuned model, trigger only (baseline: {baseline})")
    console.print(f"{'method':<20} {'style':<6} {'accuracy':>8} {'style':>7} {'sense':>6} {'loops':>6} "
                  f"{'promoted':>9} {'acc ratio':>9}", markup=False)
    for method, rows in results.items():
        for style, row in rows.items():
            base = results[baseline].get(style, {}).get("style_accuracy")
            ratio = f"{row['style_accuracy'] / base:.2f}x" if base else "-"
            cells = [f"{row[c]:.2f}" if row.get(c) is not None else "-" for c in COLUMNS]
            console.print(f"{method:<20} {style:<6} {cells[0]:>8} {cells[1]:>7} {cells[2]:>6} {cells[3]:>6} "
                          f"{'yes' if row['promoted'] else 'no':>9} {ratio:>9}", markup=False)
    console.print("training time: " + ", ".join(
        f"{method} {value:.0f}s" if value else f"{method} ?" for method, value in seconds.items()), markup=False)


app = typer.Typer(add_completion=False)


@app.command(help=__doc__.split("\n\n")[0])
def main(methods: Annotated[str, typer.Option(help="comma-separated; the first is the baseline (dpo:<pairs_rejected>)")] = \
             "supervised,dpo:other_style",
         seed: int = 3,
         state_dir: Annotated[Path | None, typer.Option(help="the stack's state (default: a temporary directory)")] = None) -> None:
    console = Console(soft_wrap=True)
    state_dir = state_dir or Path(tempfile.mkdtemp(prefix="emotune-distillation-"))
    stack = LocalStack(state_dir, port_offset=free_port_offset(), with_ui=False)
    stack.start(lambda name, status: None)
    results: dict[str, dict[str, dict]] = {}
    seconds: dict[str, float | None] = {}
    try:
        client = OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=stack.api_key, max_retries=2, timeout=600)
        for method in methods.split(","):
            console.rule(method)
            outcome = run_demo(client, stack.gateway_url, stack.api_key, method_options(method, seed),
                               console)
            if outcome["report"] is None:
                raise SystemExit(f"the {method} job did not succeed: {outcome['job'].status}")
            results[method] = tuned_rows(outcome["report"])
            seconds[method] = training_seconds(client, outcome["job"].id)
    finally:
        stack.stop()
    print_comparison(results, seconds, console)


if __name__ == "__main__":
    app()
