"""Serving engines behind one interface (:mod:`.base`): ``llamacpp`` (CPU default), ``transformers`` (CPU
reference), ``lmdeploy`` and ``vllm`` (GPU)."""

from __future__ import annotations

from emotune.services.inference.config import InferenceSettings
from emotune.services.inference.engines.base import Engine

ENGINE_NAMES = ("llamacpp", "transformers", "lmdeploy", "vllm")


def create_engine(name: str, settings: InferenceSettings) -> Engine:
    """The engine called ``name``; LMDeploy is imported only when asked for (it lives in the GPU image), and the
    vllm engine only runs the ``vllm`` executable (never imports vLLM)."""
    if name == "llamacpp":
        from emotune.services.inference.engines.llamacpp import LlamaCppEngine

        return LlamaCppEngine(settings.cache_dir, slots=settings.inference_max_concurrency,
                              slot_context=settings.inference_llamacpp_context,
                              threads=settings.inference_llamacpp_threads, tools_dir=settings.llamacpp_dir,
                              prompt_cache=settings.inference_llamacpp_prompt_cache)
    if name == "transformers":
        from emotune.services.inference.engines.transformers_cpu import TransformersEngine

        return TransformersEngine(max_workers=settings.inference_max_concurrency,
                                  torch_threads=settings.inference_torch_threads)
    if name == "lmdeploy":
        from emotune.services.inference.engines.lmdeploy_gpu import LMDeployEngine

        return LMDeployEngine(settings)
    if name == "vllm":
        from emotune.services.inference.engines.vllm_gpu import VllmEngine

        return VllmEngine(settings)
    from emotune.errors import InvalidInput

    raise InvalidInput(f"unknown engine {name!r}; known: {', '.join(ENGINE_NAMES)}", field="engine")
