"""Which model the teacher answers with: the request's own, else the operator's teacher's, else the job's base
model (the pipeline sends it as ``student_model``). A regression made every offline job taught by its 0.5B student
while the embedded stack had set the packaged 1.5B as the default teacher: the pipeline sent the base model as the
teacher's ``model``, which overrides the operator's."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from emotune.errors import InvalidInput
from emotune.fine_tuning.protocol import TeacherOptions
from emotune.grpc.fields import set_fields
from emotune.services.datagen.config import DatagenSettings, TeacherProfile
from emotune.services.datagen.spec import prepare_spec
from emotune.services.pipeline.stages import teacher_config

STYLES_YAML = """\
styles:
  - name: 温柔
    system_prompt: 你是一个温柔的朋友
"""


def _teacher_model(settings: DatagenSettings, options: TeacherOptions | None, zhipuai: bool = False) -> str:
    """The model datagen resolves for a job on qwen2.5-0.5b, from the pipeline's request as it travels (proto ->
    dict, as datagen's server reads it)."""
    teacher = set_fields(teacher_config("qwen2.5-0.5b", options, zhipuai))
    request = {"styles_yaml": STYLES_YAML, "questions": {"questions": ["今天好累"]}, "teacher": teacher}
    return prepare_spec(request, settings, "datasets/a").teacher.model


def test_the_operators_default_teacher_model_is_kept_for_a_job_that_names_no_teacher() -> None:
    assert _teacher_model(DatagenSettings(datagen_teacher_model="qwen2.5-1.5b"), None) == "qwen2.5-1.5b"


def test_without_an_operator_model_the_student_teaches_itself() -> None:
    assert _teacher_model(DatagenSettings(), None) == "qwen2.5-0.5b"


def test_a_named_teacher_uses_its_own_model_and_the_job_may_pick_another() -> None:
    settings = DatagenSettings(datagen_teacher_model="qwen2.5-1.5b", datagen_teachers={
        "api": TeacherProfile(base_url="https://api.example.com/v1", model="deepseek-chat")})
    assert _teacher_model(settings, TeacherOptions(name="api")) == "deepseek-chat"
    assert _teacher_model(settings, TeacherOptions(name="api", model="deepseek-reasoner")) == "deepseek-reasoner"
    assert _teacher_model(settings, TeacherOptions(model="qwen2.5-0.5b")) == "qwen2.5-0.5b"  # default, other model


def test_zhipuai_keeps_its_model() -> None:
    assert _teacher_model(DatagenSettings(), None, zhipuai=True) == "glm-4-flash"


def test_an_operators_named_teacher_must_name_its_model() -> None:
    with pytest.raises(ValidationError, match="teacher 'api' needs a model"):
        DatagenSettings(datagen_teachers={"api": TeacherProfile(base_url="https://api.example.com/v1")})


def test_a_request_without_any_model_is_refused_naming_the_field() -> None:
    request = {"styles_yaml": STYLES_YAML, "questions": {"questions": ["今天好累"]}}
    with pytest.raises(InvalidInput, match="EMOTUNE_DATAGEN_TEACHER_MODEL") as info:
        prepare_spec(request, DatagenSettings(), "datasets/a")
    assert info.value.details["field"] == "teacher.model"
