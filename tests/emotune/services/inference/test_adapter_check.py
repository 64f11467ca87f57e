"""The adapter check on real PEFT adapters of SmolLM2: what vLLM / LMDeploy would refuse, said before loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from emotune.errors import FailedPrecondition, InvalidInput
from emotune.models.adapter_check import (
    adapter_rank,
    check_adapter,
    raise_for_problems,
    vllm_lora_rank,
)
from emotune.services.inference.config import InferenceSettings

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:peft")  # tied embeddings in the adapters' bases

RANK_MESSAGE = ("adapter rank r=64 exceeds vLLM's --max-lora-rank 16: set EMOTUNE_INFERENCE_VLLM_MAX_LORA_RANK=64 "
                "or train with lora.r <= 16")


def make_adapter(base_dir: Path, out: Path, **lora) -> Path:
    """A real PEFT LoRA adapter export (``save_pretrained``) of the base in ``base_dir``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    lora.setdefault("target_modules", ["q_proj", "k_proj", "v_proj", "o_proj"])
    get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", **lora)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(smollm_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("peft")
    return {
        "r8": make_adapter(smollm_dir, root / "r8", r=8),
        "r64": make_adapter(smollm_dir, root / "r64", r=64),
        "r8-lm_head": make_adapter(smollm_dir, root / "r8-lm_head", r=8, modules_to_save=["lm_head"]),
        "r64-lm_head": make_adapter(smollm_dir, root / "r64-lm_head", r=64, modules_to_save=["lm_head"]),
        "embed": make_adapter(smollm_dir, root / "embed", r=8, target_modules=["q_proj", "embed_tokens"]),
    }


def codes(problems) -> list[str]:
    return [problem.code for problem in problems]


def test_a_plain_rank_8_adapter_passes_everywhere_but_turbomind_warns(adapters):
    settings = InferenceSettings()
    assert adapter_rank(adapters["r8"]) == 8
    for engine in ("vllm", "llamacpp", "transformers"):
        assert check_adapter(adapters["r8"], engine, settings) == [], engine
    (problem,) = check_adapter(adapters["r8"], "lmdeploy", settings)
    assert problem.severity == "warning" and problem.setting == "EMOTUNE_INFERENCE_LMDEPLOY_BACKEND"
    assert "TurboMind" in problem.message and "merged" in problem.message
    assert check_adapter(adapters["r8"], "lmdeploy", InferenceSettings(inference_lmdeploy_backend="pytorch")) == []
    raise_for_problems(check_adapter(adapters["r8"], "lmdeploy", settings), adapters["r8"], "lmdeploy")  # warnings pass


def test_rank_above_vllms_max_lora_rank_names_the_setting(adapters):
    (problem,) = check_adapter(adapters["r64"], "vllm", InferenceSettings())
    assert (problem.code, problem.severity, problem.message) == ("rank", "error", RANK_MESSAGE)
    assert problem.setting == "EMOTUNE_INFERENCE_VLLM_MAX_LORA_RANK"
    with pytest.raises(FailedPrecondition, match="EMOTUNE_INFERENCE_VLLM_MAX_LORA_RANK=64"):
        raise_for_problems([problem], adapters["r64"], "vllm")
    assert check_adapter(adapters["r64"], "vllm", InferenceSettings(inference_vllm_max_lora_rank=64)) == []
    assert check_adapter(adapters["r64"], "llamacpp", InferenceSettings()) == []


def test_modules_to_save_cannot_be_served_by_vllm(adapters):
    (problem,) = check_adapter(adapters["r8-lm_head"], "vllm", InferenceSettings())
    assert problem.code == "modules_to_save" and "lm_head" in problem.message
    assert "merged model" in problem.message
    with pytest.raises(InvalidInput, match="modules_to_save") as raised:
        raise_for_problems([problem], adapters["r8-lm_head"], "vllm")
    assert raised.value.field == "adapter"

    both = check_adapter(adapters["r64-lm_head"], "vllm", InferenceSettings())
    assert codes(both) == ["rank", "modules_to_save"]
    with pytest.raises(InvalidInput) as raised:  # a setting alone cannot fix it: the adapter must change
        raise_for_problems(both, adapters["r64-lm_head"], "vllm")
    assert RANK_MESSAGE in raised.value.message and "lm_head" in raised.value.message


def test_other_target_modules_are_an_error_for_vllm(adapters):
    (problem,) = check_adapter(adapters["embed"], "vllm", InferenceSettings())
    assert problem.code == "target_modules" and "embed_tokens" in problem.message
    assert problem.setting == "lora.target_modules" and "q_proj" in problem.message


def _config(tmp_path: Path, **values) -> Path:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, **values}))
    return tmp_path


def test_config_variants(tmp_path):
    settings = InferenceSettings()
    assert codes(check_adapter(tmp_path / "nowhere", "vllm", settings)) == ["config"]
    assert check_adapter(_config(tmp_path, target_modules="all-linear"), "vllm", settings) == []
    assert codes(check_adapter(_config(tmp_path, rank_pattern={"q_proj": 32}), "vllm", settings)) == ["rank"]
    assert codes(check_adapter(_config(tmp_path, use_dora=True), "vllm", settings)) == ["dora"]
    assert codes(check_adapter(_config(tmp_path, bias="all"), "vllm", settings)) == ["bias"]
    assert check_adapter(_config(tmp_path, bias="all"), "vllm",
                         InferenceSettings(inference_vllm_extra_args="--enable-lora-bias")) == []
    (pattern,) = check_adapter(_config(tmp_path, target_modules=r".*\.(q_proj|v_proj)"), "vllm", settings)
    assert pattern.severity == "warning"
    assert codes(check_adapter(_config(tmp_path, r=1024), "vllm", settings)) == ["rank"]
    assert codes(check_adapter(_config(tmp_path, peft_type="IA3"), "vllm", settings)) == ["config"]
    with pytest.raises(InvalidInput, match="unknown engine"):
        check_adapter(tmp_path, "ollama", settings)


def test_vllm_lora_ranks_and_the_setting(monkeypatch):
    assert [vllm_lora_rank(r) for r in (1, 8, 9, 16, 48, 300, 320, 512)] == [8, 8, 16, 16, 64, 320, 320, 512]
    with pytest.raises(ValueError):
        vllm_lora_rank(513)
    with pytest.raises(ValidationError):
        InferenceSettings(inference_vllm_max_lora_rank=24)
    monkeypatch.setenv("EMOTUNE_INFERENCE_VLLM_MAX_LORA_RANK", "64")
    assert InferenceSettings().inference_vllm_max_lora_rank == 64
