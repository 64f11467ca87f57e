"""The generation job spec: validated once at submission, stored with the job, re-read on resume.

Defaults (teacher, timeouts, retries, concurrency) are resolved from the service settings *at submission* and
written into the stored spec, so a job resumed after a restart behaves the same even if the settings changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emotune.data.importers import QUESTION_FORMATS
from emotune.data.styles import StylesDocument, parse_styles
from emotune.errors import FailedPrecondition, InvalidInput
from emotune.grpc.fields import set_fields
from emotune.services.datagen.config import (
    DEFAULT_TEACHER,
    ZHIPUAI_TEACHER,
    DatagenSettings,
    Provider,
    TeacherProfile,
    http_base_url,
)
from emotune.services.datagen.egress import check_request_url
from emotune.services.datagen.plan import MODES
from emotune.services.datagen.teachers import PromptFormat, resolve_api_key
from emotune.store.keys import validate_key

if TYPE_CHECKING:
    from emotune.v1 import datagen_pb2

STYLES_SOURCE = "spec.styles_yaml"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeacherSpec(_Spec):
    # The operator's teacher (settings.teachers()); "" = a URL the request chose (only when the operator allows
    # it: no server key, public addresses only). A named teacher's endpoint and key are looked up by name when
    # the job runs; base_url is stored for the record.
    name: str = ""
    provider: Provider
    base_url: str = ""
    model: str = Field(min_length=1)
    max_concurrency: int = Field(ge=1)
    requests_per_second: float = Field(0.0, ge=0)
    timeout_seconds: float = Field(gt=0)
    max_retries: int = Field(ge=0, le=50)
    max_tokens: int = Field(ge=1)
    stop: list[str] = Field(default_factory=list, max_length=4)  # OpenAI's limit
    # "completion": few-shot as one chat-log document on /completions (OpenAI-compatible teachers only).
    prompt_format: PromptFormat = "chat"

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        """A spec stored before teachers were named (it held ``api_key_env``, no name) runs on the operator's
        teacher of its provider: its own URL and key variable are never used again."""
        if isinstance(data, dict) and "name" not in data and "api_key_env" in data:
            data = {k: v for k, v in data.items() if k != "api_key_env"}
            data["name"] = ZHIPUAI_TEACHER if data.get("provider") == "zhipuai" else DEFAULT_TEACHER
        return data

    @field_validator("base_url")
    @classmethod
    def _http(cls, url: str) -> str:
        return http_base_url(url)


class QuestionSourceSpec(_Spec):
    artifact_key: str = ""
    format: str = ""
    field_path: str = ""
    questions: list[str] = Field(default_factory=list)
    limit: int = Field(0, ge=0)

    @field_validator("format")
    @classmethod
    def _known_format(cls, format: str) -> str:
        if format and format not in QUESTION_FORMATS:
            raise ValueError(f"unknown format {format!r}; known: {', '.join(QUESTION_FORMATS)}")
        return format

    @field_validator("artifact_key")
    @classmethod
    def _valid_key(cls, key: str) -> str:
        return validate_key(key.rstrip("/")) if key else key


class GenerationSpec(_Spec):
    styles_yaml: str = Field(min_length=1)
    style_names: list[str] = Field(default_factory=list)
    questions: QuestionSourceSpec = Field(default_factory=QuestionSourceSpec)
    teacher: TeacherSpec
    mode: str = "single"
    variants_per_question: int = Field(1, ge=1, le=100)
    seed: int = 0
    output_prefix: str = Field(min_length=1)
    # mode context: the dataset artifact whose samples get an opening
    samples_artifact: str = ""
    # The job whose shards this one continues (set when submitted with resume_job_id).
    resumed_from: str = ""

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
        return mode

    @field_validator("output_prefix")
    @classmethod
    def _valid_prefix(cls, prefix: str) -> str:
        return validate_key(prefix.strip("/"))

    @property
    def shards_prefix(self) -> str:
        return f"{self.output_prefix}/shards"

    def styles(self) -> StylesDocument:
        return parse_styles(self.styles_yaml, STYLES_SOURCE)


def spec_from_proto(message: datagen_pb2.GenerationSpec) -> dict[str, Any]:
    """The request :meth:`DatagenService.start` hands to :func:`prepare_spec`: the fields the sender set
    (:func:`emotune.grpc.fields.set_fields`; ``teacher.max_retries`` is ``optional``, so an explicit 0 is kept)."""
    return set_fields(message)


def _without_empty(data: dict[str, Any]) -> dict[str, Any]:
    """An empty or zero value means unset (:mod:`emotune.grpc.fields`), in a request written by hand (the CLI's)
    too: drop them so the defaults below apply."""
    return {k: v for k, v in data.items() if v not in ("", 0, 0.0, None, [], {})}


def _pick_teacher(teacher: dict[str, Any], settings: DatagenSettings) -> tuple[str, TeacherProfile | None]:
    """(name, the operator's definition) of the teacher a request asks for; ("", None) for a URL of its own."""
    if teacher.get("api_key_env"):
        raise InvalidInput("a job cannot name a key variable: keys belong to the operator's named teachers; pick "
                           "one with teacher.name", field="teacher.api_key_env")
    if teacher.get("api_key"):
        raise InvalidInput("a job cannot carry a teacher key: pick one of the operator's named teachers with "
                           "teacher.name", field="teacher.api_key")
    name, url, provider = teacher.get("name", ""), teacher.get("base_url", ""), teacher.get("provider", "")
    teachers = settings.teachers()
    if name:
        if url:
            raise InvalidInput("a named teacher's endpoint is the operator's: give teacher.name or "
                               "teacher.base_url, not both", field="teacher.base_url")
        if name not in teachers:
            raise InvalidInput(f"unknown teacher {name!r}; this service's teachers: {', '.join(sorted(teachers))}",
                               field="teacher.name")
        if provider and provider != teachers[name].provider:
            raise InvalidInput(f"teacher {name!r} is a {teachers[name].provider} teacher, not {provider}",
                               field="teacher.provider")
        return name, teachers[name]
    if url:
        if not settings.datagen_teacher_allow_request_url:
            raise InvalidInput("this service takes no teacher URL from a request; pick a named teacher with "
                               f"teacher.name ({', '.join(sorted(teachers))})", field="teacher.base_url")
        if provider not in ("", "openai"):  # the ZhipuAI SDK would send the server's key to that URL
            raise InvalidInput("a teacher URL of the request's own must be OpenAI-compatible (provider 'openai')",
                               field="teacher.provider")
        return "", None
    if not provider or provider == settings.datagen_teacher_provider:
        return DEFAULT_TEACHER, teachers[DEFAULT_TEACHER]
    if provider == "zhipuai":
        return ZHIPUAI_TEACHER, teachers[ZHIPUAI_TEACHER]
    raise InvalidInput("an OpenAI-compatible teacher other than the default is picked by name (teacher.name)",
                       field="teacher.name")


def _lowest_limit(*limits: float) -> float:
    """The tightest of the given rate limits, 0 (none) counting as no limit."""
    return min((limit for limit in limits if limit), default=0.0)


def prepare_spec(request: dict[str, Any], settings: DatagenSettings, output_prefix: str) -> GenerationSpec:
    """Validate a submitted spec (:func:`spec_from_proto`'s dict, or one shaped like it) and fill in every default.

    Raises :class:`InvalidInput` naming the field (or the styles file line) that is wrong.
    """
    data = {k: v for k, v in request.items() if k != "resume_job_id"}
    teacher = _without_empty(dict(data.get("teacher") or {}))
    # max_retries is `optional` in the proto: 0 is a real value, absence means "default".
    retries = (data.get("teacher") or {}).get("max_retries")
    name, profile = _pick_teacher(teacher, settings)
    provider = profile.provider if profile else "openai"
    cap = settings.provider_max_concurrency(provider)
    if profile and profile.max_concurrency:
        cap = min(cap, profile.max_concurrency)
    data["teacher"] = {
        "name": name,
        "provider": provider,
        "base_url": profile.base_url if profile else teacher["base_url"],
        # A named teacher without a model of its own teaches with the job's base model (context distillation).
        "model": teacher.get("model") or ((profile.model or teacher.get("student_model", "")) if profile else ""),
        "max_concurrency": min(teacher.get("max_concurrency") or cap, cap),
        "requests_per_second": _lowest_limit(teacher.get("requests_per_second", 0.0),
                                             profile.requests_per_second if profile else 0.0),
        "timeout_seconds": teacher.get("timeout_seconds") or (profile and profile.timeout_seconds)
        or settings.datagen_timeout_seconds,
        "max_retries": settings.datagen_max_retries if retries is None else retries,
        "max_tokens": teacher.get("max_tokens") or (profile and profile.max_tokens) or settings.datagen_max_tokens,
        "stop": teacher.get("stop") or (profile and profile.stop) or settings.datagen_teacher_stop,
        "prompt_format": teacher.get("prompt_format") or (profile.prompt_format if profile else "chat"),
    }
    if not data["teacher"]["model"]:
        raise InvalidInput(f"teacher {name or 'of the request'!r} has no model: give teacher.model (a job's pipeline "
                           "sends its base model), or set EMOTUNE_DATAGEN_TEACHER_MODEL", field="teacher.model")
    if provider == "openai" and not data["teacher"]["base_url"]:
        raise InvalidInput(f"teacher {name!r} has no base_url in the service's settings", field="teacher.name")
    if provider == "zhipuai" and data["teacher"]["prompt_format"] != "chat":
        raise InvalidInput("the ZhipuAI teacher takes chat messages only (prompt_format 'chat')",
                           field="teacher.prompt_format")
    data["questions"] = _without_empty(dict(data.get("questions") or {}))
    data["output_prefix"] = data.get("output_prefix") or output_prefix
    data = {k: v for k, v in data.items() if v not in ("", None) or k in ("styles_yaml",)}
    try:
        spec = GenerationSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise InvalidInput(err["msg"], field=field) from None
    doc = spec.styles()
    for i, name in enumerate(spec.style_names):
        if name not in doc.names:
            raise InvalidInput(f"unknown style {name!r}; the styles document has {', '.join(doc.names)}",
                               field=f"style_names[{i}]")
    if spec.mode == "combinatorial" and doc.combinatorial is None:
        raise InvalidInput("mode 'combinatorial' needs a 'combinatorial' section (recipients, scenes) in the "
                           "styles document", file=STYLES_SOURCE, field="combinatorial")
    if spec.mode == "context":
        if not spec.samples_artifact:
            raise InvalidInput("mode 'context' needs samples_artifact: the dataset whose samples get an opening",
                               field="samples_artifact")
        validate_key(spec.samples_artifact)
    elif spec.mode != "combinatorial" and not (spec.questions.artifact_key or spec.questions.questions):
        raise InvalidInput(f"mode {spec.mode!r} needs questions: an artifact_key or inline questions",
                           field="questions")
    return spec


def teacher_access(teacher: TeacherSpec, settings: DatagenSettings) -> tuple[str, str, str | None]:
    """(provider, base_url, api_key) a stored spec's teacher is called with, decided by the settings now.

    A named teacher's endpoint and key come from the operator's definition of that name, never from the spec.
    A request-chosen URL is used only while the operator allows it, only if every address it resolves to is
    public, and with no key. Blocking (DNS, secret files): call it off the event loop.
    """
    if teacher.name:
        profile = settings.teachers().get(teacher.name)
        if profile is None:
            raise FailedPrecondition(f"teacher {teacher.name!r} is not defined in the datagen service's settings "
                                     "(any more)", field="teacher.name")
        key = resolve_api_key(teacher.name, profile.provider, profile.api_key_env, settings)
        return profile.provider, profile.base_url, key
    if not settings.datagen_teacher_allow_request_url:
        raise FailedPrecondition("this service takes no teacher URL from a request (any more)",
                                 field="teacher.base_url")
    check_request_url(teacher.base_url)
    return "openai", teacher.base_url, None
