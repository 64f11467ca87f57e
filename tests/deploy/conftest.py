"""Session fixtures of the deployment tests (the helpers live in deploykit.py)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.deploy.deploykit import (
    K8S,
    RepoService,
    compose_cmd,
    compose_variants,
    filled_env_file,
    k8s_overlays,
    kubectl,
    repo_services,
    run,
)


@pytest.fixture(scope="session")
def services() -> dict[str, RepoService]:
    return repo_services()


@pytest.fixture(scope="session")
def rendered_compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """variant -> the configuration docker compose would run (``docker-compose config --format json``)."""
    tmp = tmp_path_factory.mktemp("compose")
    env_file = filled_env_file(tmp)
    return {name: json.loads(run([*compose_cmd(args, env_file), "config", "--format", "json"]).stdout)
            for name, args in compose_variants().items()}


@pytest.fixture(scope="session")
def rendered_k8s() -> dict[str, list[dict]]:
    """overlay -> the manifests ``kubectl kustomize`` renders for it."""
    rendered = {}
    for overlay in k8s_overlays():
        out = run([kubectl(), "kustomize", str(K8S / "overlays" / overlay)]).stdout
        rendered[overlay] = [doc for doc in yaml.safe_load_all(out) if doc]
    return rendered
