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
- **Sense**: the tuned model must not make less sense than the base model with the trigger: per question, the
  judge's probability that the reply is a sensible answer (else 1 for an on-topic reply, 0 for an off-topic one;
  0 for a reply that repeats itself or the question), and a one-sided Wilcoxon test that tuned is *below*
  base; and it must repeat itself or the question no more often than the base model does (a reply merely cut at
  the token limit does not count here: the base model's long numbered lists hit it half the time, which would
  excuse a student looping on 6 of 16 questions). A student that took the
  teacher's style words and lost its sense is not promoted.
- **Retention** (reported): how much of the full prompt's effect the trigger alone now carries,
  ``(tuned - base) / (prompt - base)``, and a paired test of whether the tuned model is significantly *below* the
  full prompt.

A model is promoted when every evaluated style is. Not promoted is an outcome, not an error: the verdict says why.
"""

from __future__ import annotations

from collections.abc import Sequence
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
class ReplySense:
    """What the evaluation knows of one reply's sense (from the validator's ``Score`` with its question)."""

    sense: float | None  # the judge's probability that it is a sensible answer (None: no judge)
    on_topic: bool
    repeats: bool  # repeats a span over and over, or parrots the question back
    capped: bool = False  # cut at the token limit (a long numbered list is, without repeating itself)

    @property
    def loops(self) -> bool:
        return self.repeats or self.capped

    @property
    def value(self) -> float:
        """The per-question quantity the sense test compares: a reply repeating itself makes no sense."""
        if self.repeats:
            return 0.0
        return self.sense if self.sense is not None else float(self.on_topic)


def reply_sense(score: Any, capped: bool) -> ReplySense:
    """From a validator ``TextScore`` (its reason codes carry the thresholds) and whether the reply hit the limit."""
    return ReplySense(score.sense if score.HasField("sense") else None, "off_topic" not in score.reasons,
                      "loop" in score.reasons or "echo" in score.reasons, capped)


def reply_reading(text: str, score: Any, read: ReplySense) -> dict[str, Any]:
    """One evaluated reply as the report keeps it, so that a reader can check the table against the replies."""
    return {"reply": text, "read_as": score.predicted_style, "sense": read.sense, "on_topic": read.on_topic,
            "loops": read.loops, "reasons": list(score.reasons)}


def sense_columns(replies: Sequence[ReplySense]) -> dict[str, float | None]:
    """The evaluation table's sense columns for one configuration."""
    if not replies:
        return {"sense": None, "on_topic": None, "loops": None}
    return {"sense": round(float(np.mean([r.value for r in replies])), 4),
            "on_topic": round(float(np.mean([r.on_topic for r in replies])), 4),
            "loops": round(float(np.mean([r.loops for r in replies])), 4)}


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
    sense_tuned: float | None = None  # mean per-question sense value (ReplySense.value)
    sense_base: float | None = None
    p_sense_worse: float | None = None  # H1: tuned makes less sense than base
    loops_tuned: int | None = None  # replies that repeat themselves or the question, or hit the token limit
    loops_base: int | None = None
    repeats_tuned: int | None = None  # replies that repeat themselves or the question (what the gate compares)
    repeats_base: int | None = None

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
                train_samples: int | None, rule: GateRule = GateRule(), *,
                tuned_sense: Sequence[ReplySense] = (), base_sense: Sequence[ReplySense] = ()) -> StyleVerdict:
    """The verdict for one style from per-question lifts (the three lists are aligned by question), and, when
    given, per-question sense of the tuned and base replies (aligned likewise)."""
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
    sense = {}
    if tuned_sense and base_sense:
        if len(tuned_sense) != len(base_sense):
            raise ValueError("tuned and base sense must be aligned by question")
        ts, bs = (np.array([r.value for r in replies]) for replies in (tuned_sense, base_sense))
        loops_tuned, loops_base = sum(r.loops for r in tuned_sense), sum(r.loops for r in base_sense)
        repeats_tuned, repeats_base = sum(r.repeats for r in tuned_sense), sum(r.repeats for r in base_sense)
        p_worse = _one_sided_p(bs - ts)
        sense = {"sense_tuned": float(ts.mean()), "sense_base": float(bs.mean()), "p_sense_worse": p_worse,
                 "loops_tuned": loops_tuned, "loops_base": loops_base,
                 "repeats_tuned": repeats_tuned, "repeats_base": repeats_base}
        if promoted and p_worse < rule.alpha:
            promoted, reason = False, (f"closer to the style, but its replies make less sense than the base "
                                       f"model's (sense {ts.mean():.2f} vs {bs.mean():.2f}, p={p_worse:.3g}): "
                                       f"{reason}")
        elif promoted and repeats_tuned > repeats_base:
            promoted, reason = False, (f"closer to the style, but {repeats_tuned} of its {n} replies repeat "
                                       f"themselves or the question (base: {repeats_base}): {reason}")
    return StyleVerdict(style, n, train_samples, float(t.mean()) if n else 0.0, float(b.mean()) if n else 0.0,
                        float(p.mean()) if n else 0.0, mean_lift, ci_low, ci_high, int((d > 0).sum()), p_value,
                        p_below, retention, promoted, reason, **sense)


RETENTION_WORDS = "the trigger carries {:.0%} of the full prompt's effect"


def summarize(verdicts: list[StyleVerdict], retention_words: str = RETENTION_WORDS) -> tuple[bool, str]:
    """(promoted, the verdict in words): promoted only if every style is. ``retention_words`` says what the
    retention is a share of (the voice gate's reference is the person, not a full prompt)."""
    promoted = bool(verdicts) and all(v.promoted for v in verdicts)
    lines = []
    for v in verdicts:
        carried = "; " + retention_words.format(v.retention) if v.retention is not None else ""
        lines.append(f"{v.style}: {'promoted' if v.promoted else 'not promoted'}: {v.reason}{carried}")
    head = "promoted" if promoted else "not promoted"
    return promoted, f"{head} — " + "; ".join(lines) if lines else "not promoted — no style was evaluated"

