"""The main job of the embedded default: a small fine-tune from styles to a served model, end to end.

Drives the gateway exactly as an app would (the official ``openai`` client): upload the styles and questions,
create a fine-tuning job that generates the data with the teacher (ZhipuAI when ``ZHIPUAI_API_KEY`` is set,
else the packaged 1.5B Qwen few-shot through our own gateway), follow its events, then print what the validator
kept, the evaluation table, the verdict and before/after replies per style.

Offline, this is *distillation*: the teacher is a bigger model of the student's family (Qwen2.5-Coder-1.5B),
prompted with each style's full system prompt and few-shot turns; the student (the 0.5B base + LoRA) is trained on
the same questions with only the style's short serving trigger, so that the trigger alone comes to carry what the
long prompt did for the teacher. (The 0.5B as its own teacher — context distillation — wrote mostly nonsense with
style words; docs/validator.md, "Instruments".)
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from openai import OpenAI
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from emotune.fine_tuning.report import format_table
from emotune.jobs.follow import ProgressLines, format_duration
from emotune.models.basemodels import DEFAULT_BASE_MODEL, OFFLINE_TEACHER_MODEL

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TERMINAL = {"succeeded", "failed", "cancelled"}
# Higher rates than the trainer's defaults (2e-4 SFT, 5e-5 DPO) for the few steps on ~50 replies or pairs. DPO's
# is an unmeasured first choice (4x its default, as SFT's is 5x); see the DPO run in docs/trainer.md.
OFFLINE_LEARNING_RATE = {"supervised": 1e-3, "dpo": 2e-4}
OFFLINE_BEST_OF = 3


@dataclass
class DemoOptions:
    base_model: str = DEFAULT_BASE_MODEL
    styles_file: Path = EXAMPLES / "styles" / "emotions.yaml"
    styles: tuple[str, ...] = ("温柔", "毒舌")
    questions_file: Path = EXAMPLES / "questions" / "daily_zh.txt"
    questions_per_style: int = 30
    # 16, not the gate's minimum of 12: a real but modest lift (温柔's ~+0.2 against a per-question spread of ~0.3)
    # needs the extra questions to clear the paired test; each costs ~7 s of evaluation on 2 cores.
    eval_questions: int = 16
    max_steps: int = 0
    # 5 epochs of ~50 replies: at 4 the student carried ~70-90% of 毒舌's full-prompt effect, at 6 ~100% (one run
    # each); 6 would take the job past 14 min on 2 cores.
    epochs: int = 5
    learning_rate: float = 0.0  # 0: the trainer's default
    # Teacher replies held out to pick the checkpoint by loss. Offline none: ~5 held-out replies of a sampled
    # teacher make a noisy loss that rises as the student sharpens to the style (it picked step 6 of 20); the
    # style evaluation on held-out questions judges the last checkpoint instead.
    eval_fraction: float = 0.1
    # Markers every kept reply must contain (None: each style's own markers.min_hits).
    marker_hits: int | None = None
    # Best-of-N: candidates the teacher writes per question and style; the validator keeps the best that passes.
    best_of: int = 1
    # Answers kept per question and style (generation.variants_per_question): the teacher writes this many
    # (times best_of) and the validator keeps every one that passes, not only the best.
    answers_per_question: int = 1
    # "supervised": learn the kept teacher answers; "dpo": prefer them to a rejected reply (pairs_rejected)
    # (+ an NLL term on the chosen side), the pairs built by the pipeline.
    method: str = "supervised"
    # dpo: the rejected side of each pair (emotune.training.pairs_rejected).
    pairs_rejected: str = "other_style"
    # dpo: weight of the NLL on the chosen reply (None: the trainer's 0.1, Open Character Training's).
    nll_weight: float | None = None
    # One LoRA adapter per style ("per_style") or one for both, told apart by the triggers ("shared").
    adapters: str = "per_style"
    suffix: str = "demo"
    offline: bool = True  # the teacher is the packaged 1.5B (no ZhipuAI key)
    seed: int = 7
    timeout_s: float = 3600.0

    @classmethod
    def for_teacher(cls, **overrides) -> DemoOptions:
        """Without a ZhipuAI key the teacher is the packaged 1.5B Qwen (distillation): it rarely writes a style's
        exact emoji / 语气词, so markers are scored rather than required (the style and sense checks still filter),
        the few training steps on ~50 replies take a higher learning rate, and every kept reply is trained on (the
        last checkpoint is the model). The 1.5B's single answer passes the sense and style checks for only ~40% of
        毒舌 questions (copies, loops, roasts that turn into comfort), so it writes three candidates per question
        and the best passing one is kept: ~80% of questions keep an answer, for ~2.5 min more generation."""
        offline = not (os.environ.get("ZHIPUAI_API_KEY") or os.environ.get("EMOTUNE_ZHIPUAI_API_KEY"))
        method = overrides.get("method", cls.method)
        defaults = {"marker_hits": 0, "learning_rate": OFFLINE_LEARNING_RATE[method], "eval_fraction": 0.0,
                    "best_of": OFFLINE_BEST_OF, "offline": True} if offline else {"offline": False}
        return cls(**{**defaults, **overrides})


def submit_job(client: OpenAI, options: DemoOptions):
    """Upload the styles and questions and create a generation fine-tuning job (the client's retries of the
    create carry one ``Idempotency-Key``, so a retry after a timeout cannot start a second job)."""
    styles = client.files.create(file=options.styles_file.open("rb"), purpose="emotune-styles")
    questions = client.files.create(file=options.questions_file.open("rb"), purpose="emotune-questions")
    return client.fine_tuning.jobs.create(
        model=options.base_model, training_file=styles.id, suffix=options.suffix, seed=options.seed,
        method={"type": options.method, options.method: {"hyperparameters": _hyperparameters(options)}},
        extra_headers={"Idempotency-Key": f"demo-{uuid.uuid4().hex}"},
        extra_body={"emotune": {
            "styles": list(options.styles),
            "generation": {"questions": {"file": questions.id, "limit": options.questions_per_style},
                           "best_of": options.best_of, "variants_per_question": options.answers_per_question},
            "validation": {"marker_hits": options.marker_hits},
            "training": {"max_steps": options.max_steps, "learning_rate": options.learning_rate,
                         "eval_fraction": options.eval_fraction, "pairs_rejected": options.pairs_rejected,
                         "adapters": options.adapters},
            "evaluation": {"questions_per_style": options.eval_questions},
        }},
    )


def _hyperparameters(options: DemoOptions) -> dict:
    chosen = {"n_epochs": options.epochs, "batch_size": 4}
    if options.method == "dpo" and options.nll_weight is not None:
        chosen["nll_weight"] = options.nll_weight
    return chosen


def run_demo(client: OpenAI, gateway_url: str, api_key: str, options: DemoOptions,
             console: Console | None = None) -> dict:
    console = console or Console()
    job = submit_job(client, options)
    console.print(f"fine-tuning job [bold]{job.id}[/] created ({options.base_model}, styles "
                  f"{', '.join(options.styles)})")
    teacher = "ZhipuAI" if not options.offline else f"the packaged {OFFLINE_TEACHER_MODEL}"
    console.print(f"distillation: {teacher}, asked with each style's full prompt and few-shot turns, writes the "
                  f"replies; {options.base_model} + LoRA learns them with only the style's one-line trigger",
                  markup=False)
    job = follow(client, job.id, console, options.timeout_s)
    if job.status != "succeeded":
        message = job.error.message if job.error else job.status
        console.print(f"[red]job {job.id} {job.status}: {message}[/]")
        return {"job": job, "report": None}
    report = httpx.get(f"{gateway_url}/v1/fine_tuning/jobs/{job.id}/report",
                       headers={"Authorization": f"Bearer {api_key}"}, timeout=30).json()
    print_kept(report.get("validation") or {}, console, options.best_of, options.answers_per_question)
    evaluation = report.get("evaluation") or {}
    console.rule("style evaluation (held-out questions)")
    console.print(format_table(evaluation), markup=False, highlight=False)
    for style, shown in evaluation.get("samples", {}).items():
        console.rule(f"{style}: before / after (held-out questions)")
        for sample in shown:
            console.print(f"Q: {sample.get('question')}", markup=False)
            console.print(f"  base, trigger only:     {sample.get('base_trigger')}", markup=False)
            console.print(f"  base, full prompt:      {sample.get('base_prompt')}", markup=False)
            console.print(f"  tuned, trigger only:    {sample.get('tuned_trigger')}", markup=False)
    plots = report.get("plots") or {}
    if plots:
        console.rule("plots")
        for name, url in plots.items():
            console.print(f"{name}: {gateway_url}{url}", markup=False)
    return {"job": job, "report": report}


def print_kept(validation: dict, console: Console, best_of: int = 1, answers_per_question: int = 1) -> None:
    """What the validator kept of the teacher's replies, per style, and the commonest reasons it dropped any
    (with best-of-N: per question, and the candidates that passed but lost to a better one are not "dropped")."""
    styles = validation.get("styles") or {}
    if not styles:
        return
    console.rule("training data (validator)")
    for name, info in styles.items():
        failed = {reason: n for reason, n in (info.get("reasons") or {}).items() if reason != "not_best"}
        reasons = ", ".join(f"{reason} {int(n)}" for reason, n in sorted(failed.items(), key=lambda item: -item[1])[:3])
        kept, total = int(info.get("kept", 0)), int(info.get("total", 0))
        what = f"kept {kept} of {total} generated replies ({info.get('kept_share', 0):.0%})" if best_of == 1 else \
            f"kept {kept} answers for {total // best_of // answers_per_question} questions (the best passing " \
            f"{answers_per_question} of {best_of * answers_per_question} candidates each)"
        console.print(f"{name}: {what}" + (f"; candidates dropped for {reasons}" if reasons else ""),
                      markup=False, highlight=False)


def follow(client: OpenAI, job_id: str, console: Console, timeout_s: float):  # -> openai FineTuningJob
    """Print stage transitions and the progress of each stage from the job's events until it ends: a progress bar
    on a terminal, plain progress lines (:class:`emotune.jobs.follow.ProgressLines`) when stdout is a file or a
    pipe (nohup, systemd, CI, ``docker logs``), where a bar would show nothing until the end."""
    if not console.is_terminal:
        return _follow_plain(client, job_id, console, timeout_s)
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        bar = progress.add_task("queued", total=None)
        while time.monotonic() < deadline:
            for event in _new_events(client, job_id, seen):
                data = event.data or {}
                stage = data.get("stage", "")
                if _is_transition(event.message, data):
                    progress.console.print(_transition_line(event.message, data))
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


def _follow_plain(client: OpenAI, job_id: str, console: Console, timeout_s: float):  # -> FineTuningJob
    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    lines = ProgressLines(say)
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in _new_events(client, job_id, seen):
            data = event.data or {}
            if _is_transition(event.message, data):
                say(_transition_line(event.message, data))
            if "done" in data and "total" in data:
                loss = data.get("loss", data.get("train_loss"))
                lines.update(data.get("stage") or data.get("phase") or "progress", data["done"], data["total"],
                             rate=data.get("rate_per_s"), eta_s=data.get("eta_s"),
                             detail=f"loss {loss:.3f}" if isinstance(loss, float) else "")
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in TERMINAL:
            return job
        time.sleep(1.0)
    raise TimeoutError(f"job {job_id} did not finish within {timeout_s:.0f}s")


def _new_events(client: OpenAI, job_id: str, seen: set[str]) -> list:
    """The job's events not seen yet, oldest first."""
    events = client.fine_tuning.jobs.list_events(job_id, limit=200).data
    fresh = [event for event in reversed(events) if event.id not in seen]
    seen.update(event.id for event in fresh)
    return fresh


def _transition_line(message: str, data: dict) -> str:
    """``  datagen succeeded (4m37s)``: a stage's end says how long it took."""
    took = f" ({format_duration(data['seconds'])})" if isinstance(data.get("seconds"), int | float) else ""
    return f"  {message}{took}"


def _is_transition(message: str, data: dict) -> bool:
    return message.endswith((" started", " succeeded", " resumed", " failed")) or data.get("state") in TERMINAL
