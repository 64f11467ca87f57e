"""CPU LoRA training throughput: emotune's packed hf path vs an unpacked transformers ``Trainer`` baseline.

    python -m benchmarks.trainer_throughput [--model smollm2-135m] [--samples 200] [--steps 6] [--gemma] [--bf16]

Both variants train the same model (LoRA r=8 on every projection, fp32) on the same styled conversations
(Chinese replies of varied length, rendered by the model's chat template, loss on replies only):

- baseline: ``transformers.Trainer`` with one sample per row, ``batch_size`` rows padded to the longest of the
  batch (``DataCollatorForSeq2Seq``), the usual LLaMA-Factory / tutorial setup;
- candidate: emotune's path (``emotune.services.trainer.hf_backend``): samples bin-packed into ``max_length`` rows,
  position ids restarting per sample (block-diagonal attention), no padding.

Throughput = real (non-pad) tokens per second over ``--steps`` optimizer steps after one warm-up step. Each
variant runs in its own process so peak RSS is its own. Target: candidate >= 1.5x baseline.
``--gemma`` also times a complete hf job (Gemma 3 270M, ``--samples`` samples, 1 epoch) through the worker.
``--bf16`` also runs the packed path under bf16 autocast (``EMOTUNE_TRAINER_CPU_BF16``, the local stack's setting
on CPUs with native bf16) against the packed fp32 run: same rows, same steps.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import typer

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

OPENERS = ["辛苦啦~", "抱抱你～", "哎呀，", "没事的没事的，", "好家伙！", "乖～"]
BODIES = ["要给自己泡杯热茶放松一下吗？", "今天已经很努力了，剩下的交给明天吧。", "我陪你慢慢聊呀，不着急。",
          "先深呼吸三次，把烦心事放一放。", "你这是要把体重秤压成分子料理？", "早点休息吧，明天又是新的一天哦。",
          "记得按时吃饭，别让胃也跟着委屈。", "要不要出去走走，晒晒太阳？"]
QUESTIONS = ["今天好累啊", "又胖了5斤！", "老板又骂我了", "失眠了怎么办", "下雨天不想出门", "考试没考好",
             "朋友生日忘了", "工作好无聊", "想家了", "猫咪生病了"]


def styled_records(n: int, seed: int = 0) -> list:
    from emotune.data.records import Message, Record, record_id

    rng = random.Random(seed)
    records = []
    for i in range(n):
        question = rng.choice(QUESTIONS)
        reply = rng.choice(OPENERS) + "".join(rng.choice(BODIES) for _ in range(rng.choice([1, 1, 2, 3, 5, 8])))
        messages = [Message(role="system", content="你是一个温柔体贴的聊天伙伴。"),
                    Message(role="user", content=question), Message(role="assistant", content=reply + "🌸")]
        records.append(Record(id=record_id("bench", i), style="温柔", messages=messages))
    return records


class _Timer:
    """Trainer callback: wall time and real tokens of the steps after the warm-up step."""

    def __init__(self, counter) -> None:
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 1:
                    timer.start, timer.tokens0 = time.perf_counter(), counter()
                timer.end, timer.tokens1 = time.perf_counter(), counter()

        self.callback = Callback()
        self.start = self.end = 0.0
        self.tokens0 = self.tokens1 = 0

    @property
    def tokens_per_s(self) -> float:
        return (self.tokens1 - self.tokens0) / max(1e-9, self.end - self.start)


def run_variant(variant: str, model_name: str, samples: int, steps: int, batch_size: int, max_length: int,
                threads: int) -> dict:
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from emotune.models.basemodels import resolve_base_model
    from emotune.models.chat_template import ChatFormat
    from emotune.services.trainer.data import BlockCollator, encode_records, pack
    from emotune.services.trainer.hf_backend import load_model
    from emotune.services.trainer.spec import TrainingSpec
    from emotune.settings import Settings

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    base = resolve_base_model(model_name, Settings().cache_dir)
    fmt = ChatFormat.from_pretrained(base)
    encoded, report = encode_records(fmt, styled_records(samples), max_length)
    spec = TrainingSpec(dataset_artifact="bench", lora={"r": 8, "alpha": 16, "dropout": 0.0})
    model = load_model(base, spec)
    pad = fmt.end_token_id
    if variant == "baseline":
        rows = [{"input_ids": s.input_ids, "labels": s.labels, "attention_mask": [1] * len(s.input_ids)}
                for s in encoded]
        inner = DataCollatorForSeq2Seq(fmt.tokenizer, padding="longest", label_pad_token_id=-100)
        seen = {"tokens": 0}

        def collator(batch: list) -> dict:
            seen["tokens"] += sum(len(r["input_ids"]) for r in batch)
            return inner(batch)

        counter, per_device = (lambda: seen["tokens"]), batch_size
    else:  # "packed" or "packed-bf16"
        rows = pack(encoded, max_length)
        collator = BlockCollator(pad, packed=True)
        counter, per_device = (lambda: collator.tokens_seen), max(1, batch_size * 128 // max_length)
    timer = _Timer(counter)
    fmt.tokenizer.pad_token_id = pad
    args = TrainingArguments(output_dir=f"/tmp/emotune-bench-{variant}", per_device_train_batch_size=per_device,
                             max_steps=steps + 1, learning_rate=2e-4, logging_steps=1000, save_strategy="no",
                             report_to=[], disable_tqdm=True, use_cpu=True, remove_unused_columns=False,
                             dataloader_num_workers=0, seed=0, bf16=variant == "packed-bf16")
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[timer.callback]).train()
    return {"variant": variant, "tokens_per_s": round(timer.tokens_per_s, 1), "rows": len(rows),
            "rows_per_step": per_device, "tokens_measured": timer.tokens1 - timer.tokens0,
            "seconds": round(timer.end - timer.start, 1), "dataset_tokens": report.total_tokens,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def gemma_job(samples: int, threads: int) -> dict:
    """A whole hf job on Gemma 3 270M through the worker process: wall time, steps, tokens/s."""
    import tempfile

    from emotune.data.records import dumps_records
    from emotune.models.basemodels import resolve_base_model
    from emotune.settings import Settings

    base = resolve_base_model("gemma3-270m", Settings().cache_dir)
    work = Path(tempfile.mkdtemp(prefix="emotune-gemma-bench-"))
    (work / "records.jsonl").write_text(dumps_records(styled_records(samples)), encoding="utf-8")
    (work / "spec.json").write_text(json.dumps({"dataset_artifact": "bench", "base_model": "gemma3-270m",
                                                "epochs": 1, "batch_size": 2, "max_length": 512,
                                                "eval_fraction": 0.05, "learning_rate": 2e-4}))
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "emotune.services.trainer.worker", "--spec", str(work / "spec.json"),
                               "--base-model", str(base), "--data", str(work / "records.jsonl"), "--work-dir",
                               str(work), "--threads", str(threads)], capture_output=True, text=True, check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - started
    events = [json.loads(line[len("@@emotune "):]) for line in proc.stdout.splitlines()
              if line.startswith("@@emotune ")]
    progress = [e["data"] for e in events if e["type"] == "progress"]
    return {"returncode": proc.returncode, "wall_s": round(wall, 1), "steps": len(progress),
            "tokens_per_s": progress[-1]["tokens_per_s"] if progress else None,
            "error": proc.stdout[-2000:] + proc.stderr[-2000:] if proc.returncode else None}


app = typer.Typer(add_completion=False)


@app.command(help=__doc__)
def main(model: str = "smollm2-135m", samples: int = 200, steps: int = 6,
         batch_size: Annotated[int, typer.Option(help="baseline rows per step (candidate: same tokens)")] = 8,
         max_length: int = 512, threads: int = 0,
         gemma: Annotated[bool, typer.Option(
             "--gemma", help="also time a Gemma 3 270M job on --samples samples")] = False,
         bf16: Annotated[bool, typer.Option("--bf16", help="also time the packed path under bf16 autocast")] = False,
         variant: Annotated[Literal["baseline", "packed", "packed-bf16"] | None, typer.Option(hidden=True)] = None,
         ) -> None:
    common = [model, samples, steps, batch_size, max_length, threads]
    if variant:
        print(json.dumps(run_variant(variant, *common)))
        return
    results = {}
    for name in ("baseline", "packed", *(["packed-bf16"] if bf16 else [])):
        argv = [sys.executable, "-m", "benchmarks.trainer_throughput", "--variant", name, "--model", model,
                "--samples", str(samples), "--steps", str(steps), "--batch-size", str(batch_size),
                "--max-length", str(max_length), "--threads", str(threads)]
        out = subprocess.run(argv, capture_output=True, text=True, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    base, cand = results["baseline"], results["packed"]
    print(f"model {model}, {samples} samples ({base['dataset_tokens']} tokens), {steps} timed steps")
    for r in (base, cand):
        print(f"  {r['variant']:9s} {r['tokens_per_s']:8.1f} tokens/s  ({r['rows_per_step']} rows/step, "
              f"{r['tokens_measured']} tokens in {r['seconds']} s)  peak RSS {r['peak_rss_mb']} MB")
    ratio = cand["tokens_per_s"] / max(1e-9, base["tokens_per_s"])
    print(f"  packed / baseline = {ratio:.2f}x (target >= 1.5x)")
    if bf16:
        from emotune.services.trainer.hf_backend import cpu_has_native_bf16

        half = results["packed-bf16"]
        print(f"  {half['variant']:9s} {half['tokens_per_s']:8.1f} tokens/s  ({half['tokens_measured']} tokens in "
              f"{half['seconds']} s)  peak RSS {half['peak_rss_mb']} MB")
        print(f"  packed bf16 / packed fp32 = {half['tokens_per_s'] / max(1e-9, cand['tokens_per_s']):.2f}x "
              f"(native bf16 on this CPU: {cpu_has_native_bf16()})")
    if gemma:
        job = gemma_job(samples, threads)
        print(f"gemma3-270m hf LoRA job, {samples} samples, 1 epoch: {job['wall_s']} s wall, "
              f"{job['steps']} steps, {job['tokens_per_s']} tokens/s" + (f"\n{job['error']}" if job["error"] else ""))


if __name__ == "__main__":
    app()
