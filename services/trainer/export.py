"""From a finished run to published artifacts: chat-template files, parity check, loss curve, upload.

Both backends leave ``adapter/`` and ``merged/`` weight folders; this module writes the *same* chat template
and stop tokens into both (tokenizer_config.json, generation_config.json, LMDeploy JSON, Ollama Modelfile),
proves token-level parity with the training formatter (the job fails otherwise), draws the loss curve and
publishes three immutable artifacts: ``<prefix>/adapter``, ``<prefix>/merged``, ``<prefix>/report``.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from emotune.chat_template import ChatFormat, check_parity, export_chat_files
from emotune.records import Record
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
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
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
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def finish(store: ArtifactStore, prefix: str, output: Path, fmt: ChatFormat, spec: dict[str, Any],
           run: dict[str, Any], conversations: list[list[dict[str, str]]], model_name: str) -> dict[str, Any]:
    """Write template files, check parity, publish adapter / merged / report; return the job result."""
    for folder in ("adapter", "merged"):
        export_chat_files(fmt, output / folder, model_name)
    parity = check_parity(fmt, output / "merged", conversations)
    curve = loss_curve(run.get("log_history", []))
    png = loss_curve_png(curve, f"{model_name}: {spec.get('base_model')} LoRA r={spec['lora']['r']}")
    metrics = {k: v for k, v in run.items() if k != "log_history"}
    keys = {name: f"{prefix}/{name}" for name in ("adapter", "merged", "report")}
    meta = {"base_model": spec.get("base_model"), "backend": spec.get("backend"), "job_spec": spec,
            "stop_tokens": fmt.stop_tokens}
    publish_artifact(store, keys["adapter"], _folder_files(output / "adapter"), {"kind": "adapter", **meta})
    publish_artifact(store, keys["merged"], _folder_files(output / "merged"), {"kind": "merged_model", **meta})
    report_files = {
        "loss_curve.png": png,
        "loss_curve.json": json.dumps(curve, indent=1).encode(),
        "spec.json": json.dumps(spec, ensure_ascii=False, indent=1).encode(),
        "metrics.json": json.dumps(metrics, ensure_ascii=False, indent=1, default=str).encode(),
        "parity.json": json.dumps(asdict(parity), ensure_ascii=False, indent=1).encode(),
    }
    if run.get("samples"):
        report_files["samples.json"] = json.dumps(run["samples"], ensure_ascii=False, indent=1).encode()
    publish_artifact(store, keys["report"], report_files, {"kind": "training_report", **meta})
    return {
        "adapter_artifact": keys["adapter"], "merged_artifact": keys["merged"], "report_artifact": keys["report"],
        "plots": {"loss_curve": file_key(keys["report"], "loss_curve.png")},
        "loss_curve": curve, "parity": {"conversations": parity.conversations, "engines": parity.engines},
        "stop_tokens": fmt.stop_tokens, **metrics,
    }


def _folder_files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}
