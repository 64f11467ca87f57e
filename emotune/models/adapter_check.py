"""Will this engine load this LoRA adapter? Answered from ``adapter_config.json`` before anything starts.

A GPU server that takes a minute to start and then fails on an adapter (vLLM: ``LoRA rank 64 is greater than
max_lora_rank 16``; ``vLLM only supports modules_to_save being None``) is the expensive way to learn it.
:func:`check_adapter` reads the PEFT config and returns each :class:`Problem` as a sentence naming what to
change: an ``EMOTUNE_*`` setting of the inference service, or a field of the training spec (``lora.r``,
``lora.target_modules``). :func:`raise_for_problems` turns the errors into the service's own exceptions.
Shared: the GPU engines of the inference service run it before loading an adapter, and the trainer runs
:func:`serving_warnings` when it exports one, so the warning comes at training time, not at the first load.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from emotune.errors import FailedPrecondition, InvalidInput

CONFIG_FILE = "adapter_config.json"
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for --max-lora-rank
VLLM_DEFAULT_MAX_LORA_RANK = 16
# The projections of the decoder layers (the trainer's default targets): every engine serves LoRA on these.
SUPPORTED_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RANK_SETTING = "EMOTUNE_INFERENCE_VLLM_MAX_LORA_RANK"
ENGINES = ("vllm", "lmdeploy", "llamacpp", "transformers")
GPU_ENGINES = ("vllm", "lmdeploy")

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One reason an engine cannot (error) or will not quite as asked (warning) serve an adapter.

    ``code`` is stable for programs (rank, modules_to_save, target_modules, dora, bias, config, turbomind);
    ``setting`` is what to change: an ``EMOTUNE_*`` variable, or a training-spec field (``lora.r``).
    """

    code: str
    message: str
    severity: Severity = "error"
    setting: str | None = None

    def __str__(self) -> str:
        return self.message


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    path = Path(adapter_dir) / CONFIG_FILE
    return json.loads(path.read_text(encoding="utf-8"))


def config_rank(config: dict[str, Any]) -> int:
    """The largest LoRA rank of a PEFT config: ``r`` and any per-module ``rank_pattern`` rank."""
    ranks = [int(config.get("r") or 8), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    return max(ranks)


def adapter_rank(adapter_dir: str | Path) -> int:
    return config_rank(read_adapter_config(adapter_dir))


def vllm_lora_rank(rank: int) -> int:
    """``rank`` rounded up to a value vLLM accepts for ``--max-lora-rank`` (ValueError beyond the largest)."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} exceeds vLLM's largest --max-lora-rank {VLLM_LORA_RANKS[-1]}")


def _target_names(targets: Any) -> tuple[list[str], bool]:
    """The module names a config targets (last path component) and whether they could be read exactly."""
    if targets is None:
        return [], True
    if isinstance(targets, str):
        if targets == "all-linear":  # PEFT: every linear layer but the output head = the seven projections
            return list(SUPPORTED_TARGETS), True
        if re.fullmatch(r"[A-Za-z0-9_]+", targets):
            return [targets], True
        # A regular expression over full module names: the names it lists in alternations, when plain.
        names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*_proj|embed_tokens|lm_head|[A-Za-z_]*mlp[A-Za-z_]*", targets)
        return sorted(set(names)), False
    return sorted({str(t).rsplit(".", 1)[-1] for t in targets}), True


def check_adapter(adapter_dir: str | Path, engine: str, settings: Any = None) -> list[Problem]:
    """Every reason ``engine`` cannot serve the PEFT adapter in ``adapter_dir`` (empty: it can).

    ``settings`` is the inference service's (``InferenceSettings``); missing fields take their defaults.
    """
    if engine not in ENGINES:
        raise InvalidInput(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}", field="engine")
    adapter_dir = Path(adapter_dir)
    try:
        config = read_adapter_config(adapter_dir)
    except FileNotFoundError:
        return [Problem("config", f"{adapter_dir} has no {CONFIG_FILE}: not a PEFT adapter export")]
    except (OSError, ValueError) as exc:
        return [Problem("config", f"{adapter_dir / CONFIG_FILE} cannot be read: {exc}")]
    peft_type = str(config.get("peft_type") or "LORA").upper()
    if peft_type != "LORA":
        return [Problem("config", f"the adapter is {peft_type}, not LoRA: emotune engines serve LoRA adapters")]
    if engine == "vllm":
        return _vllm_problems(config, settings)
    if engine == "lmdeploy":
        return _lmdeploy_problems(settings)
    return []


def _vllm_problems(config: dict[str, Any], settings: Any) -> list[Problem]:
    problems: list[Problem] = []
    limit = int(getattr(settings, "inference_vllm_max_lora_rank", VLLM_DEFAULT_MAX_LORA_RANK))
    rank = config_rank(config)
    if rank > VLLM_LORA_RANKS[-1]:
        problems.append(Problem("rank", f"adapter rank r={rank} exceeds the largest rank vLLM serves "
                                        f"({VLLM_LORA_RANKS[-1]}): train with lora.r <= {limit}",
                                setting="lora.r"))
    elif rank > limit:
        needed = vllm_lora_rank(rank)
        problems.append(Problem("rank", f"adapter rank r={rank} exceeds vLLM's --max-lora-rank {limit}: set "
                                        f"{RANK_SETTING}={needed} or train with lora.r <= {limit}",
                                setting=RANK_SETTING))
    saved = [str(m) for m in config.get("modules_to_save") or []]
    if saved:
        problems.append(Problem(
            "modules_to_save", f"the adapter carries full copies of {', '.join(saved)} (PEFT modules_to_save), "
                               "which vLLM cannot load: train without modules_to_save, or serve the merged model "
                               "(or this adapter on the llamacpp / transformers engine)"))
    names, exact = _target_names(config.get("target_modules"))
    other = [name for name in names if name not in SUPPORTED_TARGETS]
    if other:
        problems.append(Problem(
            "target_modules", f"the adapter targets {', '.join(other)}, which vLLM's LoRA does not serve: train "
                              f"with lora.target_modules among {', '.join(SUPPORTED_TARGETS)} (the default), or "
                              "serve the merged model", setting="lora.target_modules"))
    elif not exact:
        problems.append(Problem(
            "target_modules", f"the adapter's target_modules is a pattern ({config['target_modules']!r}); vLLM "
                              f"serves LoRA on {', '.join(SUPPORTED_TARGETS)} only, so check it matches no other "
                              "module", severity="warning", setting="lora.target_modules"))
    if config.get("use_dora"):
        problems.append(Problem("dora", "the adapter is DoRA (use_dora), which vLLM does not serve: train plain "
                                        "LoRA, or serve the merged model"))
    bias = str(config.get("bias") or "none")
    extra = shlex.split(str(getattr(settings, "inference_vllm_extra_args", "") or ""))
    if bias != "none" and "--enable-lora-bias" not in extra:
        problems.append(Problem("bias", f"the adapter trains biases (bias={bias!r}), which vLLM loads only with "
                                        "--enable-lora-bias (older vLLM releases): add it to "
                                        "EMOTUNE_INFERENCE_VLLM_EXTRA_ARGS, or train with bias='none' (the "
                                        "trainer's default)", setting="EMOTUNE_INFERENCE_VLLM_EXTRA_ARGS"))
    return problems


def _lmdeploy_problems(settings: Any) -> list[Problem]:
    if getattr(settings, "inference_lmdeploy_backend", "turbomind") != "turbomind":
        return []
    return [Problem("turbomind", "LMDeploy's TurboMind backend takes merged models only: this adapter is served "
                                 "by LMDeploy's PyTorch backend instead (EMOTUNE_INFERENCE_LMDEPLOY_BACKEND="
                                 "turbomind applies to merged models); load the merged model to serve it on "
                                 "TurboMind", severity="warning", setting="EMOTUNE_INFERENCE_LMDEPLOY_BACKEND")]


def errors(problems: list[Problem]) -> list[Problem]:
    return [problem for problem in problems if problem.severity == "error"]


def serving_warnings(adapter_dir: str | Path) -> list[str]:
    """What each GPU engine, with its default settings, would refuse in this adapter, one sentence each (the
    trainer warns with them at export; the adapter is published all the same: the CPU engines and the merged
    model serve it)."""
    return [f"the {engine} engine with its default settings would refuse this adapter: {problem.message}"
            for engine in GPU_ENGINES for problem in errors(check_adapter(adapter_dir, engine))]


def raise_for_problems(problems: list[Problem], adapter_dir: str | Path, engine: str) -> None:
    """Raise when any problem is an error: FailedPrecondition when every error is fixed by a service setting
    (the adapter is fine, the server is configured too small), else InvalidInput (the adapter must change)."""
    found = errors(problems)
    if not found:
        return
    message = f"the {engine} engine cannot serve the adapter {adapter_dir}: " + "; ".join(p.message for p in found)
    if all((p.setting or "").startswith("EMOTUNE_") for p in found):
        raise FailedPrecondition(message, adapter=str(adapter_dir))
    raise InvalidInput(message, field="adapter")
