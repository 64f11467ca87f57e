"""From a finished run to published artifacts: chat-template files, parity check, loss curve, upload.

Both backends leave ``adapter/`` and ``merged/`` weight folders; this module writes the *same* chat template
and stop tokens into both (tokenizer_config.json, generation_config.json, LMDeploy JSON, Ollama Modelfile),
proves token-level parity with the training formatter (the job fails otherwise), draws the loss curve (and, for
``method: dpo``, the rewards: chosen, rejected, margin, accuracy) and
publishes immutable artifacts: ``<prefix>/adapter``, ``<prefix>/merged``, ``<prefix>/report`` and, unless the
spec says ``gguf_quantization: none``, ``<prefix>/gguf``: the adapter merged into the base's GGUF by llama.cpp,
quantized, with the template and end token in its metadata, the GGUF LoRA adapter itself and an Ollama
Modelfile; llama.cpp's own prompt tokens for the parity conversations are checked against training too.
The adapter is also checked against the GPU engines' defaults (:func:`emotune.models.adapter_check.serving_warnings`):
what vLLM or LMDeploy would refuse to load (a rank above vLLM's default 16, say) is a warning now, with the
setting to change, rather than a failed load later.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from emotune.data.records import Record
from emotune.errors import EmotuneError
from emotune.models.adapter_check import serving_warnings
from emotune.models.chat_template import MODELFILE, ChatFormat, ParityError, check_parity, export_chat_files
from emotune.models.llamacpp import LlamaCpp, LlamaServer, adapter_gguf, base_gguf, gguf_metadata
from emotune.models.sampling import sampling_defaults
from emotune.store.artifacts import file_key, publish_artifact
from emotune.store.base import ArtifactStore

PARITY_CONVERSATIONS = 24


def parity_conversations(records: list[Record], eval_prompts: list[str]) -> list[list[dict[str, str]]]:
    """Real training conversations (multi-turn ones first) plus the spec's eval prompts."""
    ordered = sorted(records, key=lambda r: -len(r.messages))[:PARITY_CONVERSATIONS]
    out = [[m.model_dump() for m in r.messages] for r in ordered]
    out += [[{"role": "user", "content": p}, {"role": "assistant", "content": "ok"}] for p in eval_prompts]
    return out


def loss_curve(log_history: list[dict[str, Any]]) -> dict[str, list[dict[str, float]]]:
    train = [{"step": h["step"], "loss": h["loss"]} for h in log_history if "loss" in h and "step" in h]
    held_out = [{"step": h["step"], "eval_loss": h["eval_loss"]} for h in log_history if "eval_loss" in h]
    return {"train": train, "eval": held_out}


def loss_curve_png(curve: dict[str, list[dict[str, float]]], title: str) -> bytes:
    from emotune.plots import new_figure, png_bytes  # matplotlib only when a curve is drawn

    fig = new_figure(7, 4, dpi=100, layout="tight")
    ax = fig.subplots()
    if curve["train"]:
        ax.plot([p["step"] for p in curve["train"]], [p["loss"] for p in curve["train"]], label="train loss",
                linewidth=1.2)
    if curve["eval"]:
        ax.plot([p["step"] for p in curve["eval"]], [p["eval_loss"] for p in curve["eval"]], "o-",
                label="held-out loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return png_bytes(fig)


REWARD_KEYS = {"rewards/chosen": "chosen", "rewards/rejected": "rejected", "rewards/margins": "margin",
               "rewards/accuracies": "accuracy"}


def reward_curve(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per logged step of a DPO run: chosen / rejected rewards, their margin and the reward accuracy."""
    return [{"step": h["step"], **{name: h[key] for key, name in REWARD_KEYS.items() if key in h}}
            for h in log_history if "rewards/chosen" in h and "step" in h and "loss" in h]


def reward_curve_png(curve: list[dict[str, float]], title: str) -> bytes:
    """Rewards (beta x policy-minus-reference log-prob) of the chosen and rejected replies, the margin, and the
    reward accuracy on a second axis: the collapse pattern (accuracy 1.0, chosen falling below 0) is visible."""
    from emotune.plots import new_figure, png_bytes

    fig = new_figure(7, 4, dpi=100, layout="tight")
    ax = fig.subplots()
    steps = [p["step"] for p in curve]
    for name, style in (("chosen", "-"), ("rejected", "-"), ("margin", "--")):
        ax.plot(steps, [p.get(name, 0.0) for p in curve], style, label=f"{name} reward" if name != "margin"
                else "reward margin", linewidth=1.2)
    ax.axhline(0.0, color="grey", linewidth=0.6)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("reward (beta x log-prob vs reference)")
    accuracy = ax.twinx()
    accuracy.plot(steps, [p.get("accuracy", 0.0) for p in curve], ":", color="black", label="reward accuracy")
    accuracy.set_ylim(-0.05, 1.05)
    accuracy.set_ylabel("reward accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()
    extra = accuracy.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="best")
    return png_bytes(fig)


@dataclass(frozen=True)
class GgufExport:
    """What the GGUF export needs: llama.cpp, its conversion cache, and the base as a directory (+ its GGUF)."""

    tools: LlamaCpp
    cache_dir: Path
    base_dir: Path
    base_gguf: Path | None
    quantization: str


def export_gguf(job: GgufExport, adapter_dir: Path, out: Path, fmt: ChatFormat, model_name: str,
                conversations: list[list[dict[str, str]]]) -> dict[str, Any]:
    """``out``/model.gguf (merged + quantized, emotune's template and end token), adapter.gguf, Modelfile."""
    out.mkdir(parents=True, exist_ok=True)
    base = base_gguf(job.tools, job.cache_dir, job.base_dir, job.base_gguf)
    adapter = adapter_gguf(job.tools, job.cache_dir, adapter_dir, job.base_dir)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        merged = job.tools.merge(base, adapter, Path(tmp) / "merged.gguf")
        quantized = merged if job.quantization == "F16" else \
            job.tools.quantize_model(merged, Path(tmp) / "quantized.gguf", job.quantization)
        job.tools.with_chat_metadata(quantized, out / "model.gguf", fmt.template, fmt.end_token_id, model_name)
    shutil.copyfile(adapter, out / "adapter.gguf")
    config = json.loads((job.base_dir / "config.json").read_text(encoding="utf-8"))
    num_ctx = int(config.get("max_position_embeddings") or 2048)
    (out / MODELFILE).write_text(fmt.ollama_modelfile("./model.gguf", num_ctx=num_ctx,
                                                      sampling=sampling_defaults(job.base_dir)), encoding="utf-8")
    metadata = gguf_metadata(out / "model.gguf")
    if metadata.get("tokenizer.chat_template") != fmt.template:
        raise ParityError("model.gguf: the chat template in its metadata differs from the training template")
    if metadata.get("tokenizer.ggml.eos_token_id") != fmt.end_token_id:
        raise ParityError(f"model.gguf: eos id {metadata.get('tokenizer.ggml.eos_token_id')} is not the "
                          f"template's end token {fmt.end_token_id}")
    checked = _llamacpp_parity(job.tools, out / "model.gguf", fmt, conversations, out.parent)
    return {"quantization": job.quantization, "bytes": (out / "model.gguf").stat().st_size,
            "adapter_bytes": (out / "adapter.gguf").stat().st_size, "num_ctx": num_ctx,
            "parity_prompts": checked}


def _llamacpp_parity(tools: LlamaCpp, model: Path, fmt: ChatFormat, conversations: list[list[dict[str, str]]],
                     work_dir: Path) -> int:
    """llama-server on the exported GGUF (its own embedded template and tokenizer) builds, for every assistant
    turn, exactly the prompt ids training used; raises ParityError naming the first difference."""
    checked = 0
    with LlamaServer(tools, model, work_dir / "parity-server") as server:
        for number, conversation in enumerate(conversations):
            messages = [{"role": m["role"], "content": m["content"].strip()} for m in conversation]
            for turn, message in enumerate(messages):
                if message["role"] != "assistant":
                    continue
                trained = fmt.training_prompt_ids(messages[:turn + 1])
                try:
                    served = server.prompt_ids(messages[:turn])
                except httpx.HTTPError as exc:  # e.g. a vocabulary llama.cpp's converter got wrong
                    raise ParityError(f"llama.cpp: conversation {number} turn {turn}: the exported GGUF could "
                                      f"not build the prompt ({exc}); {server.log_tail()}") from None
                if served != trained:
                    where = next((i for i, (a, b) in enumerate(zip(served, trained)) if a != b),
                                 min(len(served), len(trained)))
                    raise ParityError(f"llama.cpp: conversation {number} turn {turn}: prompt ids differ from "
                                      f"the trained ones at token {where}: {served[where:where + 8]} vs "
                                      f"{trained[where:where + 8]}")
                checked += 1
    return checked


def finish(store: ArtifactStore, prefix: str, output: Path, fmt: ChatFormat, spec: dict[str, Any],
           run: dict[str, Any], conversations: list[list[dict[str, str]]], model_name: str,
           gguf: GgufExport | None = None) -> dict[str, Any]:
    """Write template files, check parity, publish adapter / merged / report (and gguf); return the result."""
    # The merged model's generation_config is the base's (sampling included); the adapter folder gets it too.
    merged_config = output / "merged" / "generation_config.json"
    generation = json.loads(merged_config.read_text(encoding="utf-8")) if merged_config.is_file() else None
    for folder in ("adapter", "merged"):
        export_chat_files(fmt, output / folder, model_name, generation)
    parity = check_parity(fmt, output / "merged", conversations)
    curve = loss_curve(run.get("log_history", []))
    title = f"{model_name}: {spec.get('base_model')} LoRA r={spec['lora']['r']}"
    png = loss_curve_png(curve, title + (" DPO" if spec.get("method") == "dpo" else ""))
    rewards = reward_curve(run.get("log_history", []))
    metrics = {k: v for k, v in run.items() if k != "log_history"}
    keys = {name: f"{prefix}/{name}" for name in ("adapter", "merged", "report")}
    meta = {"base_model": spec.get("base_model"), "backend": spec.get("backend"), "job_spec": spec,
            "stop_tokens": fmt.stop_tokens}
    publish_artifact(store, keys["adapter"], _folder_files(output / "adapter"), {"kind": "adapter", **meta})
    publish_artifact(store, keys["merged"], _folder_files(output / "merged"), {"kind": "merged_model", **meta})
    exported: dict[str, Any] = {}
    if gguf is not None:
        # An extra format: when llama.cpp cannot convert this base or its prompts differ from training, nothing
        # is published for it and the result says why; the adapter and merged model above stand.
        try:
            info = export_gguf(gguf, output / "adapter", output / "gguf", fmt, model_name, conversations)
        except EmotuneError as exc:
            exported = {"gguf": {"failed": exc.message}}
        else:
            keys["gguf"] = f"{prefix}/gguf"
            publish_artifact(store, keys["gguf"], _folder_files(output / "gguf"), {"kind": "gguf", **meta, **info})
            exported = {"gguf_artifact": keys["gguf"], "gguf": info}
            parity.engines.append("llama.cpp")
    report_files = {
        "loss_curve.png": png,
        "loss_curve.json": json.dumps(curve, indent=1).encode(),
        "spec.json": json.dumps(spec, ensure_ascii=False, indent=1).encode(),
        "metrics.json": json.dumps(metrics, ensure_ascii=False, indent=1, default=str).encode(),
        "parity.json": json.dumps(asdict(parity), ensure_ascii=False, indent=1).encode(),
    }
    plots = {"loss_curve": file_key(keys["report"], "loss_curve.png")}
    if rewards:
        report_files["rewards.png"] = reward_curve_png(rewards, title + " DPO rewards")
        report_files["rewards.json"] = json.dumps(rewards, indent=1).encode()
        plots["rewards"] = file_key(keys["report"], "rewards.png")
    if run.get("samples"):
        report_files["samples.json"] = json.dumps(run["samples"], ensure_ascii=False, indent=1).encode()
    publish_artifact(store, keys["report"], report_files, {"kind": "training_report", **meta})
    return {
        "adapter_artifact": keys["adapter"], "merged_artifact": keys["merged"], "report_artifact": keys["report"],
        "plots": plots, "loss_curve": curve, **({"reward_curve": rewards} if rewards else {}),
        "parity": {"conversations": parity.conversations, "engines": parity.engines},
        "stop_tokens": fmt.stop_tokens, "serving_warnings": serving_warnings(output / "adapter"), **exported,
        **metrics,
    }


def _folder_files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}
