"""The main job of the embedded default: a small fine-tune from styles to a served model, end to end.

Drives the gateway exactly as an app would (the official ``openai`` client): upload the styles and questions,
create a fine-tuning job that generates the data with the teacher (ZhipuAI when ``ZHIPUAI_API_KEY`` is set,
else the local base model few-shot through our own gateway), follow its events, then print the evaluation table
and a before/after reply per style.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from openai import OpenAI
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from services.gateway.fine_tuning.evaluation import format_table

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class DemoOptions:
    base_model: str = "gemma3-270m"
    styles_file: Path = EXAMPLES / "styles" / "emotions.yaml"
    styles: tuple[str, ...] = ("温柔", "毒舌")
    questions_file: Path = EXAMPLES / "questions" / "daily_zh.txt"
    questions_per_style: int = 30
    eval_questions: int = 12
    max_steps: int = 0
    epochs: int = 3
    suffix: str = "demo"
    timeout_s: float = 3600.0


def submit_job(client: OpenAI, options: DemoOptions):  # noqa: ANN201 - openai's FineTuningJob
    """Upload the styles and questions and create a generation fine-tuning job."""
    styles = client.files.create(file=options.styles_file.open("rb"), purpose="emotune-styles")
    questions = client.files.create(file=options.questions_file.open("rb"), purpose="emotune-questions")
    return client.fine_tuning.jobs.create(
        model=options.base_model, training_file=styles.id, suffix=options.suffix, seed=7,
        hyperparameters={"n_epochs": options.epochs, "batch_size": 4},
        extra_body={"emotune": {
            "styles": list(options.styles),
            "generation": {"questions": {"file": questions.id, "limit": options.questions_per_style}},
            "training": {"max_steps": options.max_steps},
            "evaluation": {"questions_per_style": options.eval_questions},
        }},
    )


def run_demo(client: OpenAI, gateway_url: str, api_key: str, options: DemoOptions,
             console: Console | None = None) -> dict:
    console = console or Console()
    job = submit_job(client, options)
    console.print(f"fine-tuning job [bold]{job.id}[/] created ({options.base_model}, styles "
                  f"{', '.join(options.styles)})")
    job = follow(client, job.id, console, options.timeout_s)
    if job.status != "succeeded":
        message = job.error.message if job.error else job.status
        console.print(f"[red]job {job.id} {job.status}: {message}[/]")
        return {"job": job, "report": None}
    report = httpx.get(f"{gateway_url}/v1/fine_tuning/jobs/{job.id}/report",
                       headers={"Authorization": f"Bearer {api_key}"}, timeout=30).json()
    evaluation = report.get("evaluation") or {}
    console.rule("style evaluation (held-out questions)")
    console.print(format_table(evaluation), markup=False, highlight=False)
    for style, sample in evaluation.get("samples", {}).items():
        console.rule(f"{style}: before / after")
        console.print(f"Q: {sample.get('question')}", markup=False)
        console.print(f"base (trigger only): {sample.get('base_trigger')}", markup=False)
        console.print(f"tuned ({job.fine_tuned_model}:{style}): {sample.get('tuned_trigger')}", markup=False)
    return {"job": job, "report": report}


def follow(client: OpenAI, job_id: str, console: Console, timeout_s: float):  # noqa: ANN201 - openai type
    """Print stage transitions and a progress bar from the job's events until it ends."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        bar = progress.add_task("queued", total=None)
        while time.monotonic() < deadline:
            events = client.fine_tuning.jobs.list_events(job_id, limit=200).data
            for event in reversed(events):  # oldest first
                if event.id in seen:
                    continue
                seen.add(event.id)
                data = event.data or {}
                stage = data.get("stage", "")
                if event.message.endswith((" started", " succeeded", " resumed", " failed")) or \
                        data.get("state") in TERMINAL:
                    progress.console.print(f"  {event.message}")
                if "done" in data and "total" in data:
                    progress.update(bar, description=stage or "progress", completed=data["done"],
                                    total=data["total"])
                elif "train_loss" in data or "loss" in data:
                    loss = data.get("train_loss", data.get("loss"))
                    progress.update(bar, description=f"training loss {loss:.3f}" if isinstance(loss, float)
                                    else "training")
            job = client.fine_tuning.jobs.retrieve(job_id)
            if job.status in TERMINAL:
                return job
            time.sleep(1.0)
    raise TimeoutError(f"job {job_id} did not finish within {timeout_s:.0f}s")
