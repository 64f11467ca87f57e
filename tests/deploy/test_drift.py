"""The deployment files cannot drift from the code: the services in compose and k8s are the packages under
services/, on the ports their settings name, with only env vars their settings classes read, and with every
setting whose default only works on one machine (loopback addresses) set for containers."""

from __future__ import annotations

import re
import warnings

import pytest
import yaml
from packaging.utils import canonicalize_name

from emotune.models.basemodels import DEFAULT_BASE_MODEL, PACKAGED_MODELS
from emotune.settings import Settings
from tests.deploy.deploykit import (
    by_kind,
    compose_image,
    container_env,
    image_requirements,
    installed_closure,
    repo_services,
    secret_files,
    workloads,
)

# Variables a container may carry that are not emotune settings: the libraries' own.
THIRD_PARTY_ENV = re.compile(r"^(HF_|TRANSFORMERS_|TOKENIZERS_|STREAMLIT_|NVIDIA_|CUDA_|OMP_|MKL_|PYTORCH_|HOME$)")
LOOPBACK = re.compile(r"127\.0\.0\.1|localhost")


def emotune_compose_services(config: dict) -> dict[str, dict]:
    return {name: s for name, s in config["services"].items() if s["image"].startswith("emotune/")}


def check_env(service_name: str, env: dict[str, str | None], where: str) -> None:
    """Every variable is read by the service's settings (or named by one of its ``*_env`` settings); required
    settings are set; settings defaulting to a loopback address are overridden for containers."""
    service = repo_services()[service_name]
    known = service.env_vars
    indirect = {value for key, value in env.items() if key.endswith("_ENV") and key in known and value}
    for key in env:
        if key in known or key in indirect or THIRD_PARTY_ENV.match(key):
            continue
        pytest.fail(f"{where}: {service_name} sets {key}, which {service.settings_cls.__name__} does not read")
    for key, field in known.items():
        if field.is_required():
            assert key in env, f"{where}: {service_name} needs {key} (required by {service.settings_cls.__name__})"
    own = set(service.settings_cls.model_fields) - set(Settings.model_fields)
    for name, field in service.settings_cls.model_fields.items():
        default = field.default
        if isinstance(default, str) and LOOPBACK.search(default) and (name in own or name == "grpc_bind"):
            if name == "grpc_bind" and service.grpc_port is None:
                continue
            variable = next(k for k, f in known.items() if f is field)
            value = env.get(variable)
            assert value is not None and not LOOPBACK.search(value), (
                f"{where}: {service_name} keeps {variable}={default!r}; in a container that is the container itself")


def test_compose_runs_exactly_the_repo_services(services, rendered_compose):
    for variant, config in rendered_compose.items():
        assert set(emotune_compose_services(config)) == set(services), variant


def service_of_image(image: str) -> str | None:
    """``emotune/trainer-gpu:0.1.0`` -> ``trainer``: the repo service whose code an emotune image runs."""
    target = image.split(":")[0].removeprefix("emotune/")
    return next((name for name in repo_services() if target == name or target.startswith(f"{name}-")), None)


def emotune_workloads(docs: list[dict]) -> dict[str, tuple[str, dict]]:
    """workload name -> (service whose image it runs, pod spec), for every workload running an emotune image."""
    found = {}
    for name, pod in workloads(docs).items():
        image = pod["containers"][0]["image"]
        if image.startswith("emotune/"):
            service = service_of_image(image)
            assert service is not None, f"{name} runs {image}, the image of no service under emotune/services/"
            found[name] = (service, pod)
    return found


def test_k8s_runs_exactly_the_repo_services(services, rendered_k8s):
    for overlay, docs in rendered_k8s.items():
        deployments = {name for name, doc in by_kind(docs, "Deployment").items()
                       if doc["spec"]["template"]["spec"]["containers"][0]["image"].startswith("emotune/")}
        assert deployments == set(services), overlay
        emotune_workloads(docs)  # batch workloads (Jobs, CronJob templates) run a service's image too
        assert set(services) <= set(by_kind(docs, "Service")), f"{overlay}: a service has no Service"


def test_compose_ports_match_settings(services, rendered_compose):
    for variant, config in rendered_compose.items():
        compose = emotune_compose_services(config)
        for service in services.values():
            entry = compose[service.name]
            health = " ".join(entry["healthcheck"]["test"])
            if service.grpc_port is not None:
                for peer in compose.values():  # everyone who knows the address agrees with the settings
                    address = peer["environment"].get(f"EMOTUNE_{service.name.upper()}_ADDR")
                    assert address in (None, f"{service.name}:{service.grpc_port}"), f"{variant}: {address}"
                assert f"127.0.0.1:{service.grpc_port}" in health
                exposed = set(entry.get("expose", []))
                assert str(service.grpc_port) in exposed, f"{service.name}: gRPC port not exposed"
                metrics = entry["environment"].get("EMOTUNE_METRICS_PORT")
                assert metrics in exposed, f"{service.name}: metrics port {metrics} not exposed"
                if service.metrics_port is not None:
                    assert int(metrics) == service.metrics_port
            else:
                port = service.http_port
                if port is None:
                    warnings.warn(f"{service.name} has no {service.name}_port setting yet", stacklevel=1)
                    continue
                assert [p["target"] for p in entry["ports"]] == [port], f"{service.name}: container port != {port}"
                assert f"127.0.0.1:{port}/" in health, f"{service.name}: healthcheck not on {port}"


def test_compose_env_matches_settings(services, rendered_compose):
    for variant, config in rendered_compose.items():
        for name, entry in emotune_compose_services(config).items():
            check_env(name, entry["environment"], f"compose ({variant})")


def test_k8s_ports_and_env_match_settings(services, rendered_k8s):
    for overlay, docs in rendered_k8s.items():
        pods = workloads(docs)
        k8s_services = by_kind(docs, "Service")
        for service in services.values():
            container = pods[service.name]["containers"][0]
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            env = container_env(container, docs)
            if service.grpc_port is not None:
                assert ports["grpc"] == service.grpc_port
                assert env.get(f"EMOTUNE_{service.name.upper()}_ADDR") == f"{service.name}:{service.grpc_port}"
                assert int(env["EMOTUNE_METRICS_PORT"]) == ports["metrics"]
                if service.metrics_port is not None:
                    assert ports["metrics"] == service.metrics_port
            elif service.http_port is not None:
                assert ports["http"] == service.http_port, f"{overlay}: {service.name} containerPort"
                if service.metrics_port is not None:  # the gateway: /metrics on its own port, not the API's
                    assert int(env["EMOTUNE_METRICS_PORT"]) == ports["metrics"] == service.metrics_port
            published = {p["port"] for p in k8s_services[service.name]["spec"]["ports"]}
            assert set(ports.values()) == published, f"{overlay}: Service {service.name} ports {published}"
        for name, (service, pod) in emotune_workloads(docs).items():  # Deployments and Jobs alike
            container = pod["containers"][0]
            env = {**container_env(container, docs), **secret_files(pod, container)}
            check_env(service, env, f"k8s ({overlay}) {name}")


def test_drift_check_catches_an_unknown_variable():
    """check_env is not vacuous: a misspelt setting fails it."""
    name = next(iter(repo_services()))
    with pytest.raises(pytest.fail.Exception, match="EMOTUNE_LOG_LEVLE"):
        check_env(name, {"EMOTUNE_LOG_LEVLE": "INFO"}, "probe")



def test_deployments_default_to_the_default_base_model(rendered_compose, rendered_k8s):
    """Where compose and k8s name a base model by default (the model inference preloads, the train-run spec) it is
    ``emotune.models.basemodels.DEFAULT_BASE_MODEL``, and every image that serves or trains it ships its packaged weights
    (the offline-models extra). Datagen's default teacher names none: it teaches with each job's own base model."""
    targets = set()
    for variant, config in rendered_compose.items():
        services = config["services"]
        assert services["inference"]["environment"]["EMOTUNE_INFERENCE_PRELOAD"] == DEFAULT_BASE_MODEL, variant
        assert services["datagen"]["environment"]["EMOTUNE_DATAGEN_TEACHER_MODEL"] == "", variant
        targets |= {compose_image(services[name]) for name in ("inference", "trainer")}
    for overlay, docs in rendered_k8s.items():
        pods = workloads(docs)
        env = {name: container_env(pods[name]["containers"][0], docs) for name in ("inference", "datagen")}
        assert env["inference"]["EMOTUNE_INFERENCE_PRELOAD"] == DEFAULT_BASE_MODEL, overlay
        assert env["datagen"]["EMOTUNE_DATAGEN_TEACHER_MODEL"] == "", overlay
        spec = yaml.safe_load(by_kind(docs, "ConfigMap")["train-spec"]["data"]["spec.yaml"])
        assert spec["base_model"] == DEFAULT_BASE_MODEL, overlay
        targets |= {pods[name]["containers"][0]["image"].split(":")[0].removeprefix("emotune/")
                    for name in ("inference", "trainer", "train-run")}
    model = PACKAGED_MODELS[DEFAULT_BASE_MODEL]
    needed = {canonicalize_name(d) for d in model.split.distributions} if model.split else {
        canonicalize_name(model.package)}
    for target in sorted(targets):
        missing = needed - installed_closure(image_requirements(target))
        assert not missing, f"image {target} lacks the packages of {DEFAULT_BASE_MODEL}: {sorted(missing)}"
