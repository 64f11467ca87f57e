"""The promotion gate: is the fine-tuned model, asked with only the style's short trigger, really closer to the
style than the base model asked the same way — beyond noise?

Per style, every held-out question was answered by ``base_trigger``, ``base_prompt`` and ``tuned_trigger``, and
the validator scored each reply's *style lift* (similarity to the style's references minus similarity to neutral
text). The comparison is paired by question: ``d_i = tuned_i - base_i``.

- **Significance**: a one-sided Wilcoxon signed-rank test of ``d_i - margin > 0`` (exact for small samples; no
  normality assumed), plus a seeded bootstrap 95% confidence interval of the mean difference for the report.
- **Margin**: the tuned model must beat the base by at least ``margin`` lift on average, not by a hair.
- **Enough evidence**: at least ``min_questions`` held-out questions, and at least ``min_train_samples`` kept
  training samples for the style; otherwise the style is never promoted, whatever the scores say.
- **Retention** (reported): how much of the full prompt's effect the trigger alone now carries,
  ``(tuned - base) / (prompt - base)``, and a paired test of whether the tuned model is significantly *below* the
  full prompt.

A model is promoted when every evaluated style is. Not promoted is an outcome, not an error: the verdict says why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import wilcoxon


@dataclass(frozen=True)
class GateRule:
    margin: float = 0.05
    alpha: float = 0.05
    min_questions: int = 12
    min_train_samples: int = 20
    bootstrap_rounds: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class StyleVerdict:
    style: str
    questions: int
    train_samples: int | None
    tuned: float
    base: float
    prompt: float
    mean_lift: float  # mean of tuned - base over the questions
    ci_low: float
    ci_high: float
    wins: int  # questions where tuned > base
    p_value: float  # H1: tuned - base > margin
    p_below_prompt: float  # H1: tuned < prompt
    retention: float | None  # share of the full prompt's lift the trigger carries (None: the prompt adds nothing)
    promoted: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        """Scores rounded to 4 decimals; p-values to 3 significant digits (4 decimals would show p=4.6e-05 as 0)."""
        return {k: (float(f"{v:.3g}") if k.startswith("p_") else round(v, 4)) if isinstance(v, float) else v
                for k, v in asdict(self).items()}


def _one_sided_p(differences: np.ndarray) -> float:
    """Wilcoxon signed-rank, H1: the differences are centred above 0 (1.0 when they are all zero)."""
    if not np.any(differences):
        return 1.0
    return float(wilcoxon(differences, alternative="greater", zero_method="zsplit").pvalue)


def _bootstrap_ci(differences: np.ndarray, rounds: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(differences, size=(rounds, differences.size), replace=True).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def judge_style(style: str, tuned: list[float], base: list[float], prompt: list[float],
                train_samples: int | None, rule: GateRule = GateRule()) -> StyleVerdict:
    """The verdict for one style from per-question lifts (the three lists are aligned by question)."""
    if not (len(tuned) == len(base) == len(prompt)):
        raise ValueError("tuned, base and prompt scores must be aligned by question")
    n = len(tuned)
    t, b, p = (np.asarray(x, dtype=float) for x in (tuned, base, prompt))
    d = t - b
    mean_lift = float(d.mean()) if n else 0.0
    ci_low, ci_high = _bootstrap_ci(d, rule.bootstrap_rounds, rule.seed) if n else (0.0, 0.0)
    p_value = _one_sided_p(d - rule.margin) if n else 1.0
    p_below = _one_sided_p(p - t) if n else 1.0
    prompt_gain = float(p.mean() - b.mean()) if n else 0.0
    retention = mean_lift / prompt_gain if prompt_gain > 1e-9 else None

    if train_samples is not None and train_samples < rule.min_train_samples:
        promoted, reason = False, (f"only {train_samples} training samples were kept (at least "
                                   f"{rule.min_train_samples} are needed to trust the result)")
    elif n < rule.min_questions:
        promoted, reason = False, (f"only {n} held-out questions were asked (at least {rule.min_questions} are "
                                   "needed to tell a real difference from chance)")
    elif p_value < rule.alpha:
        promoted, reason = True, (f"with only the trigger, its replies are closer to the style than the base "
                                  f"model's on {int((d > 0).sum())} of {n} held-out questions (mean lift "
                                  f"{mean_lift:+.3f}, 95% CI {ci_low:+.3f}..{ci_high:+.3f}; better by more than "
                                  f"{rule.margin} with p={p_value:.3g})")
    elif mean_lift > 0:
        promoted, reason = False, (f"its replies are a little closer to the style (mean lift {mean_lift:+.3f}, "
                                   f"95% CI {ci_low:+.3f}..{ci_high:+.3f}), but not by more than {rule.margin} "
                                   f"beyond chance (p={p_value:.2g} >= {rule.alpha})")
    else:
        promoted, reason = False, (f"with only the trigger, it is no closer to the style than the base model "
                                   f"(mean lift {mean_lift:+.3f}, 95% CI {ci_low:+.3f}..{ci_high:+.3f})")
    return StyleVerdict(style, n, train_samples, float(t.mean()) if n else 0.0, float(b.mean()) if n else 0.0,
                        float(p.mean()) if n else 0.0, mean_lift, ci_low, ci_high, int((d > 0).sum()), p_value,
                        p_below, retention, promoted, reason)


def summarize(verdicts: list[StyleVerdict]) -> tuple[bool, str]:
    """(promoted, the verdict in words): promoted only if every style is."""
    promoted = bool(verdicts) and all(v.promoted for v in verdicts)
    lines = []
    for v in verdicts:
        carried = f"; the trigger carries {v.retention:.0%} of the full prompt's effect" \
            if v.retention is not None else ""
        lines.append(f"{v.style}: {'promoted' if v.promoted else 'not promoted'}: {v.reason}{carried}")
    head = "promoted" if promoted else "not promoted"
    return promoted, f"{head} — " + "; ".join(lines) if lines else "not promoted — no style was evaluated"

