"""How a model says it should be sampled: its ``generation_config.json``, read once for every engine and export."""

from __future__ import annotations

import json
from pathlib import Path


def sampling_defaults(*model_dirs: Path | None) -> dict[str, float]:
    """The model's generation_config.json sampling, as the reference engine reads it (not sampled: temperature and
    top_p 1.0, top_k 0 = off). A request sets temperature and top_p; top_k (no OpenAI field) is always the model's:
    Qwen publishes top_k 20, which keeps the stray tokens of the vocabulary's tail out of a sampled reply. So is
    the repetition penalty, sampled or not, as transformers' ``generate`` applies it (vLLM's ``--generation-config
    auto`` too): Qwen2.5 publishes 1.05; without it the tuned 0.5B student looped to the token limit on 7 of 16
    held-out 毒舌 questions, with it on 1 (docs/trainer.md).

    Several folders are layers, base first: a LoRA adapter served on its base samples as the base says unless the
    adapter's own generation_config.json says otherwise (transformers' PeftModel keeps the base's config too). An
    adapter export that carried only eos ids once made every engine but transformers serve tuned models with no
    penalty at all."""
    config: dict = {}
    for model_dir in model_dirs:
        path = Path(model_dir) / "generation_config.json" if model_dir is not None else None
        if path is not None and path.is_file():
            config.update(json.loads(path.read_text(encoding="utf-8")))
    sampled = bool(config.get("do_sample"))
    return {"temperature": float(config.get("temperature", 1.0) if sampled else 1.0),
            "top_p": float(config.get("top_p", 1.0) if sampled else 1.0),
            "top_k": int(config.get("top_k") or 0) if sampled else 0,
            "repetition_penalty": float(config.get("repetition_penalty") or 1.0)}
