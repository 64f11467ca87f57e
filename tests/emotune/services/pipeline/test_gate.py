"""The promotion gate on synthetic per-question style lifts: noise is never promoted, a real lift is, and too
little evidence (few training samples, few questions) is never promoted whatever the scores."""

from __future__ import annotations

import numpy as np
import pytest

from emotune.services.pipeline.gate import GateRule, judge_style, summarize

RULE = GateRule()


def _scores(seed: int, n: int, lift: float, noise: float = 0.15):
    rng = np.random.default_rng(seed)
    base = rng.normal(0.2, noise, n)
    prompt = base + 0.4 + rng.normal(0, noise, n)
    tuned = base + lift + rng.normal(0, noise, n)
    return tuned.tolist(), base.tolist(), prompt.tolist()


@pytest.mark.parametrize("seed", range(40))
def test_pure_noise_is_not_promoted(seed):
    tuned, base, prompt = _scores(seed, 12, lift=0.0)
    verdict = judge_style("温柔", tuned, base, prompt, train_samples=50, rule=RULE)
    assert not verdict.promoted, verdict


def test_noise_is_rarely_even_significant_without_a_margin():
    """The test itself is calibrated: at alpha 0.05 with no margin, noise passes about 5% of the time."""
    rule = GateRule(margin=0.0)
    passed = sum(judge_style("s", *_scores(seed, 12, 0.0), train_samples=50, rule=rule).promoted
                 for seed in range(400))
    assert passed / 400 < 0.09


def test_a_real_lift_is_promoted_with_its_numbers():
    tuned, base, prompt = _scores(1, 12, lift=0.35)
    verdict = judge_style("毒舌", tuned, base, prompt, train_samples=50, rule=RULE)
    assert verdict.promoted and verdict.p_value < 0.05 and verdict.wins >= 10
    assert verdict.ci_low > 0 and verdict.mean_lift == pytest.approx(np.mean(np.subtract(tuned, base)))
    assert 0.6 < verdict.retention < 1.2  # 0.35 of the prompt's 0.4
    assert "closer to the style than the base model's" in verdict.reason


def test_a_lift_below_the_margin_is_not_promoted():
    tuned, base, prompt = _scores(2, 40, lift=0.03, noise=0.01)
    verdict = judge_style("s", tuned, base, prompt, train_samples=50, rule=GateRule(margin=0.05))
    assert verdict.mean_lift > 0 and not verdict.promoted and "not by more than 0.05" in verdict.reason


def test_too_few_training_samples_or_questions_is_never_promoted():
    tuned, base, prompt = _scores(3, 12, lift=0.8)
    few_samples = judge_style("s", tuned, base, prompt, train_samples=5, rule=RULE)
    assert not few_samples.promoted and "only 5 training samples" in few_samples.reason
    tuned, base, prompt = _scores(3, 6, lift=0.8)
    few_questions = judge_style("s", tuned, base, prompt, train_samples=50, rule=RULE)
    assert not few_questions.promoted and "only 6 held-out questions" in few_questions.reason


def test_the_model_is_promoted_only_if_every_style_is():
    good = judge_style("温柔", *_scores(4, 12, lift=0.4), train_samples=50, rule=RULE)
    bad = judge_style("毒舌", *_scores(5, 12, lift=0.0), train_samples=50, rule=RULE)
    promoted, words = summarize([good, bad])
    assert good.promoted and not bad.promoted and not promoted
    assert words.startswith("not promoted — 温柔: promoted: ") and "毒舌: not promoted: " in words
    assert summarize([good])[0] and not summarize([])[0]


def test_misaligned_scores_are_refused():
    with pytest.raises(ValueError):
        judge_style("s", [0.1, 0.2], [0.1], [0.3, 0.4], train_samples=None)


def test_the_table_shows_each_styles_verdict_in_words_aligned():
    from emotune.fine_tuning.report import format_table

    judged = [judge_style("温柔", *_scores(6, 12, lift=0.4), train_samples=50, rule=RULE),
              judge_style("neutral", *_scores(7, 12, lift=0.0), train_samples=50, rule=RULE)]
    promoted, _ = summarize(judged)
    text = format_table({"table": [], "verdicts": {v.style: v.to_json() for v in judged}, "promoted": promoted})
    rows = text.splitlines()
    gentle = next(r for r in rows if r.startswith("温柔"))
    neutral = next(r for r in rows if r.startswith("neutral"))
    assert "promoted: with only the trigger" in gentle and "not promoted: " in neutral
    # Columns line up in a terminal: "温柔" is four columns wide, padded like "neutral" to eight.
    assert gentle.index(" ") == 2 and gentle[2:9] == " " * 7 and neutral[7:9] == "  "
    assert rows[-1] == "promoted: False"
    # Against the full prompt: the tuned score as a share of base_prompt's, and the p that it is below it.
    assert "vs prompt" in text and "p below" in text
    share = f"{judged[0].tuned / judged[0].prompt:.0%}"
    assert f" {share} " in gentle and f"{judged[0].p_below_prompt:.3g}" in gentle


def test_a_tiny_p_value_survives_the_report():
    verdict = judge_style("毒舌", *_scores(8, 16, lift=0.6), train_samples=50, rule=RULE)
    assert 0 < verdict.p_value < 1e-4
    assert verdict.to_json()["p_value"] == pytest.approx(verdict.p_value, rel=1e-2)


def _sense(values, loops=()):
    from emotune.services.pipeline.gate import ReplySense

    return [ReplySense(v, True, i in loops) for i, v in enumerate(values)]


def test_a_style_gained_by_losing_sense_is_not_promoted():
    """The student took the teacher's style words and lost its sense: closer to the style, but the judge reads
    far fewer of its replies as sensible answers than the base model's."""
    tuned, base, prompt = _scores(1, 16, lift=0.35)
    rng = np.random.default_rng(3)
    sensible, nonsense = rng.uniform(0.8, 0.95, 16), rng.uniform(0.2, 0.6, 16)
    verdict = judge_style("毒舌", tuned, base, prompt, 50, RULE,
                          tuned_sense=_sense(nonsense), base_sense=_sense(sensible))
    assert not verdict.promoted and "less sense" in verdict.reason
    assert verdict.p_sense_worse < 0.05 and verdict.sense_tuned < verdict.sense_base
    same = judge_style("毒舌", tuned, base, prompt, 50, RULE,
                       tuned_sense=_sense(rng.permutation(sensible)), base_sense=_sense(sensible))
    assert same.promoted and same.p_sense_worse >= 0.05


def test_a_student_that_loops_more_often_than_the_base_is_not_promoted():
    tuned, base, prompt = _scores(1, 16, lift=0.35)
    sensible = [0.9] * 16
    verdict = judge_style("毒舌", tuned, base, prompt, 50, RULE,
                          tuned_sense=_sense(sensible, loops={3}), base_sense=_sense(sensible))
    assert not verdict.promoted and "repeat themselves or the question" in verdict.reason
    assert (verdict.loops_tuned, verdict.loops_base, verdict.repeats_tuned, verdict.repeats_base) == (1, 0, 1, 0)
    assert _sense([0.9], loops={0})[0].value == 0.0  # a reply repeating itself counts as no sense at all
    from emotune.services.pipeline.gate import ReplySense

    capped = ReplySense(0.9, True, repeats=False, capped=True)  # a long list cut at the limit: loops, not nonsense
    assert capped.loops and capped.value == 0.9


def test_the_base_models_long_lists_do_not_excuse_a_looping_student():
    """Measured main job: the base model with the trigger hit the token limit on 9 of 16 questions (numbered
    lists), the tuned model looped on 6 ("你这事儿挺挺挺挺…"). Counting both as loops promoted it; only repeats
    are compared — here two, too few for the sense test to notice."""
    from emotune.services.pipeline.gate import ReplySense

    tuned, base, prompt = _scores(1, 16, lift=0.35)
    looping = [ReplySense(0.9, True, repeats=i < 2, capped=i < 2) for i in range(16)]
    listing = [ReplySense(0.9, True, repeats=False, capped=i < 9) for i in range(16)]
    verdict = judge_style("毒舌", tuned, base, prompt, 50, RULE, tuned_sense=looping, base_sense=listing)
    assert (verdict.loops_tuned, verdict.loops_base) == (2, 9) and verdict.p_sense_worse >= 0.05
    assert not verdict.promoted and "2 of its 16 replies repeat themselves" in verdict.reason
    rambling = [ReplySense(0.9, True, repeats=False, capped=i < 9) for i in range(16)]
    assert judge_style("毒舌", tuned, base, prompt, 50, RULE, tuned_sense=rambling, base_sense=listing).promoted
