"""compose.yaml (+ compose.cpu.yaml, + compose.vllm.yaml, + profiles) as the real Compose binary and the
compose-spec schema see it."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from emotune.settings import Settings
from tests.deploy.deploykit import (
    COMPOSE_CPU_FILE,
    COMPOSE_FILE,
    COMPOSE_VLLM_FILE,
    compose_cmd,
    compose_image,
    compose_variants,
    env_example_keys,
    filled_env_file,
    gpu_target,
    run,
    tool,
)

PUBLIC_SERVICES = {"gateway"}  # the only service published on all host interfaces (the UI: loopback by default)
GPU_SERVICES = {"trainer", "inference"}
# The fine-tuning pipeline drives these services' jobs; the gateway calls only the pipeline and inference.
PIPELINE_PEERS = ("datagen", "validator", "trainer", "inference")
GATEWAY_PEERS = ("pipeline", "inference")


def service_address(name: str) -> str:
    """``<name>:<port>``: the compose / k8s address of a gRPC service, on the port of its default address."""
    return f"{name}:{Settings.model_fields[f'{name}_addr'].default.rsplit(':', 1)[1]}"


@pytest.mark.parametrize("variant", sorted(compose_variants()))
def test_compose_config_is_valid(variant, tmp_path):
    run([*compose_cmd(compose_variants()[variant], filled_env_file(tmp_path)), "config", "-q"])


def test_compose_files_match_the_compose_spec_schema(rendered_compose, tmp_path):
    """The hand-written file and what Compose renders for every variant, against the vendored compose-spec.

    compose.cpu.yaml itself uses the ``!reset`` tag, which a plain YAML loader cannot read; its effect is checked
    through the rendered cpu variants.
    """
    files = [str(COMPOSE_FILE), str(COMPOSE_VLLM_FILE)]
    for variant, config in rendered_compose.items():
        path = tmp_path / f"rendered-{variant}.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        files.append(str(path))
    run([tool("check-jsonschema", "pip install check-jsonschema (dev extra)"),
         "--builtin-schema", "vendor.compose-spec", *files])


def test_schema_check_rejects_a_broken_file(tmp_path):
    """The schema check is not vacuous: a misspelt key fails it."""
    broken = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    broken["services"]["gateway"]["helthcheck"] = broken["services"]["gateway"].pop("healthcheck")
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken), encoding="utf-8")
    result = run([tool("check-jsonschema", "pip install check-jsonschema (dev extra)"),
                  "--builtin-schema", "vendor.compose-spec", str(path)], check=False)
    assert result.returncode != 0 and "helthcheck" in result.stdout + result.stderr


def test_every_required_secret_fails_fast_when_missing(tmp_path):
    """Each value .env.example asks for is enforced with ${VAR:?}: leaving it empty stops Compose, naming it."""
    required, _ = env_example_keys()
    assert required, ".env.example lists no required value"
    for key in required:
        result = run([*compose_cmd(compose_variants()["gpu+monitoring"], filled_env_file(tmp_path, key)),
                      "config", "-q"], check=False)
        assert result.returncode != 0, f"compose starts without {key}: use ${{{key}:?...}}"
        assert key in result.stderr, result.stderr


def test_every_variable_compose_reads_is_in_env_example():
    required, optional = env_example_keys()
    text = "\n".join(p.read_text(encoding="utf-8") for p in (COMPOSE_FILE, COMPOSE_CPU_FILE, COMPOSE_VLLM_FILE))
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    strict = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert strict == set(required), "the ${VAR:?} variables and the empty ones in .env.example differ"
    assert used - set(required) - set(optional) == set(), "variables used by compose but not in .env.example"


def test_only_the_gateway_is_published_beyond_loopback(rendered_compose):
    for variant, config in rendered_compose.items():
        for name, service in config["services"].items():
            for port in service.get("ports", []):
                if name not in PUBLIC_SERVICES:
                    assert port.get("host_ip") == "127.0.0.1", f"{variant}: {name} publishes {port} beyond localhost"


def test_healthchecks_and_startup_order(rendered_compose):
    for variant, config in rendered_compose.items():
        services = config["services"]
        for name, service in services.items():
            if service.get("restart") == "no":  # one-shot jobs (minio-init) have no health, they complete
                continue
            assert "healthcheck" in service and not service["healthcheck"].get("disable"), f"{name}: no healthcheck"
            for dep, rule in service.get("depends_on", {}).items():
                expected = ("service_completed_successfully" if services[dep].get("restart") == "no"
                            else "service_healthy")
                assert rule["condition"] == expected, f"{variant}: {name} -> {dep}: {rule['condition']}"


def test_gpu_reservations_only_on_gpu_hosts(rendered_compose):
    for variant, config in rendered_compose.items():
        for name, service in config["services"].items():
            devices = (service.get("deploy") or {}).get("resources", {}).get("reservations", {}).get("devices", [])
            gpus = [d for d in devices if "gpu" in d.get("capabilities", [])]
            if variant.startswith("gpu") and name in GPU_SERVICES:
                assert gpus and gpus[0]["driver"] == "nvidia", f"{variant}: {name} reserves no GPU"
                assert gpu_target(compose_image(service)), f"{variant}: {name} runs a CPU image"
            else:
                assert not gpus, f"{variant}: {name} reserves a GPU"
                if name in GPU_SERVICES:
                    assert compose_image(service).endswith("-cpu")


def test_the_inference_engine_of_each_host(rendered_compose):
    """GPU hosts serve with LMDeploy, or with vLLM in its own image through compose.vllm.yaml (nothing else
    changes); CPU hosts with llama.cpp."""
    engines = {"gpu": ("inference-gpu", "lmdeploy"), "gpu-vllm": ("inference-vllm", "vllm"),
               "cpu": ("inference-cpu", "llamacpp")}
    for variant, config in rendered_compose.items():
        inference = config["services"]["inference"]
        target, engine = engines[variant.split("+")[0]]
        assert (compose_image(inference), inference["environment"]["EMOTUNE_INFERENCE_ENGINE"]) == (
            target, engine), variant
    lmdeploy, vllm = rendered_compose["gpu"]["services"], rendered_compose["gpu-vllm"]["services"]
    assert {name for name in lmdeploy if lmdeploy[name] != vllm[name]} == {"inference"}
    assert vllm["inference"]["environment"]["EMOTUNE_INFERENCE_VLLM_MAX_LORA_RANK"] == "16"


def test_images_are_pinned_and_data_is_on_volumes(rendered_compose):
    for config in rendered_compose.values():
        for name, service in config["services"].items():
            image = service["image"]
            tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
            assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: image {image} is not pinned"
        volumes = {m["source"]: m["target"] for s in config["services"].values() for m in s.get("volumes", [])
                   if m["type"] == "volume"}
        assert volumes.get("minio-data") == "/data" and volumes.get("model-cache") == "/cache"


def test_no_secret_value_is_written_in_compose():
    """Secrets come from .env: a literal value for a *_KEY / *PASSWORD / *SECRET* variable is a leak."""
    for name, service in yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"(KEY|PASSWORD|SECRET|TOKEN)$", key) and value is not None:
                assert str(value).startswith("${"), f"{name}: {key} has a literal value"


def test_the_pipeline_runs_between_the_gateway_and_the_job_services(rendered_compose):
    """The pipeline service starts after the services it drives (healthy) and the bucket, knows where each of them
    is, is probed over gRPC health on its own port and runs its own CPU image; the gateway waits for it and knows
    only the pipeline and inference."""
    port = service_address("pipeline").rsplit(":", 1)[1]
    for variant, config in rendered_compose.items():
        services = config["services"]
        pipeline = services["pipeline"]
        assert compose_image(pipeline) == "pipeline" and pipeline["image"].startswith("emotune/pipeline:")
        assert pipeline["healthcheck"]["test"] == ["CMD", "python", "-m", "emotune.grpc.probe", f"127.0.0.1:{port}"]
        assert pipeline["restart"] == "unless-stopped"
        depends = {name: rule["condition"] for name, rule in pipeline["depends_on"].items()}
        assert depends == {**dict.fromkeys(PIPELINE_PEERS, "service_healthy"),
                           "minio-init": "service_completed_successfully"}, f"{variant}: pipeline waits for {depends}"
        env = pipeline["environment"]
        for peer in (*PIPELINE_PEERS, "pipeline"):
            assert env[f"EMOTUNE_{peer.upper()}_ADDR"] == service_address(peer), f"{variant}: pipeline -> {peer}"
        assert env["EMOTUNE_GRPC_BIND"] == "0.0.0.0" and env["EMOTUNE_STORE_BACKEND"] == "s3"
        assert "ZHIPUAI_API_KEY" in env, f"{variant}: the pipeline is not passed the optional ZhipuAI key"

        gateway = services["gateway"]
        assert {name for name, rule in gateway["depends_on"].items() if rule["condition"] == "service_healthy"} == set(
            GATEWAY_PEERS), variant
        addresses = {key: value for key, value in gateway["environment"].items()
                     if re.fullmatch(r"EMOTUNE_\w+_ADDR", key)}
        assert addresses == {f"EMOTUNE_{peer.upper()}_ADDR": service_address(peer) for peer in GATEWAY_PEERS}, (
            f"{variant}: the gateway is told {addresses}")
