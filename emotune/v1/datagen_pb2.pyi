from emotune.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TeacherConfig(_message.Message):
    __slots__ = ("provider", "base_url", "model", "api_key_env", "max_concurrency", "requests_per_second", "timeout_seconds", "max_retries", "max_tokens", "prompt_format", "name", "student_model")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    BASE_URL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ENV_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STUDENT_MODEL_FIELD_NUMBER: _ClassVar[int]
    provider: str
    base_url: str
    model: str
    api_key_env: str
    max_concurrency: int
    requests_per_second: float
    timeout_seconds: float
    max_retries: int
    max_tokens: int
    prompt_format: str
    name: str
    student_model: str
    def __init__(self, provider: _Optional[str] = ..., base_url: _Optional[str] = ..., model: _Optional[str] = ..., api_key_env: _Optional[str] = ..., max_concurrency: _Optional[int] = ..., requests_per_second: _Optional[float] = ..., timeout_seconds: _Optional[float] = ..., max_retries: _Optional[int] = ..., max_tokens: _Optional[int] = ..., prompt_format: _Optional[str] = ..., name: _Optional[str] = ..., student_model: _Optional[str] = ...) -> None: ...

class QuestionSource(_message.Message):
    __slots__ = ("artifact_key", "format", "field_path", "questions", "limit")
    ARTIFACT_KEY_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    FIELD_PATH_FIELD_NUMBER: _ClassVar[int]
    QUESTIONS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    artifact_key: str
    format: str
    field_path: str
    questions: _containers.RepeatedScalarFieldContainer[str]
    limit: int
    def __init__(self, artifact_key: _Optional[str] = ..., format: _Optional[str] = ..., field_path: _Optional[str] = ..., questions: _Optional[_Iterable[str]] = ..., limit: _Optional[int] = ...) -> None: ...

class GenerationSpec(_message.Message):
    __slots__ = ("styles_yaml", "style_names", "questions", "teacher", "mode", "variants_per_question", "seed", "output_prefix", "resume_job_id", "samples_artifact")
    STYLES_YAML_FIELD_NUMBER: _ClassVar[int]
    STYLE_NAMES_FIELD_NUMBER: _ClassVar[int]
    QUESTIONS_FIELD_NUMBER: _ClassVar[int]
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_PER_QUESTION_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    RESUME_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    styles_yaml: str
    style_names: _containers.RepeatedScalarFieldContainer[str]
    questions: QuestionSource
    teacher: TeacherConfig
    mode: str
    variants_per_question: int
    seed: int
    output_prefix: str
    resume_job_id: str
    samples_artifact: str
    def __init__(self, styles_yaml: _Optional[str] = ..., style_names: _Optional[_Iterable[str]] = ..., questions: _Optional[_Union[QuestionSource, _Mapping]] = ..., teacher: _Optional[_Union[TeacherConfig, _Mapping]] = ..., mode: _Optional[str] = ..., variants_per_question: _Optional[int] = ..., seed: _Optional[int] = ..., output_prefix: _Optional[str] = ..., resume_job_id: _Optional[str] = ..., samples_artifact: _Optional[str] = ...) -> None: ...
