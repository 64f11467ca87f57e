"""The one rule for "unset" in a request message (emotune.grpc.fields), which every service's spec_from_proto uses."""

from __future__ import annotations

from emotune.grpc.fields import set_fields
from emotune.v1 import datagen_pb2, trainer_pb2, validator_pb2


def test_a_scalar_at_its_zero_is_unset_and_an_optional_one_is_set_even_at_zero() -> None:
    assert set_fields(trainer_pb2.TrainingSpec(max_steps=0, backend="", packing=False, eval_fraction=0.0)) == {
        "packing": False, "eval_fraction": 0.0}
    assert set_fields(datagen_pb2.TeacherConfig(max_retries=0, max_tokens=0)) == {"max_retries": 0}


def test_sub_messages_repeated_fields_and_int64_come_back_as_plain_python() -> None:
    message = datagen_pb2.GenerationSpec(seed=2**40, style_names=["a", "b"], questions=datagen_pb2.QuestionSource(),
                                         teacher=datagen_pb2.TeacherConfig(model="m"))
    assert set_fields(message) == {"seed": 2**40, "style_names": ["a", "b"], "questions": {},
                                   "teacher": {"model": "m"}}
    scores = validator_pb2.ScoreResponse(scores=[validator_pb2.TextScore(passed=True), validator_pb2.TextScore()])
    assert set_fields(scores) == {"scores": [{"passed": True}, {}]}
