"""Datagen options: every field is an ``EMOTUNE_*`` environment variable (e.g. ``EMOTUNE_DATAGEN_SHARD_SIZE``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from emotune.services.datagen.teachers import PromptFormat
from emotune.settings import Settings

Provider = Literal["openai", "zhipuai"]
DEFAULT_TEACHER = "default"
ZHIPUAI_TEACHER = "zhipuai"
ZHIPUAI_DEFAULT_MODEL = "glm-4-flash"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$|^$"



def http_base_url(url: str) -> str:
    """A teacher's base URL: empty, or http(s) without a trailing slash."""
    if url and not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
    return url.rstrip("/")

class TeacherProfile(BaseModel):
    """A teacher the operator names: where it is, which model, where its key comes from, and its limits.

    A job picks one by name and may override the model; the endpoint and the key are never the request's."""

    model_config = ConfigDict(extra="forbid")

    provider: Provider = "openai"
    base_url: str = Field("", description="OpenAI-compatible endpoint; '' for ZhipuAI = the SDK's endpoint")
    model: str = Field("", description="'' = the job's base model (the student teaches itself; 'default' only)")
    api_key_env: str = Field("", pattern=ENV_NAME, description="variable (or /run/secrets file) of the datagen "
                             "process holding the key; '' = none (ZhipuAI: ZHIPUAI_API_KEY)")
    max_concurrency: int = Field(0, ge=0, description="in-flight requests of one job (0 = the provider cap)")
    requests_per_second: float = Field(0.0, ge=0, description="per-job rate cap (0 = none)")
    timeout_seconds: float = Field(0.0, ge=0, description="0 = EMOTUNE_DATAGEN_TIMEOUT_SECONDS")
    max_tokens: int = Field(0, ge=0, description="0 = EMOTUNE_DATAGEN_MAX_TOKENS")
    stop: list[str] = Field(default_factory=list, max_length=4)
    prompt_format: PromptFormat = "chat"

    @field_validator("base_url")
    @classmethod
    def _http(cls, url: str) -> str:
        return http_base_url(url)


class DatagenSettings(Settings):
    # The teacher used when a job names none: emotune's own gateway serving a local model (offline); with no model
    # set, the job's own base model (context distillation).
    datagen_teacher_provider: Provider = Field("openai", description="default teacher protocol")
    datagen_teacher_base_url: str = Field(
        "http://127.0.0.1:8000/v1", description="default teacher endpoint (emotune's gateway, OpenAI-compatible)"
    )
    datagen_teacher_model: str = Field(
        "", description="default teacher model id ('' = the job's base model: the student teaches itself)")
    datagen_teacher_api_key_env: str = Field(
        "", description="name of the env var holding the default teacher's API key ('' = endpoint needs none)"
    )
    datagen_teacher_prompt_format: PromptFormat = Field(
        "chat", description="how the default teacher is asked: 'chat' (few-shot as chat turns) or 'completion' "
                            "(few-shot as one chat-log document on /v1/completions, for a base-model teacher)")
    # More teachers a job may name (the two above are the teacher named "default"; "zhipuai" is built in).
    datagen_teachers: dict[str, TeacherProfile] = Field(
        default_factory=dict, description='the operator\'s named teachers, as JSON: {"deepseek": {"provider": '
        '"openai", "base_url": "https://api.deepseek.com/v1", "model": "deepseek-chat", "api_key_env": '
        '"DEEPSEEK_API_KEY", "max_concurrency": 8}}; a job picks one with teacher.name')
    datagen_teacher_allow_request_url: bool = Field(
        False, description="let a job name its own teacher URL (OpenAI-compatible, public addresses only, sent "
                           "no server key); off: jobs pick a named teacher only")

    # Per-provider caps shared by every job of this process (an account's limits, not a job's wish).
    datagen_openai_max_concurrency: int = Field(32, ge=1, description="in-flight requests per OpenAI-compatible "
                                                "endpoint")
    datagen_zhipuai_max_concurrency: int = Field(5, ge=1, description="in-flight requests to ZhipuAI (its "
                                                 "default account limit)")

    # Per-request behaviour (a job's teacher config may override each).
    datagen_timeout_seconds: float = Field(60.0, gt=0, description="one teacher request's timeout")
    datagen_max_retries: int = Field(6, ge=0, description="retries of a retryable teacher error per sample")
    datagen_backoff_initial_seconds: float = Field(1.0, ge=0, description="first retry wait (doubles each time)")
    datagen_backoff_max_seconds: float = Field(60.0, ge=0, description="longest wait between two retries, "
                                               "also the cap on a server's Retry-After")
    datagen_max_tokens: int = Field(512, ge=1, description="max_tokens sent with each teacher request")
    datagen_teacher_stop: list[str] = Field(
        default_factory=list, description='stop strings sent with each single-reply teacher request, as JSON, e.g. '
        '["\\n"]: one paragraph from a base-model teacher that would otherwise ramble to max_tokens')

    # Output
    datagen_shard_size: int = Field(200, ge=1, description="outcomes per shard object (a full shard is written "
                                    "at once)")
    datagen_flush_seconds: float = Field(5.0, gt=0, description="a partial shard is written after this long, so "
                                         "a crash loses at most this much work")
    datagen_progress_seconds: float = Field(2.0, gt=0, description="interval of progress events")
    datagen_max_jobs: int = Field(2, ge=1, description="generation jobs run at the same time")
    datagen_postprocess_rules: Path | None = Field(
        None, description="YAML file replacing the built-in post-processing rules (emotune/services/datagen/rules.yaml)"
    )

    @field_validator("datagen_teachers")
    @classmethod
    def _names(cls, teachers: dict[str, TeacherProfile]) -> dict[str, TeacherProfile]:
        for name, profile in teachers.items():
            if name == DEFAULT_TEACHER or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
                raise ValueError(f"teacher name {name!r}: letters, digits, '_.-' and not {DEFAULT_TEACHER!r} (set "
                                 "that one with EMOTUNE_DATAGEN_TEACHER_*)")
            if not profile.model:
                raise ValueError(f"teacher {name!r} needs a model")
        return teachers

    def teachers(self) -> dict[str, TeacherProfile]:
        """Every teacher a job may name: "default" (EMOTUNE_DATAGEN_TEACHER_*), "zhipuai" (the SDK's endpoint
        with ZHIPUAI_API_KEY; may be redefined) and the operator's ``datagen_teachers``."""
        default = TeacherProfile(
            provider=self.datagen_teacher_provider, base_url=self.datagen_teacher_base_url,
            model=self.datagen_teacher_model, api_key_env=self.datagen_teacher_api_key_env,
            stop=self.datagen_teacher_stop, prompt_format=self.datagen_teacher_prompt_format)
        zhipuai = TeacherProfile(provider="zhipuai", model=ZHIPUAI_DEFAULT_MODEL)
        return {DEFAULT_TEACHER: default, ZHIPUAI_TEACHER: zhipuai, **self.datagen_teachers}

    def provider_max_concurrency(self, provider: Provider) -> int:
        return self.datagen_zhipuai_max_concurrency if provider == "zhipuai" else self.datagen_openai_max_concurrency
