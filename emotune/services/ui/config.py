"""Settings of the Streamlit UI: where the gateway is and the key to use (every field is an ``EMOTUNE_*`` var)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from emotune.settings import Settings


class UISettings(Settings):
    model_config = SettingsConfigDict(populate_by_name=True)  # UISettings(ui_api_key=...) as well as the env

    gateway_url: str = Field(
        "http://127.0.0.1:8000",
        description="base URL of the emotune gateway (in compose/k8s: http://gateway:8000); '/v1' is added",
    )
    ui_api_key: SecretStr | None = Field(
        None,
        description="one API key the UI sends for every visitor; unset (the default): each visitor enters their own "
                    "key, kept in their browser session only. Set it only where every visitor may use that key "
                    "(the embedded local stack, on 127.0.0.1)",
        validation_alias=AliasChoices("EMOTUNE_UI_API_KEY"),
    )
    ui_teachers: list[str] = Field(
        default_factory=lambda: ["default", "zhipuai"],
        description='teacher names the pipeline page offers, as JSON (["default", "deepseek"]): datagen\'s named '
                    "teachers (EMOTUNE_DATAGEN_TEACHERS); datagen refuses unknown names")
    ui_teacher_url_field: bool = Field(
        False, description="offer a teacher URL field on the pipeline page (only where datagen has "
                           "EMOTUNE_DATAGEN_TEACHER_ALLOW_REQUEST_URL on)")
    ui_request_timeout_seconds: float = Field(
        300.0, description="longest wait for one gateway call (CPU inference of a long answer can be slow)"
    )
    ui_max_retries: int = Field(
        0, ge=0, description="retries of failed gateway calls; 0 shows 'overloaded' to the user at once"
    )
    ui_bind: str = Field("127.0.0.1", description="interface Streamlit listens on (0.0.0.0 in containers)")
    ui_port: int = Field(8501, description="port Streamlit listens on")
    ui_poll_seconds: float = Field(2.0, gt=0, description="refresh interval of a running job's live progress")
    ui_default_max_tokens: int = Field(256, ge=1, description="initial value of the max-tokens control")

    @property
    def api_base(self) -> str:
        """The OpenAI-style base URL (``.../v1``) whatever form ``gateway_url`` was given in."""
        url = self.gateway_url.rstrip("/")
        return url if url.endswith("/v1") else f"{url}/v1"
