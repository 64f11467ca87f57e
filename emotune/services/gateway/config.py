"""Options of the gateway (each one an ``EMOTUNE_*`` environment variable)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from emotune.errors import InvalidInput
from emotune.projects import DEFAULT_PROJECT, validate_project
from emotune.settings import Settings
from emotune.store.files import MAX_UPLOAD_BYTES


@dataclass(frozen=True)
class KeyGrant:
    """One accepted API key: the project it acts for, and whether it sees every project's objects (admin)."""

    key: str
    project: str = DEFAULT_PROJECT
    admin: bool = False

    def __repr__(self) -> str:  # never the key itself
        return f"KeyGrant(project={self.project!r}, admin={self.admin})"


def read_projects_file(path: Path) -> list[KeyGrant]:
    """The projects file (TOML)::

        [projects.acme]
        keys = ["sk-acme-1", "sk-acme-2"]

        [projects.ops]
        keys = ["sk-ops-1"]
        admin = true        # these keys see (and may cancel, delete) every project's objects

    Errors name the project, never a key."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not TOML ({exc})") from None
    projects = doc.get("projects")
    if not isinstance(projects, dict) or set(doc) - {"projects"}:
        raise ValueError(f"{path}: expected only [projects.<name>] tables")
    grants = []
    for name, table in projects.items():
        try:
            validate_project(name)
        except InvalidInput as exc:
            raise ValueError(f"{path}: {exc.message}") from None
        keys, admin = (table.get("keys"), table.get("admin", False)) if isinstance(table, dict) else (None, None)
        if not isinstance(table, dict) or set(table) - {"keys", "admin"} or not isinstance(admin, bool) \
                or not isinstance(keys, list) or not all(isinstance(k, str) and k.strip() for k in keys):
            raise ValueError(f"{path}: [projects.{name}] takes keys = [\"<key>\", ...] (non-empty strings) "
                             "and admin = true|false, nothing else")
        grants += [KeyGrant(key.strip(), name, admin) for key in keys]
    return grants


class GatewaySettings(Settings):
    gateway_host: str = Field("127.0.0.1", description="interface to listen on (0.0.0.0 in containers)")
    gateway_port: int = Field(8000, description="HTTP port of the API (/metrics is on EMOTUNE_METRICS_PORT)")
    gateway_api_keys: SecretStr | None = Field(
        None, description="accepted API keys, comma-separated (or the secret file /run/secrets/gateway_api_keys)")
    gateway_api_keys_file: Path | None = Field(
        None, description="file with one accepted API key per line ('#' comments); adds to gateway_api_keys")
    gateway_projects_file: Path | None = Field(
        None, description="TOML file mapping projects (tenants) to their keys: [projects.<name>] keys = [...], "
        "admin = true|false (docs/gateway.md); the keys of gateway_api_keys(_file) are the 'default' project's")
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
        if not self.dev_mode and not self.key_grants():
            raise ValueError("EMOTUNE_ENV=prod needs API keys: set EMOTUNE_GATEWAY_API_KEYS, "
                             "EMOTUNE_GATEWAY_API_KEYS_FILE, EMOTUNE_GATEWAY_PROJECTS_FILE or the secret "
                             "gateway_api_keys")
        return self

    def api_keys(self) -> list[str]:
        """Every configured key (empty: authentication is off, allowed in dev mode only)."""
        keys = self.gateway_api_keys.get_secret_value().split(",") if self.gateway_api_keys else []
        if self.gateway_api_keys_file:
            keys += [line for line in self.gateway_api_keys_file.read_text(encoding="utf-8").splitlines()
                     if not line.lstrip().startswith("#")]
        return [key.strip() for key in keys if key.strip()]

    def key_grants(self) -> list[KeyGrant]:
        """Every accepted key with its project: the flat keys are the default project's, then the projects file's.
        A key given to two projects is refused (which project would own what it creates?)."""
        grants = [KeyGrant(key) for key in self.api_keys()]
        if self.gateway_projects_file:
            grants += read_projects_file(self.gateway_projects_file)
        owners: dict[str, str] = {}
        for grant in grants:
            if owners.setdefault(grant.key, grant.project) != grant.project:
                raise ValueError(f"one API key is given to two projects ({owners[grant.key]!r} and "
                                 f"{grant.project!r}): a key belongs to one project")
        return grants

    @property
    def cors_origins(self) -> list[str]:
        return [origin.strip() for origin in self.gateway_cors_origins.split(",") if origin.strip()]
