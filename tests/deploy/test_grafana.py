"""deploy/grafana: the provisioned dashboard queries only metrics the services declare, in PromQL that Prometheus'
own parser accepts, through the datasource and paths compose provides."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import yaml

from emotune.settings import default_cache_dir
from tests.deploy.deploykit import METRIC_SUFFIXES, REPO, declared_metrics, run, tool

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
METRIC = re.compile(r"\b(emotune_[a-z0-9_]+|lmdeploy:[a-z0-9_:]+)")


def queries() -> list[tuple[str, str]]:
    """(dashboard file, PromQL expression) of every panel target."""
    found = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]:
            found += [(path.name, target["expr"]) for target in panel.get("targets", [])]
    return found


def lmdeploy_metrics() -> set[str] | None:
    """LMDeploy's metric names from its source, where an LMDeploy install is at hand (the XTuner venv has one)."""
    for loggers in sorted(default_cache_dir().glob("xtuner-venv-*/lib/python3.11/site-packages/lmdeploy/metrics/"
                                                   "loggers.py")):
        names = set(re.findall(r"name='(lmdeploy:[a-z0-9_:]+)'", loggers.read_text(encoding="utf-8")))
        return {name + suffix for name in names for suffix in METRIC_SUFFIXES}
    return None


def test_dashboards_are_valid_and_use_the_provisioned_datasource():
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    uids = {ds["uid"] for ds in datasources["datasources"]}
    assert DASHBOARDS, "no dashboard"
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        assert dashboard["uid"] and dashboard["title"]
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in dashboard["panels"]:
            if panel["type"] != "row":
                assert panel["datasource"]["uid"] in uids, f"{path.name}: {panel['title']}"
                assert panel["targets"], f"{path.name}: {panel['title']} has no query"


def test_dashboards_cover_gateway_inference_and_the_pipeline():
    names = {m for _, expr in queries() for m in METRIC.findall(expr)}
    assert any(n.startswith("emotune_gateway_") for n in names)
    assert any(n.startswith("emotune_inference_") for n in names)
    # the pipeline: its own series, or the gRPC server series of the shared interceptor labelled with it
    assert any(n.startswith("emotune_pipeline_") for n in names) or any(
        re.search(r'emotune_grpc_\w+\{[^}]*service="pipeline"', expr) for _, expr in queries())


def test_queries_use_only_declared_metrics():
    declared = declared_metrics()
    lmdeploy = lmdeploy_metrics()
    if lmdeploy is None:
        warnings.warn("no LMDeploy install found (scripts/xtuner-venv.sh builds one): lmdeploy:* names unchecked",
                      stacklevel=1)
    for dashboard, expr in queries():
        for name in METRIC.findall(expr):
            if name.startswith("lmdeploy:"):
                assert lmdeploy is None or name in lmdeploy, f"{dashboard}: LMDeploy has no metric {name}"
            else:
                assert name in declared, f"{dashboard}: no service declares {name} ({expr})"


def test_queries_parse_with_prometheus(tmp_path: Path):
    """Every expression as a recording rule: promtool parses it with Prometheus' own PromQL parser."""
    rules = [{"record": f"emotune:dashboard_check:{i}", "expr": expr.replace("$__rate_interval", "1m")}
             for i, (_, expr) in enumerate(queries())]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run([tool("promtool", "apt-get install prometheus (scripts/system-deps.sh)"), "check", "rules", str(path)])


def test_provisioning_matches_compose(rendered_compose):
    services = rendered_compose["gpu+monitoring"]["services"]
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    url = datasource["datasources"][0]["url"]
    assert url == "http://prometheus:9090" and "9090" in services["prometheus"]["expose"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "emotune.yaml").read_text())
    mounts = {Path(m["source"]).relative_to(REPO).as_posix(): m["target"] for m in services["grafana"]["volumes"]
              if m["type"] == "bind"}
    assert mounts["deploy/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert mounts["deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
