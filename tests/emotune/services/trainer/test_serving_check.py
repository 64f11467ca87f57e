"""At export, the trainer says what a GPU engine would refuse in the adapter it just wrote (real hf-backend jobs on
the tiny Llama): a warning event naming the setting to change, the same sentences in the job result, and the
adapter still published."""

from __future__ import annotations

from pathlib import Path

import pytest

from emotune.models.adapter_check import check_adapter
from emotune.services.inference.config import InferenceSettings
from emotune.store.artifacts import download_artifact
from tests.emotune.services.trainer.conftest import trainer_with_dataset

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


async def _train(tmp_path: Path, base: Path, name: str, **lora) -> tuple[dict, list[str], Path]:
    """(job result, warning messages among its events, the published adapter downloaded) of a 2-step job."""
    service = trainer_with_dataset(tmp_path / name, f"validated/{name}/kept")
    record = await service.start({"base_model": str(base), "dataset_artifact": f"validated/{name}/kept",
                                  "max_steps": 2, "batch_size": 2, "max_length": 64, "eval_fraction": 0,
                                  "gguf_quantization": "none", "output_prefix": f"models/{name}",
                                  "lora": {"r": 8, "alpha": 16, **lora}})
    await service.runner.wait(record.job_id)
    job = service.jobs.get(record.job_id)
    assert job.result, job.error
    warnings = [e.message for e in service.jobs.events(record.job_id)
                if e.type == "log" and e.data.get("level") == "warning"]
    adapter = download_artifact(service.store, job.result["adapter_artifact"], tmp_path / name / "adapter")
    return job.result, warnings, adapter


async def test_export_warns_about_what_vllm_would_refuse(tmp_path: Path, tiny_model_dir: Path):
    result, warnings, adapter = await _train(tmp_path, tiny_model_dir, "r64", r=64,
                                             target_modules=["q_proj", "v_proj", "embed_tokens"])
    vllm = [w for w in warnings if w.startswith("the vllm engine with its default settings would refuse")]
    assert len(vllm) == 2 and result["serving_warnings"] == vllm
    assert "adapter rank r=64 exceeds vLLM's --max-lora-rank 16: set EMOTUNE_INFERENCE_VLLM_MAX_LORA_RANK=64" in vllm[0]
    assert "embed_tokens" in vllm[1] and "lora.target_modules" in vllm[1]
    # what the warning says is what the inference service then does with the published adapter
    assert [p.code for p in check_adapter(adapter, "vllm", InferenceSettings())] == ["rank", "target_modules"]
    assert [p.code for p in check_adapter(
        adapter, "vllm", InferenceSettings(inference_vllm_max_lora_rank=64))] == ["target_modules"]

    result, warnings, adapter = await _train(tmp_path, tiny_model_dir, "r8")
    assert result["serving_warnings"] == [] and not any("would refuse" in w for w in warnings)
    assert check_adapter(adapter, "vllm", InferenceSettings()) == []
