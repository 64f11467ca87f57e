"""The validation report people read: numbers (JSON) and PNG plots.

Plots: per-style histograms of the style lift (similarity to the style's references minus similarity to neutral
text) with the threshold drawn in, rejection reasons,
reply length per style with the style's bounds, and the style classifier's confusion matrix. Drawn with
:mod:`emotune.plots` (the packaged CJK font for style names, matplotlib's object API: safe in worker threads).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from emotune.data.styles import StylesDocument
from emotune.data.textio import LineError
from emotune.plots import new_figure, png_bytes
from emotune.services.validator.rules import REASON_DESCRIPTIONS, Reason
from emotune.services.validator.validation import ValidationOutcome

MAX_LISTED_INPUT_ERRORS = 200


def _summary(values: Sequence[float]) -> dict[str, float] | None:
    if not len(values):
        return None
    q = np.percentile(np.asarray(values, dtype=float), [0, 10, 50, 90, 100])
    return {"n": len(values), "mean": round(float(np.mean(values)), 4), "min": round(float(q[0]), 4),
            "p10": round(float(q[1]), 4), "median": round(float(q[2]), 4), "p90": round(float(q[3]), 4),
            "max": round(float(q[4]), 4)}


def build_report(outcome: ValidationOutcome, styles: StylesDocument, *, source: str = "",
                 input_errors: Sequence[LineError] = ()) -> dict[str, Any]:
    pairs = list(zip(outcome.records, outcome.assessments))
    reasons = Counter(r.value for _, a in pairs for r in a.reasons)
    per_style: dict[str, Any] = {}
    for name in [*styles.names, *sorted({a.style or "" for _, a in pairs} - set(styles.names))]:
        mine = [a for _, a in pairs if (a.style or "") == name]
        if not mine:
            continue
        kept = [a for a in mine if a.passed]
        per_style[name or "(none)"] = {
            "total": len(mine), "kept": len(kept), "rejected": len(mine) - len(kept),
            "kept_share": round(len(kept) / len(mine), 4),
            "reasons": dict(Counter(r.value for a in mine for r in a.reasons).most_common()),
            "max_similarity": _summary([a.max_similarity for a in mine if a.max_similarity is not None]),
            "style_lift": _summary([a.style_lift for a in mine if a.style_lift is not None]),
            "style_lift_kept": _summary([a.style_lift for a in kept if a.style_lift is not None]),
            "length_kept": _summary([a.length for a in kept]),
            "marker_score_kept": round(float(np.mean([a.marker_score for a in kept])), 4) if kept else None,
        }
    total, kept_total = len(pairs), sum(a.passed for _, a in pairs)
    timings = dict(outcome.timings)
    if timings.get("total_s"):
        timings["samples_per_s"] = round(total / timings["total_s"], 2)
    return {
        "source": source,
        "embedder": outcome.embedder,
        "thresholds": asdict(outcome.thresholds),
        "counts": {"total": total, "kept": kept_total, "rejected": total - kept_total,
                   "kept_share": round(kept_total / total, 4) if total else 0.0,
                   "input_errors": len(input_errors)},
        "reasons": dict(reasons.most_common()),
        "reason_descriptions": {r.value: REASON_DESCRIPTIONS[r] for r in Reason},
        "styles": per_style,
        "separability": outcome.separability.to_json(),
        "input_errors": [{"file": e.file, "line": e.line, "field": e.field, "message": e.message}
                         for e in list(input_errors)[:MAX_LISTED_INPUT_ERRORS]],
        "timings": timings,
    }


def _grid(n: int) -> tuple[int, int]:
    cols = min(3, n)
    return math.ceil(n / cols), cols


def _grid_margins(rows: int) -> dict[str, float]:
    """Fixed margins for a grid of panels 3 inches high (room for titles, tick and axis labels)."""
    height = 3.0 * rows
    return {"left": 0.06, "right": 0.98, "top": 1 - 0.75 / height, "bottom": 0.5 / height, "wspace": 0.25,
            "hspace": 0.9 / 3.0}


def render_plots(outcome: ValidationOutcome, styles: StylesDocument) -> dict[str, bytes]:
    """PNG bytes by plot name (``similarity``, ``reasons``, ``lengths``, ``separability``; empty ones left out)."""
    plots = {
        "similarity": _similarity_plot(outcome, styles),
        "reasons": _reasons_plot(outcome),
        "lengths": _lengths_plot(outcome, styles),
        "separability": _separability_plot(outcome),
    }
    return {name: png for name, png in plots.items() if png is not None}


def _similarity_plot(outcome: ValidationOutcome, styles: StylesDocument) -> bytes | None:
    names = [n for n in styles.names
             if any(a.style == n and a.style_lift is not None for a in outcome.assessments)]
    if not names:
        return None
    threshold = outcome.thresholds.style_lift
    rows, cols = _grid(len(names))
    fig = new_figure(4.2 * cols, 3.0 * rows, **_grid_margins(rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        scored = [a for a in outcome.assessments if a.style == name and a.style_lift is not None]
        kept = [a.style_lift for a in scored if a.passed]
        rejected = [a.style_lift for a in scored if not a.passed]
        values = kept + rejected + [threshold]
        bins = np.linspace(min(values) - 1e-3, max(values) + 1e-3, 30)
        ax.hist([kept, rejected], bins=bins, stacked=True, color=["#4c9f70", "#d1495b"], label=["kept", "rejected"])
        ax.axvline(threshold, color="black", linestyle="--", label="threshold")
        ax.set_title(f"{name} (n={len(scored)})")
        ax.set_xlabel("style lift (vs neutral text)")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Similarity to the style's references, minus to neutral text ({outcome.embedder})")
    return png_bytes(fig)


def _reasons_plot(outcome: ValidationOutcome) -> bytes | None:
    counts = Counter(r.value for a in outcome.assessments for r in a.reasons)
    if not counts:
        return None
    labels, values = zip(*sorted(counts.items(), key=lambda kv: kv[1]))
    height = 0.45 * len(labels) + 1.4
    fig = new_figure(6.5, height, left=0.3, right=0.95, top=1 - 0.45 / height, bottom=0.6 / height)
    ax = fig.subplots()
    ax.barh(labels, values, color="#d1495b")
    for y, v in enumerate(values):
        ax.text(v, y, f" {v}", va="center", fontsize=8)
    ax.set_xlabel("samples (a sample can have several reasons)")
    ax.set_title(f"Rejection reasons ({sum(not a.passed for a in outcome.assessments)} of "
                 f"{len(outcome.assessments)} rejected)")
    return png_bytes(fig)


def _lengths_plot(outcome: ValidationOutcome, styles: StylesDocument) -> bytes | None:
    names = [n for n in styles.names if any(a.style == n and a.length for a in outcome.assessments)]
    if not names:
        return None
    rows, cols = _grid(len(names))
    fig = new_figure(4.2 * cols, 3.0 * rows, **_grid_margins(rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        style = styles.get(name)
        mine = [a for a in outcome.assessments if a.style == name and a.length]
        kept = [a.length for a in mine if a.passed]
        rejected = [a.length for a in mine if not a.passed]
        ax.hist([kept, rejected], bins=25, stacked=True, color=["#4c9f70", "#d1495b"], label=["kept", "rejected"])
        for bound in (style.length.min, style.length.max):
            ax.axvline(bound, color="black", linestyle=":")
        ax.set_title(f"{name} ({style.length.min}-{style.length.max} chars)")
        ax.set_xlabel("reply length (characters)")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    fig.suptitle("Reply length per style")
    return png_bytes(fig)


def _separability_plot(outcome: ValidationOutcome) -> bytes | None:
    sep = outcome.separability
    if sep.accuracy is None:
        return None
    matrix = np.asarray(sep.confusion, dtype=float)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.8 * len(sep.styles)
    fig = new_figure(size + 1.5, size, left=0.8 / (size + 1.5) + 0.12, right=0.95, top=0.88, bottom=0.28)
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, int(count), ha="center", va="center", color="white" if shares[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(sep.styles)), sep.styles, rotation=30, ha="right")
    ax.set_yticks(range(len(sep.styles)), sep.styles)
    ax.set_xlabel("predicted style")
    ax.set_ylabel("style")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(f"Style separability: {sep.accuracy:.2f} (chance {sep.chance:.2f})")
    return png_bytes(fig)
