"""CPU step time of ``method: dpo`` against the supervised step, on the same conversations.

    python -m benchmarks.dpo_step [--model smollm2-135m] [--pairs 48] [--steps 6] [--batch 4]

Pairs: chosen = a styled reply (as benchmarks.trainer_throughput writes them), rejected = a generic numbered-tips
reply. Supervised trains the chosen conversations (unpacked, ``batch`` rows, as DPO's rows are unpacked too; and
packed, the supervised default); DPO trains the pairs (``batch`` pairs = 2 x ``batch`` rows forward and backward)
after one reference pass over them (adapter disabled, no grad). Reported: seconds per optimizer step after the
first, and the reference pass's seconds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GENERIC = "关于“{q}”，这里有几点建议：1. 保持规律作息；2. 适当运动；3. 和朋友聊聊。希望对你有帮助！"


def _pairs(n: int) -> list:
    from benchmarks.trainer_throughput import styled_records
    from emotune.data.records import Message

    out = []
    for record in styled_records(n):
        question = record.first_user_text
        out.append(record.model_copy(update={"rejected": Message(role="assistant", content=GENERIC.format(q=question))}))
    return out


def _timed(run, steps: int) -> tuple[float, float | None]:
    """(seconds per step after the first, seconds before step 1) from the run's progress events."""
    stamps: dict[int, float] = {}
    started = time.monotonic()

    def emit(type: str, message: str = "", **data) -> None:
        if type == "progress":
            stamps[data["step"]] = time.monotonic()

    run(emit)
    first = stamps[1]
    return (stamps[steps] - first) / (steps - 1), first - started


app = typer.Typer(add_completion=False)


@app.command(help=__doc__.splitlines()[0])
def main(model: str = "smollm2-135m", pairs: int = 48, steps: int = 6, batch: int = 4, threads: int = 0) -> None:
    from emotune.models.basemodels import resolve_base_model
    from emotune.models.chat_template import ChatFormat
    from emotune.services.trainer import dpo, hf_backend
    from emotune.services.trainer.spec import TrainingSpec
    from emotune.settings import Settings

    base = resolve_base_model(model, Settings().cache_dir)
    fmt = ChatFormat.from_pretrained(base)
    records = _pairs(pairs)
    common = {"dataset_artifact": "bench", "base_model": model, "max_steps": steps,
              "batch_size": batch, "eval_fraction": 0.0, "max_length": 256, "learning_rate": 5e-5,
              "lora": {"r": 8, "alpha": 16, "dropout": 0.0}, "eval_every_steps": 10_000}
    quiet = lambda *a, **k: None
    results = {}
    for name, spec in (("sft_unpacked", TrainingSpec(**common, packing=False)),
                       ("sft_packed", TrainingSpec(**common, packing=True)),
                       ("dpo", TrainingSpec(**common, method="dpo"))):
        work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        try:
            if spec.method == "dpo":
                prepared = dpo.prepare(spec, fmt, records, None, quiet)
                per_step, before = _timed(lambda emit, p=prepared, s=spec, w=work: dpo.train(
                    s, p, base, w, emit, threads), steps)
            else:
                prepared = hf_backend.prepare(spec, fmt, records, None, quiet)
                per_step, before = _timed(lambda emit, p=prepared, s=spec, w=work: hf_backend.train(
                    s, p, base, w, emit, threads), steps)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        results[name] = (per_step, before)
        print(f"{name:13s} {per_step:6.2f} s/step  ({before:5.1f} s before step 1: model load"
              f"{' + reference pass' if name == 'dpo' else ''})", flush=True)
    sft = results["sft_unpacked"][0]
    print(f"dpo / sft_unpacked step time: {results['dpo'][0] / sft:.2f}x; "
          f"dpo / sft_packed: {results['dpo'][0] / results['sft_packed'][0]:.2f}x")


if __name__ == "__main__":
    app()
