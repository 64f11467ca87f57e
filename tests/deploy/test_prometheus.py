"""deploy/prometheus/prometheus.yml: promtool accepts it, it scrapes every service that has metrics, and a real
Prometheus (Debian package) started with its gateway job scrapes a running gateway on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings

import httpx
import openai
import pytest
import yaml

from tests.deploy.deploykit import PROMETHEUS_CONFIG, REPO, run, tool
from tests.support import free_port

PROMTOOL_HINT = "apt-get install prometheus (scripts/system-deps.sh)"


def scrape_jobs() -> dict[str, dict]:
    return {job["job_name"]: job for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}


def serves_metrics(service: str) -> bool:
    """A service whose code starts emotune's metrics server (itself, or through the shared gRPC start-up
    ``emotune.grpc.process.run_service``) or uses prometheus_client exposes /metrics."""
    return any(marker in path.read_text(encoding="utf-8")
               for path in (REPO / "emotune" / "services" / service).rglob("*.py")
               for marker in ("start_metrics_server", "run_service(", "prometheus_client"))


def test_promtool_accepts_the_config():
    out = run([tool("promtool", PROMTOOL_HINT), "check", "config", str(PROMETHEUS_CONFIG)])
    assert "SUCCESS" in out.stdout + out.stderr


def test_promtool_rejects_a_broken_config(tmp_path):
    broken = tmp_path / "prometheus.yml"
    broken.write_text(PROMETHEUS_CONFIG.read_text().replace("scrape_interval: 15s", "scrape_interval: soon", 1))
    assert run([tool("promtool", PROMTOOL_HINT), "check", "config", str(broken)], check=False).returncode != 0


def test_every_service_with_metrics_is_scraped_on_its_port(services, rendered_compose):
    jobs = scrape_jobs()
    compose = rendered_compose["gpu"]["services"]
    for service in services.values():
        if not serves_metrics(service.name):
            if service.built:
                assert service.name not in jobs, f"{service.name} has no /metrics but is scraped"
            else:
                warnings.warn(f"{service.name} is not built yet: its /metrics cannot be checked", stacklevel=1)
            continue
        assert service.name in jobs, f"no scrape job for {service.name}"
        targets = [t for group in jobs[service.name]["static_configs"] for t in group["targets"]]
        # every service serves /metrics on a port of its own, the gateway too (never its public API port)
        port = int(compose[service.name]["environment"]["EMOTUNE_METRICS_PORT"])
        assert service.metrics_port in (None, port), f"{service.name}: compose metrics port != the code's default"
        assert str(port) in compose[service.name].get("expose", []), f"{service.name}: metrics port not exposed"
        published = {str(p["target"]) for p in compose[service.name].get("ports", [])}
        assert str(port) not in published, f"{service.name}: metrics port published outside the compose network"
        assert targets == [f"{service.name}:{port}"], f"{service.name}: scrape target {targets}, expected port {port}"
    for job in jobs.values():
        for group in job["static_configs"]:
            for target in group["targets"]:
                host = target.rsplit(":", 1)[0]
                assert host == "localhost" or host in compose, f"job {job['job_name']} scrapes unknown host {host}"


# ---------------------------------------------------------------------------------------------------------------
# A real Prometheus scraping a real gateway


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"{proc.args} exited {proc.returncode} before {url} answered:\n{out[-4000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {timeout}s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def running_gateway(tmp_path, services):
    """(API port, metrics port) of ``python -m emotune.services.gateway``."""
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "EMOTUNE_ENV": "dev", "EMOTUNE_STORE_BACKEND": "local",
           "EMOTUNE_STORE_PATH": str(tmp_path / "store"), "EMOTUNE_CACHE_DIR": str(tmp_path / "cache"),
           "EMOTUNE_INFERENCE_ADDR": f"127.0.0.1:{free_port()}",  # nothing listens: /metrics must work anyway
           "EMOTUNE_GATEWAY_HOST": "127.0.0.1", "EMOTUNE_GATEWAY_PORT": str(port),
           "EMOTUNE_METRICS_PORT": str(metrics_port), "EMOTUNE_GATEWAY_API_KEYS": "sk-emotune-metrics-test"}
    proc = subprocess.Popen([sys.executable, "-m", "emotune.services.gateway"], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, timeout=60)
        yield port, metrics_port
    finally:
        stop(proc)


def test_real_prometheus_scrapes_the_gateway(running_gateway, tmp_path):
    """The gateway job of the deployed config, pointed at loopback, is scraped by Debian's Prometheus on the
    gateway's metrics port; the API port (where the key and the Ingress are) serves no /metrics (issue 29)."""
    api_port, metrics_port = running_gateway
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{api_port}/v1", api_key="sk-emotune-metrics-test",
                           max_retries=0, timeout=10)
    with pytest.raises(openai.APIStatusError):  # inference is down: a 503, counted all the same
        client.models.list()
    assert httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=5).status_code == 404
    job = dict(scrape_jobs()["gateway"])
    job["static_configs"] = [{"targets": [f"127.0.0.1:{metrics_port}"]}]
    job["scrape_interval"] = "1s"
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": [job]}))
    port = free_port()
    prometheus = subprocess.Popen(
        [tool("prometheus", PROMTOOL_HINT), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        api = f"http://127.0.0.1:{port}"
        wait_http(f"{api}/-/ready", prometheus, timeout=30)
        httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=5)  # some traffic worth counting
        deadline = time.monotonic() + 30
        while True:
            targets = httpx.get(f"{api}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            if targets and targets[0]["health"] == "up":
                break
            assert time.monotonic() < deadline, f"gateway target never came up: {targets}"
            time.sleep(0.5)
        assert targets[0]["labels"]["job"] == "gateway"
        assert targets[0]["scrapeUrl"] == f"http://127.0.0.1:{metrics_port}/metrics"
        samples = httpx.get(f"{api}/api/v1/query", params={"query": 'scrape_samples_scraped{job="gateway"}'},
                            timeout=5).json()["data"]["result"]
        assert samples and float(samples[0]["value"][1]) > 0, samples
        series = httpx.get(f"{api}/api/v1/label/__name__/values", timeout=5).json()["data"]
        assert any(name.startswith("emotune_gateway_") for name in series), series
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert 'emotune_gateway_requests_total{method="GET",route="/v1/models"' in scraped, scraped
    finally:
        stop(prometheus)
