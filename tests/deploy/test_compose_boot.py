"""Every service boots with the environment compose gives it (EMOTUNE_ENV=prod, API keys, all interfaces),
translated to this machine: peers' host:port become loopback ports, the store a local directory, no model
preloaded, the images' llama.cpp (/opt/llama.cpp) this machine's build (scripts/llamacpp.sh); and with only the
Python packages its image installs importable (a site-packages view built from the Dockerfile's install
commands). Checks that the settings accept what the deployment passes, that the image has every package the
service imports at start, that every port a peer or Prometheus needs listens on all interfaces, and that the
gateway takes the internal key the UI and datagen are given."""

from __future__ import annotations

import os
import re
import subprocess
import time
from contextlib import contextmanager

import httpx
import psutil
import pytest

from emotune.grpc.probe import check as grpc_serving
from emotune.models.llamacpp import LlamaCpp
from emotune.settings import Settings
from tests.deploy.deploykit import REPO, compose_image, image_env, image_python
from tests.support import free_port

BOOT_SECONDS = 150


def container_ports(entry: dict) -> set[int]:
    return {int(p) for p in entry.get("expose", [])} | {int(p["target"]) for p in entry.get("ports", [])}


def local_llamacpp() -> str:
    """This machine's llama.cpp build, standing in for the images' /opt/llama.cpp (their EMOTUNE_LLAMACPP_DIR);
    fails naming scripts/llamacpp.sh when there is none."""
    settings = Settings()
    return str(LlamaCpp.locate(settings.cache_dir, settings.llamacpp_dir).root)


def loopback_env(name: str, compose: dict[str, dict], ports: dict[tuple[str, int], int], tmp_path) -> dict[str, str]:
    """The compose environment of ``name`` with compose hosts/ports mapped to loopback ports (and this machine's
    llama.cpp when the image has one)."""
    env = {}
    for key, value in compose[name]["environment"].items():
        if value is None:
            continue
        for (host, port), local in ports.items():
            value = re.sub(rf"\b{re.escape(host)}:{port}\b", f"127.0.0.1:{local}", value)
        if value.isdigit() and (name, int(value)) in ports:  # the service's own port settings
            value = str(ports[(name, int(value))])
        env[key] = value
    if "EMOTUNE_LLAMACPP_DIR" in image_env(compose_image(compose[name])):
        env["EMOTUNE_LLAMACPP_DIR"] = local_llamacpp()
    return {**os.environ, **env, "EMOTUNE_STORE_BACKEND": "local", "EMOTUNE_STORE_PATH": str(tmp_path / "store"),
            "EMOTUNE_CACHE_DIR": str(tmp_path / "cache"), "EMOTUNE_INFERENCE_PRELOAD": "",
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def healthy(name: str, service, ports: dict[tuple[str, int], int]) -> bool:
    if service.grpc_port is not None:
        return grpc_serving(f"127.0.0.1:{ports[(name, service.grpc_port)]}", timeout=1)
    path = "/_stcore/health" if name == "ui" else "/healthz"
    try:
        return httpx.get(f"http://127.0.0.1:{ports[(name, service.http_port)]}{path}", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def boot(names: list[str], compose: dict[str, dict], services, tmp_path, **overrides: str):
    """Start ``names`` as their compose entries and images run them (with ``overrides`` in their environment),
    and wait until each is healthy or has exited; yields (processes, compose port -> loopback port, crash
    reports) and stops them afterwards."""
    ports = {(name, port): free_port() for name in compose for port in container_ports(compose[name])}
    procs = {}
    for name in names:
        target = compose_image(compose[name])
        python, image_env = image_python(target, tmp_path / "images" / target)
        procs[name] = subprocess.Popen([*python, "-m", f"emotune.services.{name}"], cwd=REPO,
                                       env={**loopback_env(name, compose, ports, tmp_path), **image_env, **overrides},
                                       text=True,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        pending, deadline, crashed = set(names), time.monotonic() + BOOT_SECONDS, []
        while pending:
            for name in sorted(pending):
                if procs[name].poll() is not None:
                    error = procs[name].stderr.read().strip().splitlines()
                    crashed.append(f"{name} exited {procs[name].returncode}: " + " | ".join(error[-3:]))
                    pending.discard(name)
                elif healthy(name, services[name], ports):
                    pending.discard(name)
            assert time.monotonic() < deadline, f"not healthy after {BOOT_SECONDS} s: {sorted(pending)}"
            time.sleep(0.3)
        yield procs, ports, crashed
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.slow
def test_services_boot_with_the_compose_environment(services, rendered_compose, tmp_path):
    compose = rendered_compose["cpu"]["services"]
    names = [name for name, service in services.items() if service.built]
    with boot(names, compose, services, tmp_path) as (procs, ports, crashed):
        unreachable = []
        for name in (n for n in names if procs[n].poll() is None):
            listening = {c.laddr.port: c.laddr.ip for c in psutil.Process(procs[name].pid).net_connections("inet")
                         if c.status == psutil.CONN_LISTEN}
            for port in container_ports(compose[name]):
                local = ports[(name, port)]
                if listening.get(local) not in ("0.0.0.0", "::"):
                    unreachable.append(f"{name}: container port {port} listens on {listening.get(local)}")
        if procs.get("gateway") and procs["gateway"].poll() is None:
            api = f"http://127.0.0.1:{ports[('gateway', services['gateway'].http_port)]}/v1/models"
            internal_key = compose["datagen"]["environment"]["GATEWAY_API_KEY"]
            assert httpx.get(api, timeout=10).status_code == 401
            answer = httpx.get(api, headers={"Authorization": f"Bearer {internal_key}"}, timeout=30)
            assert answer.status_code == 200, answer.text
        problems = crashed + [f"unreachable from other containers / Prometheus: {u}" for u in unreachable]
        assert not problems, "with the compose environment and only their image's packages:\n" + "\n".join(problems)


def test_the_vllm_image_boots_its_inference_service(services, rendered_compose, tmp_path):
    """compose.vllm.yaml's inference (the vllm engine, EMOTUNE_INFERENCE_VLLM_* settings) starts and turns healthy
    with only the packages inference-vllm installs in its own virtualenv: the service needs nothing of vLLM's
    to start (it runs the `vllm` executable only when a model is loaded, and there is none here)."""
    compose = rendered_compose["gpu-vllm"]["services"]
    assert compose_image(compose["inference"]) == "inference-vllm"
    # no model (an empty value means the default, smollm2-135m; a lone comma lists none)
    with boot(["inference"], compose, services, tmp_path, EMOTUNE_INFERENCE_PRELOAD=",") as (_, _, crashed):
        assert not crashed, crashed
