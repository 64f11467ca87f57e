"""A ValidationSpec message as the validator reads it: 0 thresholds are the calibrated ones, the margin has presence."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from emotune.services.validator.spec import spec_from_proto
from emotune.v1 import validator_pb2


def test_zero_thresholds_are_unset_and_an_explicit_zero_margin_is_kept() -> None:
    spec = spec_from_proto(validator_pb2.ValidationSpec(dataset_artifact="d", styles_yaml="s", dedup_threshold=0.0))
    assert (spec.similarity_threshold, spec.dedup_threshold, spec.off_style_margin) == (None, None, None)
    assert (spec.embedder, spec.output_prefix, spec.keep_per_question) == ("", "", 0)
    margin = spec_from_proto(validator_pb2.ValidationSpec(dataset_artifact="d", styles_yaml="s", off_style_margin=0.0,
                                                          similarity_threshold=0.3))
    assert (margin.off_style_margin, margin.similarity_threshold) == (0.0, 0.3)


def test_a_missing_dataset_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        spec_from_proto(validator_pb2.ValidationSpec(styles_yaml="s"))
    assert info.value.errors()[0]["loc"] == ("dataset_artifact",)
