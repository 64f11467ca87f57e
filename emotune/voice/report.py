"""The voice evaluation as text (the CLI and the local job print it)."""

from __future__ import annotations

from typing import Any

from emotune.voice.job import VOICE_STYLE


def format_voice_table(evaluation: dict[str, Any]) -> str:
    """The voice evaluation as text: score per configuration, then the paired test."""
    lines = [f"{'':<8}{'model':<40}{'voice score':>12}{'read as voice':>14}{'sense':>7}{'loops':>7}{'chars':>7}"]
    for row in evaluation.get("table", []):
        sense, loops = row.get("sense"), row.get("loops")
        lines.append(f"{row['config']:<8}{row['model']:<40}{row['voice_score']:>+12.4f}"
                     f"{row['voice_accuracy']:>14.0%}{'-' if sense is None else f'{sense:.2f}':>7}"
                     f"{'-' if loops is None else f'{loops:.0%}':>7}{row['mean_chars']:>7.1f}")
    verdict = (evaluation.get("verdicts") or {}).get(VOICE_STYLE)
    if verdict:
        retention = verdict.get("retention")
        lines.append(f"tuned - base: mean {verdict['mean_lift']:+.4f} (95% CI {verdict['ci_low']:+.4f}.."
                     f"{verdict['ci_high']:+.4f}), tuned closer on {verdict['wins']} of {verdict['questions']}, "
                     f"p={verdict['p_value']:.3g}" + (f"; {retention:.0%} of the way from base to the real replies"
                                                      if retention is not None else ""))
    probe = evaluation.get("probe")
    if probe:
        lines.append(f"probe ({evaluation.get('classifier')}): on held-out replies it reads "
                     f"{probe['real_read_as_voice']:.0%} of the person's as the voice and "
                     f"{probe['base_read_as_not']:.0%} of the base model's as not (balanced accuracy "
                     f"{probe['balanced_accuracy']:.0%})")
    lines.append(evaluation.get("verdict", ""))
    return "\n".join(lines)
