"""Options of the inference service (each one an ``EMOTUNE_*`` environment variable)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from emotune.models.adapter_check import VLLM_LORA_RANKS
from emotune.settings import Settings


class InferenceSettings(Settings):
    inference_engine: Literal["llamacpp", "transformers", "lmdeploy", "vllm"] = Field(
        "llamacpp", description="engine for models loaded without an explicit one: llamacpp (CPU, fast; "
                                "scripts/llamacpp.sh builds it), transformers (CPU reference engine), "
                                "lmdeploy or vllm (GPU, their own images)")
    inference_preload: str = Field(
        "smollm2-135m", description="comma-separated base models loaded at start-up (packaged names such as "
                                    "smollm2-135m / qwen2.5-0.5b / gemma3-270m, or local HF directories); empty = none")
    inference_preload_styles: Path | None = Field(
        None, description="styles YAML/JSON whose serving triggers are attached to every preloaded model, so "
                          "'<model>:<style>' ids work on base models too")
    inference_max_concurrency: int = Field(
        2, ge=1, description="generations running at the same time (CPU: keep near the core count)")
    inference_max_queue: int = Field(
        64, ge=0, description="requests waiting for a slot; beyond it Chat fails with RESOURCE_EXHAUSTED")
    inference_max_fine_tunes: int = Field(
        8, ge=1, description="published fine-tunes one process keeps loaded; loading one more unloads the least "
                             "recently used (it loads again on its next request)")
    inference_published_recheck_seconds: float = Field(
        2.0, ge=0, description="how long a published fine-tune is served from memory before its record in the "
                               "store is read again: a model deleted through any replica stops answering on "
                               "every replica within this time")
    inference_default_max_tokens: int = Field(256, ge=1, description="max_tokens when a request sets none")
    inference_max_tokens_limit: int = Field(4096, ge=1, description="largest max_tokens a request may ask for")
    inference_torch_threads: int = Field(
        0, ge=0, description="torch threads per CPU generation (0 = cores / inference_max_concurrency)")
    inference_llamacpp_context: int = Field(
        4096, ge=256, description="context tokens of each llama.cpp slot (the server gets this x slots)")
    inference_llamacpp_prompt_cache: bool = Field(
        False, description="reuse a llama.cpp slot's cached prompt prefix: faster for long shared prompts, but "
                           "then identical greedy requests can differ slightly (llama.cpp batches differently)")
    inference_llamacpp_threads: int = Field(
        0, ge=0, description="llama.cpp threads (0 = every core; its slots decode in one batch)")
    inference_model_dir: Path | None = Field(
        None, description="where artifacts are downloaded for loading (default <cache_dir>/served)")
    inference_lmdeploy_backend: Literal["turbomind", "pytorch"] = Field(
        "turbomind", description="LMDeploy backend for merged models; base + adapters always use pytorch")
    inference_vllm_max_lora_rank: int = Field(
        16, description="largest LoRA rank the vllm engine serves (vLLM's --max-lora-rank default is 16; one of "
                        "8, 16, 32, 64, 128, 256, 320, 512); each server gets its adapters' largest r rounded "
                        "up, so a larger limit costs GPU memory only when such an adapter is loaded")
    inference_vllm_gpu_memory_utilization: float = Field(
        0.45, gt=0, le=1, description="share of GPU memory each vllm server takes (--gpu-memory-utilization); "
                                      "loading a new adapter starts a new server next to the old one until it "
                                      "is ready, so keep it at or below half of what is free")
    inference_vllm_max_model_len: int = Field(
        0, ge=0, description="context tokens of each vllm server (--max-model-len; 0 = the model's own)")
    inference_vllm_start_timeout: float = Field(
        900, gt=0, description="seconds a vllm server may take to load and become healthy")
    inference_vllm_extra_args: str = Field(
        "", description="extra 'vllm serve' arguments, shell-quoted (e.g. '--enforce-eager --dtype half')")

    @field_validator("inference_vllm_max_lora_rank")
    @classmethod
    def _vllm_rank(cls, value: int) -> int:
        if value not in VLLM_LORA_RANKS:
            raise ValueError(f"must be one of vLLM's LoRA ranks {', '.join(map(str, VLLM_LORA_RANKS))}")
        return value

    @property
    def served_dir(self) -> Path:
        return self.inference_model_dir or self.cache_dir / "served"

    @property
    def preload_models(self) -> list[str]:
        return [name.strip() for name in self.inference_preload.split(",") if name.strip()]
