"""The generation job spec: validated once at submission, stored with the job, re-read on resume.

Defaults (teacher, timeouts, retries, concurrency) are resolved from the service settings *at submission* and
written into the stored spec, so a job resumed after a restart behaves the same even if the settings changed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emotune.errors import InvalidInput
from emotune.importers import QUESTION_FORMATS
from emotune.store.keys import validate_key
from emotune.styles import StylesDocument, parse_styles
from services.datagen.config import DatagenSettings, Provider
from services.datagen.plan import MODES
from services.datagen.teachers import PromptFormat

STYLES_SOURCE = "spec.styles_yaml"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeacherSpec(_Spec):
    provider: Provider
    base_url: str = ""
    model: str = Field(min_length=1)
    api_key_env: str = Field("", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$|^$")
    max_concurrency: int = Field(ge=1)
    requests_per_second: float = Field(0.0, ge=0)
    timeout_seconds: float = Field(gt=0)
    max_retries: int = Field(ge=0, le=50)
    max_tokens: int = Field(ge=1)
    stop: list[str] = Field(default_factory=list, max_length=4)  # OpenAI's limit
    # "completion": few-shot as one chat-log document on /completions (OpenAI-compatible teachers only).
    prompt_format: PromptFormat = "chat"

    @field_validator("base_url")
    @classmethod
    def _http(cls, url: str) -> str:
        if url and not url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
        return url.rstrip("/")


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


def _without_empty(data: dict[str, Any]) -> dict[str, Any]:
    """Proto3 sends "" / 0 for unset scalars: drop them so the defaults below apply."""
    return {k: v for k, v in data.items() if v not in ("", 0, 0.0, None, [], {})}


def prepare_spec(request: dict[str, Any], settings: DatagenSettings, output_prefix: str) -> GenerationSpec:
    """Validate a submitted spec (a dict shaped like the ``GenerationSpec`` proto) and fill in every default.

    Raises :class:`InvalidInput` naming the field (or the styles file line) that is wrong.
    """
    data = {k: v for k, v in request.items() if k != "resume_job_id"}
    teacher = _without_empty(dict(data.get("teacher") or {}))
    # max_retries is `optional` in the proto: 0 is a real value, absence means "default".
    retries = (data.get("teacher") or {}).get("max_retries")
    provider = teacher.get("provider") or settings.datagen_teacher_provider
    # Naming no endpoint means the configured default teacher (its URL, model and key variable).
    default_endpoint = provider == settings.datagen_teacher_provider and not teacher.get("base_url")
    cap = settings.provider_max_concurrency(provider)  # type: ignore[arg-type]
    data["teacher"] = {
        "provider": provider,
        "base_url": teacher.get("base_url") or (settings.datagen_teacher_base_url if default_endpoint else ""),
        "model": teacher.get("model") or (settings.datagen_teacher_model if default_endpoint else ""),
        "api_key_env": teacher.get("api_key_env") or (settings.datagen_teacher_api_key_env if default_endpoint
                                                      else ""),
        "max_concurrency": min(teacher.get("max_concurrency") or cap, cap),
        "requests_per_second": teacher.get("requests_per_second", 0.0),
        "timeout_seconds": teacher.get("timeout_seconds") or settings.datagen_timeout_seconds,
        "max_retries": settings.datagen_max_retries if retries is None else retries,
        "max_tokens": teacher.get("max_tokens") or settings.datagen_max_tokens,
        "stop": teacher.get("stop") or settings.datagen_teacher_stop,
        "prompt_format": teacher.get("prompt_format") or (settings.datagen_teacher_prompt_format
                                                          if default_endpoint else "chat"),
    }
    if provider == "openai" and not data["teacher"]["base_url"]:
        raise InvalidInput("an OpenAI-compatible teacher needs a base_url", field="teacher.base_url")
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
    if spec.mode != "combinatorial" and not (spec.questions.artifact_key or spec.questions.questions):
        raise InvalidInput(f"mode {spec.mode!r} needs questions: an artifact_key or inline questions",
                           field="questions")
    return spec
