"""The production paths on CUDA: XTuner QLoRA (nf4, AmpOptimWrapper) and hf + bitsandbytes 4-bit.

Skipped where no GPU is present. Needs a CUDA XTuner venv (requirements/gpu-xtuner.txt) in
EMOTUNE_TRAINER_XTUNER_VENV for the XTuner case.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emotune.jobs.store import JobState
from tests.emotune.services.trainer.conftest import trainer_with_dataset

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("backend", ["hf", "xtuner"])
async def test_qlora_4bit_job_on_cuda(tmp_path: Path, smollm2_dir: Path, backend: str):
    if backend == "xtuner" and not os.environ.get("EMOTUNE_TRAINER_XTUNER_VENV"):
        pytest.skip("set EMOTUNE_TRAINER_XTUNER_VENV to a CUDA XTuner venv (requirements/gpu-xtuner.txt)")
    service = trainer_with_dataset(tmp_path, "validated/g/kept", trainer_xtuner_device="cuda")
    record = await service.start({"backend": backend, "base_model": str(smollm2_dir), "quantization": "4bit",
                                  "dataset_artifact": "validated/g/kept", "max_steps": 20, "batch_size": 4,
                                  "max_length": 256, "learning_rate": 1e-3, "eval_every_steps": 10})
    await service.runner.wait(record.job_id)
    job = service.jobs.get(record.job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    losses = [e.data["loss"] for e in service.jobs.events(record.job_id) if e.type == "progress"]
    assert losses[-1] < losses[0]
