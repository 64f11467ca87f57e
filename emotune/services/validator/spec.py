"""The validation job spec, and :func:`spec_from_proto`, where the ``emotune.v1.ValidationSpec`` message becomes it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from emotune.grpc.fields import set_fields

if TYPE_CHECKING:
    from emotune.v1 import validator_pb2


class ValidationSpec(BaseModel):
    """A validation job's spec (the proto ``ValidationSpec``; unset thresholds = the embedder's calibrated ones)."""

    model_config = ConfigDict(extra="forbid")
    dataset_artifact: str = Field(min_length=1)
    styles_yaml: str = Field(min_length=1)
    embedder: str = ""
    # Threshold on the style lift (mean cosine to the style's references minus to neutral text).
    similarity_threshold: float | None = Field(None, ge=-2.0, le=2.0)
    off_style_margin: float | None = Field(None, ge=-2.0, le=2.0)
    dedup_threshold: float | None = Field(None, gt=0.0, le=1.0)
    output_prefix: str = ""
    # Best-of-N: the best this many passing samples per style and question (0 = all).
    keep_per_question: int = Field(0, ge=0, le=100)


def spec_from_proto(message: validator_pb2.ValidationSpec) -> ValidationSpec:
    """The spec :meth:`Validator.check_spec` takes, from the fields the sender set
    (:func:`emotune.grpc.fields.set_fields`): a 0 threshold is unset, so the calibrated one applies (proto3 has no
    unset doubles); ``off_style_margin`` is ``optional``, so an explicit 0 is kept."""
    return ValidationSpec.model_validate(set_fields(message))
