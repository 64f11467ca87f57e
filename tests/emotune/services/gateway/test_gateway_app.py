"""The app factory (features, API keys from settings and files, production guard), on a real server."""

from __future__ import annotations

from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from pydantic import SecretStr, ValidationError

from emotune.services.gateway.app import load_features
from emotune.services.gateway.auth import ApiKeys, Caller
from emotune.services.gateway.config import GatewaySettings
from emotune.services.gateway.feature import Feature
from tests.emotune.services.gateway.conftest import start_gateway
from tests.emotune.services.gateway.test_tenants import ACME, ADMIN, BETA, FLAT, PROJECTS_TOML


def test_keys_come_from_the_variable_and_the_file(tmp_path):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# rotated 2026-11\nsk-from-file-1\n\n  sk-from-file-2  \n", encoding="utf-8")
    settings = GatewaySettings(gateway_api_keys=SecretStr("sk-env-1, sk-env-2,"), gateway_api_keys_file=keys_file)
    assert settings.api_keys() == ["sk-env-1", "sk-env-2", "sk-from-file-1", "sk-from-file-2"]
    keys = ApiKeys(settings.api_keys())
    assert keys.accepts("sk-from-file-2") and keys.accepts("sk-env-1")
    assert not keys.accepts("sk-env") and not keys.accepts("sk-env-1 ") and not keys.accepts("")


def test_the_projects_file_maps_keys_to_projects_and_never_shows_a_key(tmp_path) -> None:
    path = tmp_path / "projects.toml"
    path.write_text(PROJECTS_TOML, encoding="utf-8")
    keys = ApiKeys(GatewaySettings(gateway_api_keys=SecretStr(FLAT), gateway_projects_file=path).key_grants())
    assert keys.identify(ACME) == Caller("acme") and keys.identify(BETA) == Caller("beta")
    assert keys.identify(ADMIN) == Caller("ops", admin=True) and keys.identify(FLAT) == Caller("default")
    assert keys.identify("sk-acme-key") is None and keys.identify("") is None
    assert Caller("ops", admin=True).sees("acme") and not Caller("beta").sees("acme")
    assert Caller("default").sees(None) and not Caller("acme").sees(None)  # stored before projects: default's

    for text, problem in ((f'[projects.acme]\nkeys = ["{ACME}"]\n[projects.beta]\nkeys = ["{ACME}"]\n',
                           "two projects"),
                          ('[projects."../x"]\nkeys = ["sk-secret-value"]\n', "project name"),
                          ('[projects.acme]\nkeys = "sk-secret-value"\n', "takes keys"),
                          ('[projects.acme]\nkeys = ["sk-secret-value"]\nadmin = "yes"\n', "takes keys")):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=problem) as info:
            GatewaySettings(gateway_projects_file=path).key_grants()
        assert ACME not in str(info.value) and "sk-secret-value" not in str(info.value)


def test_production_refuses_to_start_without_real_keys():
    with pytest.raises(ValidationError, match="needs API keys"):
        GatewaySettings(env="prod")
    with pytest.raises(ValidationError, match="placeholder"):
        GatewaySettings(env="prod", gateway_api_keys=SecretStr("changeme"))
    assert GatewaySettings(env="prod", gateway_api_keys=SecretStr("sk-a-real-key")).api_keys() == ["sk-a-real-key"]


def test_default_features_are_health_models_and_chat():
    prefixes = {route.path for feature in load_features() for route in feature.router.routes}
    assert {"/healthz", "/readyz", "/v1/models", "/v1/chat/completions"} <= prefixes
    assert "/metrics" not in prefixes  # served on its own port by python -m emotune.services.gateway


async def test_a_feature_plugs_in_with_its_lifespan_and_the_key_check(monkeypatch):
    started: list[str] = []
    router = APIRouter(prefix="/v1/echo")

    @router.get("")
    async def echo(request: Request) -> dict[str, str]:
        return {"service": request.app.state.echo}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.echo = "ready"
        started.append("up")
        yield
        started.append("down")

    features = [*load_features(), Feature(router, lifespan=lifespan)]
    monkeypatch.setattr("emotune.services.gateway.app.load_features", lambda: features)
    gateway = await start_gateway("127.0.0.1:9")
    try:
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            assert (await http.get("/v1/echo")).status_code == 401
            answer = await http.get("/v1/echo", headers={"Authorization": "Bearer sk-emotune-test-one"})
            assert answer.json() == {"service": "ready"}
            assert (await http.get("/healthz")).status_code == 200
            missing = await http.get("/v1/nothing-here", headers={"Authorization": "Bearer sk-emotune-test-one"})
        assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}
    finally:
        await gateway.stop()
    assert started == ["up", "down"]
