"""Datagen options: every field is an ``EMOTUNE_*`` environment variable (e.g. ``EMOTUNE_DATAGEN_SHARD_SIZE``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from emotune.basemodels import DEFAULT_BASE_MODEL
from emotune.settings import Settings
from services.datagen.teachers import PromptFormat

Provider = Literal["openai", "zhipuai"]


class DatagenSettings(Settings):
    # The teacher used when a job names none: emotune's own gateway serving the local base model (offline).
    datagen_teacher_provider: Provider = Field("openai", description="default teacher protocol")
    datagen_teacher_base_url: str = Field(
        "http://127.0.0.1:8000/v1", description="default teacher endpoint (emotune's gateway, OpenAI-compatible)"
    )
    datagen_teacher_model: str = Field(DEFAULT_BASE_MODEL, description="default teacher model id")
    datagen_teacher_api_key_env: str = Field(
        "", description="name of the env var holding the default teacher's API key ('' = endpoint needs none)"
    )
    datagen_teacher_prompt_format: PromptFormat = Field(
        "chat", description="how the default teacher is asked: 'chat' (few-shot as chat turns) or 'completion' "
                            "(few-shot as one chat-log document on /v1/completions, for a base-model teacher)")

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
        None, description="YAML file replacing the built-in post-processing rules (services/datagen/rules.yaml)"
    )

    def provider_max_concurrency(self, provider: Provider) -> int:
        return self.datagen_zhipuai_max_concurrency if provider == "zhipuai" else self.datagen_openai_max_concurrency
