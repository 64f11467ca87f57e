"""Options of the gateway (each one an ``EMOTUNE_*`` environment variable)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from emotune.files import MAX_UPLOAD_BYTES
from emotune.settings import Settings


class GatewaySettings(Settings):
    gateway_host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0 in containers)")
    gateway_port: int = Field(8000, description="HTTP port of the API (/metrics is on EMOTUNE_METRICS_PORT)")
    gateway_api_keys: SecretStr | None = Field(
        None, description="accepted API keys, comma-separated (or the secret file /run/secrets/gateway_api_keys)")
    gateway_api_keys_file: Path | None = Field(
        None, description="file with one accepted API key per line ('#' comments); adds to gateway_api_keys")
    gateway_max_body_bytes: int = Field(
        1_000_000, ge=1024, description="largest request body (413 beyond), file uploads excepted")
    gateway_max_upload_bytes: int = Field(
        MAX_UPLOAD_BYTES, ge=1024, description="largest file uploaded to /v1/files (413 beyond); the multipart "
        "body is spooled to a temporary file (on disk beyond 1 MiB) and streamed to the store from there")
    gateway_max_messages: int = Field(256, ge=1, description="most messages in one chat request")
    gateway_max_tokens: int = Field(2048, ge=1, description="ceiling on max_tokens of a chat request")
    gateway_default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request sets none")
    gateway_max_concurrent: int = Field(
        64, ge=1, description="chat completions in flight at once; beyond it 429 with Retry-After")
    gateway_retry_after_seconds: int = Field(1, ge=1, description="Retry-After sent with the gateway's own 429")
    gateway_cors_origins: str = Field("", description="comma-separated allowed browser origins ('*' = any)")
    gateway_request_timeout_seconds: float = Field(
        600.0, gt=0, description="deadline of one generation upstream (the gRPC stream deadline)")

    @model_validator(mode="after")
    def _keys_required_in_prod(self) -> GatewaySettings:
        if not self.dev_mode and not self.api_keys():
            raise ValueError("EMOTUNE_ENV=prod needs API keys: set EMOTUNE_GATEWAY_API_KEYS, "
                             "EMOTUNE_GATEWAY_API_KEYS_FILE or the secret gateway_api_keys")
        return self

    def api_keys(self) -> list[str]:
        """Every configured key (empty: authentication is off, allowed in dev mode only)."""
        keys = self.gateway_api_keys.get_secret_value().split(",") if self.gateway_api_keys else []
        if self.gateway_api_keys_file:
            keys += [line for line in self.gateway_api_keys_file.read_text(encoding="utf-8").splitlines()
                     if not line.lstrip().startswith("#")]
        return [key.strip() for key in keys if key.strip()]

    @property
    def cors_origins(self) -> list[str]:
        return [origin.strip() for origin in self.gateway_cors_origins.split(",") if origin.strip()]
