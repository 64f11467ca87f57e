"""How a style evaluation is shown: the aligned text table with the verdicts (terminals, logs, the CLI) and the
bar chart (the job report's ``evaluation.png``). The evaluation itself runs in the pipeline service."""

from __future__ import annotations

import unicodedata
from typing import Any

#: The three configurations an evaluation compares, in table order.
CONFIGS = ("base_trigger", "base_prompt", "tuned_trigger")


def evaluation_chart_png(table: list[dict[str, Any]]) -> bytes:
    """The report's evaluation chart: a grouped bar chart of style score per style and configuration, the style
    names in the packaged CJK font (:mod:`emotune.plots`)."""
    from emotune.plots import new_figure, png_bytes  # matplotlib only when a chart is asked for

    styles = list(dict.fromkeys(r["style"] for r in table))
    fig = new_figure(1.8 + 1.6 * len(styles), 3.6, dpi=110, layout="tight")
    ax = fig.subplots()
    width = 0.8 / len(CONFIGS)
    for i, config in enumerate(CONFIGS):
        values = [next((r["style_score"] for r in table if r["style"] == s and r["config"] == config), 0.0)
                  for s in styles]
        ax.bar([x + i * width for x in range(len(styles))], values, width, label=config)
    ax.set_xticks([x + width for x in range(len(styles))], styles)
    scores = [r["style_score"] for r in table] or [0.0]
    span = max(scores) - min(scores) or 0.1
    ax.set_ylim(min(0.0, min(scores) - 0.1 * span), max(scores) + 0.1 * span)
    ax.set_ylabel("style score (validator)")
    ax.legend(fontsize=8)
    return png_bytes(fig)


def _cell(text: str, width: int) -> str:
    """``text`` padded to ``width`` terminal columns (CJK characters take two)."""
    columns = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    return text + " " * max(0, width - columns)


def instrument_lines(measurement: dict[str, Any] | None) -> list[str]:
    """How well the instruments read replies labelled by a reader (emotune/services/validator/instruments.json)."""
    if not measurement:
        return ["instruments: not measured on the labelled replies for this embedder and judge"]
    counts = measurement["replies"]
    lines = [(f"instruments on {counts['styled']} hand-written styled, {counts['plain']} plain and "
              f"{counts['nonsense']} nonsense replies (+ {counts['observed']} failures read in real output):")]
    for name, variants in measurement["style_classifiers"].items():
        lines.append(f"  style classifier {name}: " + "; ".join(
            f"{variant.replace('_', ' ')} " + ", ".join(f"{style} {share:.2f}" for style, share in shares.items())
            for variant, shares in variants.items()))
    for check, row in measurement["sense_checks"].items():
        lines.append(f"  sense check {check}: " + ", ".join(
            f"{group} {share:.2f}" for group, share in row.items()))
    return lines


def format_table(evaluation: dict[str, Any]) -> str:
    """The evaluation table, then each style's verdict in words, as aligned text for terminals and logs."""
    header = (f"{'style':<8} {'config':<14} {'style_score':>11} {'turn-3':>7} {'accuracy':>9} {'sense':>6} "
              f"{'on-topic':>8} {'loops':>6} {'markers':>8} {'pass':>6}")
    lines = [header, "-" * len(header)]
    for r in evaluation.get("table", []):
        turn3 = f"{r['turn3_score']:.4f}" if r.get("turn3_score") is not None else "-"
        sense = [f"{r[k]:.2f}" if r.get(k) is not None else "-" for k in ("sense", "on_topic", "loops")]
        lines.append(f"{_cell(r['style'], 8)} {r['config']:<14} {r['style_score']:>11.4f} {turn3:>7} "
                     f"{r['style_accuracy']:>9.2f} {sense[0]:>6} {sense[1]:>8} {sense[2]:>6} "
                     f"{r['marker_score']:>8.2f} {r['pass_rate']:>6.2f}")
    classifiers = sorted({r["classifier"] for r in evaluation.get("table", []) if r.get("classifier")})
    if classifiers:
        lines.append(f"accuracy: the share read as the style by {', '.join(classifiers)}; sense: the judge's "
                     "probability that a reply is a sensible answer (0 for one repeating itself or the question); "
                     "on-topic: share; loops: share repeating itself or the question, or cut at the token limit")
    lines += instrument_lines(evaluation.get("instruments"))
    verdicts = evaluation.get("verdicts", {})
    if verdicts:
        # "of prompt": share of the full prompt's lift over base_trigger that the trigger alone now carries;
        # "vs prompt": tuned_trigger's style score as a share of base_prompt's, with the one-sided p that it is below.
        lines += ["", (f"{'style':<8} {'tuned-base':>10} {'95% CI':>17} {'wins':>6} {'p':>8} {'of prompt':>9} "
                       f"{'vs prompt':>9} {'p below':>8}  verdict")]
        for style, v in verdicts.items():
            retention = f"{v['retention']:.0%}" if v.get("retention") is not None else "-"
            versus = f"{v['tuned'] / v['prompt']:.0%}" if v.get("prompt", 0) > 0 else "-"
            lines.append(f"{_cell(style, 8)} {v['mean_lift']:>+10.3f} {v['ci_low']:>+8.3f}..{v['ci_high']:<+7.3f} "
                         f"{v['wins']:>3}/{v['questions']:<2} {v['p_value']:>8.3g} {retention:>9} {versus:>9} "
                         f"{v.get('p_below_prompt', 1.0):>8.3g}  "
                         f"{'promoted' if v['promoted'] else 'not promoted'}: {v['reason']}")
    lines.append(f"promoted: {evaluation.get('promoted')}")
    return "\n".join(lines)
