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

from emotune.data.records import Record
from emotune.data.styles import Style, StylesDocument
from emotune.services.validator.calibration import Thresholds
from emotune.services.validator.dedup import near_duplicates
from emotune.services.validator.embedders import Embedder
from emotune.services.validator.judge import Judge
from emotune.services.validator.rules import Reason, check_text
from emotune.services.validator.scoring import StyleIndex
from emotune.services.validator.sense import (
    SENSE_THRESHOLDS,
    SenseThresholds,
    echo_share,
    longest_shared_run,
    loop_share,
    relevance,
)
from emotune.services.validator.separability import Separability, style_separability

# on_progress(done, total, phase) after each embedding batch ("embedding") and each judge answer ("judging"); it
# may raise Cancelled to stop the pass.
Progress = Callable[[int, int, str], None]


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
    # Sense (emotune.services.validator.sense): None where not measured (no question, no judge, not reached).
    loop_share: float | None = None
    copied_chars: int | None = None
    echo_share: float | None = None  # share of the question's letters the reply repeats in one run
    relevance: float | None = None
    sense: float | None = None  # the judge's probability that the reply is a sensible answer
    judged_style: str | None = None  # the style the judge reads (None: no judge); predicted_style follows it
    judged_style_probability: float | None = None  # the judge's probability for the sample's own style
    centroid_style: str | None = None  # the nearest reference centroid's style (the embedding classifier)

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def quality(self) -> float:
        """What best-of-N ranks candidates by: with a judge, the probability that the reply is both sensible and
        in its style; without one, the embedding style lift."""
        if self.sense is not None and self.judged_style_probability is not None:
            return self.sense * self.judged_style_probability
        return self.style_lift if self.style_lift is not None else 0.0

    def add(self, reason: Reason) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)
            order = list(Reason)
            self.reasons.sort(key=order.index)

    def to_meta(self) -> dict[str, Any]:
        """What is written into ``record.meta["validation"]`` of kept and rejected samples."""
        out: dict[str, Any] = {"reasons": [r.value for r in self.reasons], "length": self.length,
                               "marker_score": round(self.marker_score, 4)}
        for name in ("max_similarity", "mean_similarity", "style_lift", "style_margin", "loop_share", "echo_share",
                     "relevance", "sense", "judged_style_probability"):
            value = getattr(self, name)
            if value is not None:
                out[name] = round(value, 4)
        for name in ("copied_chars", "predicted_style", "judged_style", "duplicate_of"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
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
    questions: Sequence[str] | None = None,
    judge: Judge | None = None,
    judge_all: bool = False,
    sense: SenseThresholds = SENSE_THRESHOLDS,
    batch_size: int = 64,
    on_progress: Progress | None = None,
) -> tuple[list[Assessment], np.ndarray, np.ndarray]:
    """Rules, similarity and sense for each sample (its assistant turns and style name; ``questions``: the user
    turn each last reply answers, needed for relevance and the judge). The judge reads every embedded reply with
    ``judge_all`` (scoring), else only those that passed every other check (validation: fewer model calls).

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
    vectors = embedder.encode_batched(texts, batch_size,
                                      on_progress and (lambda done, total: on_progress(done, total, "embedding")))
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
        a.centroid_style = sims.predicted[j]
        if not np.isnan(sims.margin[j]):
            a.style_margin = float(sims.margin[j])
            if judge is None and a.style_margin < thresholds.off_style_margin:
                a.add(Reason.OFF_STYLE)
    _assess_sense(assessments, [turns[-1] if turns else "" for turns in replies], questions, styles, embedder, judge,
                  judge_all, sense, style_names, on_progress)
    return assessments, vectors, rows


def _assess_sense(assessments: list[Assessment], texts: Sequence[str], questions: Sequence[str] | None,
                  styles: StylesDocument, embedder: Embedder, judge: Judge | None, judge_all: bool,
                  thresholds: SenseThresholds, style_names: Sequence[str | None],
                  on_progress: Progress | None = None) -> None:
    """Loops and copies on every embedded reply; relevance and the judge where the questions are known (two calls
    per reply read, each reported to ``on_progress``: minutes of a CPU judge's work)."""
    embedded = [i for i, a in enumerate(assessments)
                if Reason.UNKNOWN_STYLE not in a.reasons and Reason.EMPTY not in a.reasons]
    sources = {s.name: [shot.assistant for shot in s.few_shot] + list(s.reference_texts) for s in styles.styles}
    for i in embedded:
        a = assessments[i]
        a.loop_share = loop_share(texts[i])
        if thresholds.loops(texts[i]):
            a.add(Reason.LOOP)
        a.copied_chars = longest_shared_run(texts[i], sources[a.style])[0]
        if a.copied_chars >= thresholds.copy_chars:
            a.add(Reason.COPY)
    if questions is None or not embedded:
        return
    for i in embedded:
        assessments[i].echo_share = echo_share(questions[i], texts[i], thresholds.echo_min_letters)
        if assessments[i].echo_share is not None and assessments[i].echo_share >= thresholds.echo_share:
            assessments[i].add(Reason.ECHO)
    cutoff = thresholds.relevance.get(embedder.name)
    for i, value in zip(embedded, relevance(embedder, [questions[i] for i in embedded],
                                            [texts[i] for i in embedded])):
        assessments[i].relevance = float(value)
        if cutoff is not None and value < cutoff:
            assessments[i].add(Reason.OFF_TOPIC)
    if judge is None:
        return
    read = [i for i in embedded if judge_all or assessments[i].passed]
    # The judge chooses among the styles being compared: those of the samples when they hold two or more (a
    # validation job), else every style of the document (scoring against the job's styles).
    present = [name for name in dict.fromkeys(style_names) if name in styles.names]
    options = present if len(present) >= 2 else styles.names
    if not read:
        return
    styled = len(options) >= 2

    def answered(offset: int, calls: int) -> Callable[[int], None] | None:
        return on_progress and (lambda done: on_progress(offset + done, calls, "judging"))

    if styled:
        readings = judge.styles([questions[i] for i in read], [texts[i] for i in read], options,
                                answered(0, 2 * len(read)))
        for i, reading in zip(read, readings):
            a = assessments[i]
            a.judged_style = a.predicted_style = max(reading, key=reading.get)
            a.judged_style_probability = reading.get(a.style)
            if a.judged_style != a.style:
                a.add(Reason.OFF_STYLE)
    # Validation asks about the sense of the replies still kept only: an off-style one is dropped whatever its sense
    # (the judge's reading is two model calls a reply, most of a CPU validation's time).
    sensed = [i for i in read if judge_all or assessments[i].passed]
    done = len(read) if styled else 0
    sensible = judge.sense([questions[i] for i in sensed], [texts[i] for i in sensed],
                           answered(done, done + len(sensed))) if sensed else []
    for i, probability in zip(sensed, sensible):
        assessments[i].sense = probability
        if probability < thresholds.sense:
            assessments[i].add(Reason.NONSENSE)


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


def keep_best(records: Sequence[Record], assessments: list[Assessment], per_question: int) -> None:
    """Mark all but the ``per_question`` best passing samples of each (style, conversation before the last reply)
    NOT_BEST; ties keep the earlier sample, so the choice is deterministic."""
    groups: dict[tuple[str | None, tuple[tuple[str, str], ...]], list[int]] = {}
    for i, (record, assessment) in enumerate(zip(records, assessments)):
        if assessment.passed:
            last = max((k for k, m in enumerate(record.messages) if m.role == "assistant"), default=0)
            context = tuple((m.role, m.content.strip()) for m in record.messages[:last])
            groups.setdefault((record.style, context), []).append(i)
    for members in groups.values():
        ranked = sorted(members, key=lambda i: -assessments[i].quality)
        for i in ranked[per_question:]:
            assessments[i].add(Reason.NOT_BEST)


def assistant_turns(record: Record) -> list[str]:
    return [m.content for m in record.messages if m.role == "assistant"]


def last_question(record: Record) -> str:
    """The user turn the last assistant reply answers ("" when there is none)."""
    last = max((k for k, m in enumerate(record.messages) if m.role == "assistant"), default=len(record.messages))
    return next((m.content for m in reversed(record.messages[:last]) if m.role == "user"), "")


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
    judge: Judge | None = None,
    sense: SenseThresholds = SENSE_THRESHOLDS,
    batch_size: int = 64,
    dedup_block_rows: int = 1024,
    separability_max_samples: int = 2000,
    keep_per_question: int = 0,
    on_progress: Progress | None = None,
) -> ValidationOutcome:
    """``keep_per_question`` (0 = all): of the samples of one style answering the same question that pass every
    check, keep the best that many (best-of-N: datagen wrote N candidates per question)."""
    started = time.perf_counter()
    index = index or StyleIndex(styles, embedder, batch_size)
    embed_started = time.perf_counter()
    assessments, vectors, rows = assess(
        [assistant_turns(r) for r in records], [r.style for r in records], styles, embedder, index, thresholds,
        finish_reasons=[finish_reason(r) for r in records], questions=[last_question(r) for r in records],
        judge=judge, sense=sense, batch_size=batch_size, on_progress=on_progress,
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
    if keep_per_question:
        keep_best(records, assessments, keep_per_question)

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
