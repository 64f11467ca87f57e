"""The styles the pipeline sends the validator: for validation, the job's styles with the required marker count
replaced only when the job says so (the offline context-distillation demo scores markers instead of requiring
them); for the evaluation's scoring, only the job's styles, so its classifier tells the trained styles apart."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from emotune.data.styles import parse_styles
from emotune.fine_tuning.protocol import ValidationOptions
from emotune.services.pipeline.evaluation import scoring_styles
from emotune.services.pipeline.stages import validation_styles

EMOTIONS = Path(__file__).resolve().parents[4] / "examples" / "styles" / "emotions.yaml"


def test_marker_hits_override_every_style_and_nothing_else() -> None:
    original = EMOTIONS.read_text(encoding="utf-8")
    assert validation_styles(original, None) == original
    before, after = parse_styles(original), parse_styles(validation_styles(original, 0))
    assert [s.markers.min_hits for s in before.styles] == [1, 1, 1, 1]
    assert [s.markers.min_hits for s in after.styles] == [0, 0, 0, 0]
    for old, new in zip(before.styles, after.styles, strict=True):
        assert new.markers.all == old.markers.all  # still scored
        assert new.model_dump(exclude={"markers"}) == old.model_dump(exclude={"markers"})


def test_marker_hits_is_a_checked_job_option() -> None:
    assert ValidationOptions().marker_hits is None
    assert ValidationOptions.model_validate({"marker_hits": 2}).marker_hits == 2
    with pytest.raises(ValidationError, match="marker_hits"):
        ValidationOptions.model_validate({"marker_hits": -1})


def test_replies_are_classified_among_the_styles_the_job_trains() -> None:
    document = parse_styles(EMOTIONS.read_text(encoding="utf-8"))
    assert document.names == ["温柔", "毒舌", "傲娇", "慵懒"]
    two = parse_styles(scoring_styles(document, ["毒舌", "温柔"]))
    assert two.names == ["毒舌", "温柔"]
    assert two.get("毒舌") == document.get("毒舌")
    assert parse_styles(scoring_styles(document, ["毒舌"])).names == document.names  # one style: vs the rest
