"""The validation pass: rules, embeddings, similarity, near-duplicates and separability over a dataset.

Everything after the embedding step is vectorised (one matrix product per style for similarity, blockwise
products for duplicates), so validating costs about what embedding the replies costs. The same assessment
(without duplicates) serves the online ``Score`` call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emotune.records import Record
from emotune.styles import Style, StylesDocument
from services.validator.calibration import Thresholds
from services.validator.dedup import near_duplicates
from services.validator.embedders import Embedder
from services.validator.rules import Reason, check_text
from services.validator.scoring import StyleIndex
from services.validator.separability import Separability, style_separability

# on_progress(done, total) after each embedding batch; it may raise Cancelled to stop the pass.
Progress = Callable[[int, int], None]


@dataclass
class Assessment:
    """The verdict on one reply. Similarities are None when the reply was not embedded (empty, unknown style)
    or its style has no reference texts."""

    style: str | None
    reasons: list[Reason] = field(default_factory=list)
    length: int = 0
    marker_hits: int = 0
    marker_score: float = 0.0
    max_similarity: float | None = None
    mean_similarity: float | None = None
    style_lift: float | None = None
    style_margin: float | None = None
    predicted_style: str | None = None
    duplicate_of: str | None = None  # id of the kept sample this one duplicates

    @property
    def passed(self) -> bool:
        return not self.reasons

    def add(self, reason: Reason) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)
            order = list(Reason)
            self.reasons.sort(key=order.index)

    def to_meta(self) -> dict[str, Any]:
        """What is written into ``record.meta["validation"]`` of kept and rejected samples."""
        out: dict[str, Any] = {"reasons": [r.value for r in self.reasons], "length": self.length,
                               "marker_score": round(self.marker_score, 4)}
        for name in ("max_similarity", "mean_similarity", "style_lift", "style_margin"):
            value = getattr(self, name)
            if value is not None:
                out[name] = round(value, 4)
        if self.predicted_style is not None:
            out["predicted_style"] = self.predicted_style
        if self.duplicate_of is not None:
            out["duplicate_of"] = self.duplicate_of
        return out


def _rule_assessment(replies: Sequence[str], style: Style, finish_reason: str | None) -> Assessment:
    """Rules on every assistant turn (a dialogue is only as good as its worst turn); length and markers are
    reported for the last reply, the one that is embedded."""
    assessment = Assessment(style.name)
    turns = list(replies) or [""]
    for i, reply in enumerate(turns):
        last = i == len(turns) - 1
        result = check_text(reply, style, finish_reason if last else None)
        for reason in result.reasons:
            assessment.add(reason)
        if last:
            assessment.length, assessment.marker_hits = result.length, result.marker_hits
            assessment.marker_score = result.marker_score
    return assessment


def assess(
    replies: Sequence[Sequence[str]],
    style_names: Sequence[str | None],
    styles: StylesDocument,
    embedder: Embedder,
    index: StyleIndex,
    thresholds: Thresholds,
    *,
    finish_reasons: Sequence[str | None] | None = None,
    batch_size: int = 64,
    on_progress: Progress | None = None,
) -> tuple[list[Assessment], np.ndarray, np.ndarray]:
    """Rules + similarity for each sample (its assistant turns and style name).

    Returns the assessments, the embeddings of the embedded samples and their positions.
    """
    known = {s.name: s for s in styles.styles}
    assessments: list[Assessment] = []
    for i, (turns, name) in enumerate(zip(replies, style_names)):
        if name not in known:
            assessments.append(Assessment(name, [Reason.UNKNOWN_STYLE]))
            continue
        finish = finish_reasons[i] if finish_reasons is not None else None
        assessments.append(_rule_assessment(turns, known[name], finish))
    rows = np.array([i for i, a in enumerate(assessments)
                     if Reason.UNKNOWN_STYLE not in a.reasons and Reason.EMPTY not in a.reasons], dtype=np.int64)
    texts = [replies[i][-1] for i in rows]
    vectors = embedder.encode_batched(texts, batch_size, on_progress)
    sims = index.score(vectors, [style_names[i] for i in rows])
    for j, i in enumerate(rows):
        a = assessments[i]
        a.predicted_style = sims.predicted[j]
        if not np.isnan(sims.max[j]):
            a.max_similarity, a.mean_similarity = float(sims.max[j]), float(sims.mean[j])
        if not np.isnan(sims.lift[j]):
            a.style_lift = float(sims.lift[j])
            if a.style_lift < thresholds.style_lift:
                a.add(Reason.LOW_SIMILARITY)
        if not np.isnan(sims.margin[j]):
            a.style_margin = float(sims.margin[j])
            if a.style_margin < thresholds.off_style_margin:
                a.add(Reason.OFF_STYLE)
    return assessments, vectors, rows


@dataclass
class ValidationOutcome:
    records: list[Record]
    assessments: list[Assessment]
    thresholds: Thresholds
    embedder: str
    separability: Separability
    timings: dict[str, float]

    @property
    def kept(self) -> list[Record]:
        return [self._annotated(r, a) for r, a in zip(self.records, self.assessments) if a.passed]

    @property
    def rejected(self) -> list[Record]:
        return [self._annotated(r, a) for r, a in zip(self.records, self.assessments) if not a.passed]

    @staticmethod
    def _annotated(record: Record, assessment: Assessment) -> Record:
        return record.model_copy(update={"meta": {**record.meta, "validation": assessment.to_meta()}})


def assistant_turns(record: Record) -> list[str]:
    return [m.content for m in record.messages if m.role == "assistant"]


def finish_reason(record: Record) -> str | None:
    """The teacher's finish reason as datagen records it (``"length"`` = cut by the token limit)."""
    return getattr(record.provenance, "finish_reason", None) or record.meta.get("finish_reason")


def validate_records(
    records: Sequence[Record],
    styles: StylesDocument,
    embedder: Embedder,
    thresholds: Thresholds,
    *,
    index: StyleIndex | None = None,
    batch_size: int = 64,
    dedup_block_rows: int = 1024,
    separability_max_samples: int = 2000,
    on_progress: Progress | None = None,
) -> ValidationOutcome:
    started = time.perf_counter()
    index = index or StyleIndex(styles, embedder, batch_size)
    embed_started = time.perf_counter()
    assessments, vectors, rows = assess(
        [assistant_turns(r) for r in records], [r.style for r in records], styles, embedder, index, thresholds,
        finish_reasons=[finish_reason(r) for r in records], batch_size=batch_size, on_progress=on_progress,
    )
    embed_seconds = time.perf_counter() - embed_started

    # Near-duplicates within each style, among samples that passed everything else (a bad sample must not
    # knock out a good copy of itself).
    dedup_started = time.perf_counter()
    row_style = np.array([records[i].style for i in rows], dtype=object)
    row_ok = np.array([assessments[i].passed for i in rows], dtype=bool)
    for name in styles.names:
        members = np.flatnonzero((row_style == name) & row_ok)
        if members.size < 2:
            continue
        duplicate_of = near_duplicates(vectors[members], thresholds.dedup, dedup_block_rows)
        for local in np.flatnonzero(duplicate_of >= 0):
            a = assessments[rows[members[local]]]
            a.add(Reason.NEAR_DUPLICATE)
            a.duplicate_of = records[rows[members[duplicate_of[local]]]].id
    dedup_seconds = time.perf_counter() - dedup_started

    kept_rows = np.array([j for j, i in enumerate(rows) if assessments[i].passed], dtype=np.int64)
    separability_started = time.perf_counter()
    separability = style_separability(vectors[kept_rows], [records[rows[j]].style for j in kept_rows],
                                      separability_max_samples)
    timings = {
        "embedding_s": round(embed_seconds, 3),
        "dedup_s": round(dedup_seconds, 3),
        "separability_s": round(time.perf_counter() - separability_started, 3),
        "total_s": round(time.perf_counter() - started, 3),
        "embedded_texts": len(rows),
    }
    return ValidationOutcome(list(records), assessments, thresholds, embedder.name, separability, timings)
