"""``python -m emotune.services.trainer.worker``: one hf-backend training run in its own process.

The service starts it per job so a cancel can kill it, memory is returned when it ends, and the gRPC server
stays responsive. It reads local inputs only (the service fetched them), resumes from the latest checkpoint in
its work dir, and reports on stdout as lines ``@@emotune {"type": ..., "message": ..., "data": {...}}``; any other
output is plain log. Its results land in ``<work_dir>/output`` (adapter/, merged/, run.json), marked complete
last so a rerun after a crash skips finished work.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

EVENT_PREFIX = "@@emotune "
OUTPUT_DIR = "output"
COMPLETE = ".complete"
SCORE_TIMEOUT_SECONDS = 600


def emit(type: str, message: str = "", **data: Any) -> None:
    rank = os.environ.get("RANK", "0")
    if rank != "0":  # a multi-process run reports from rank 0; another rank says only why it failed
        if type != "error":
            return
        message = f"rank {rank}: {message}"
    line = json.dumps({"type": type, "message": message, "data": data}, ensure_ascii=False, default=str)
    sys.stdout.write(EVENT_PREFIX + line + "\n")
    sys.stdout.flush()


def die_with_parent() -> None:
    """A worker must not outlive the service that started it (two trainers on one work dir)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run(spec_path: Path, base_dir: Path, data_path: Path, general_path: Path | None, work_dir: Path,
        threads: int, validator_addr: str = "", cpu_bf16: bool = False) -> None:
    from emotune.models.chat_template import ChatFormat
    from emotune.services.trainer import hf_backend
    from emotune.services.trainer.data import read_records
    from emotune.services.trainer.spec import TrainingSpec

    output = work_dir / OUTPUT_DIR
    if (output / COMPLETE).is_file():
        emit("log", "training already finished; reusing its output")
        return
    spec = TrainingSpec.parse(json.loads(spec_path.read_text(encoding="utf-8")), spec_path.name)
    fmt = ChatFormat.from_pretrained(base_dir, spec.chat_template or None)
    records, report = read_records(data_path)
    for error in report.errors[:20]:
        emit("warning", f"dataset line {error.line} skipped: {error.message}", line=error.line, field=error.field)
    general = read_records(general_path)[0] if general_path else None
    if spec.method == "dpo":
        from emotune.services.trainer import dpo

        pairs = dpo.prepare(spec, fmt, records, general, emit)
        metrics = dpo.train(spec, pairs, base_dir, work_dir, emit, threads, cpu_bf16)
    else:
        prepared = hf_backend.prepare(spec, fmt, records, general, emit)
        metrics = hf_backend.train(spec, prepared, base_dir, work_dir, emit, threads, cpu_bf16)
    if os.environ.get("RANK", "0") != "0":
        return  # rank 0 picks, merges and writes the output
    best = work_dir / "checkpoints" / metrics["best_checkpoint"]
    if validator_addr and spec.styles_yaml and spec.eval_prompts:
        best = pick_by_style_score(spec, fmt, base_dir, work_dir / "checkpoints", records, validator_addr, metrics)
    emit("log", f"best checkpoint {best.name} (eval loss {metrics['best_eval_loss']}); merging",
         step=metrics["best_step"])
    staging = work_dir / (OUTPUT_DIR + ".tmp")
    hf_backend.save_adapter(best, staging / "adapter")
    hf_backend.merge_adapter(base_dir, staging / "adapter", staging / "merged")
    if spec.eval_prompts:
        system = _common_system_prompt(records)
        metrics["samples"] = hf_backend.sample_replies(staging / "merged", fmt, spec.eval_prompts, system)
        for sample in metrics["samples"]:
            emit("log", f"sample: {sample['prompt']} -> {sample['reply']}", **sample)
        if not all(s["stopped"] for s in metrics["samples"]):
            emit("warning", "some eval replies did not stop by themselves (they ran to the token limit)")
    (staging / "run.json").write_text(json.dumps(metrics, ensure_ascii=False, default=str), encoding="utf-8")
    if output.exists():
        import shutil

        shutil.rmtree(output)
    staging.rename(output)
    (output / COMPLETE).touch()
    emit("log", "training finished", global_step=metrics["global_step"])


def pick_by_style_score(spec: Any, fmt: Any, base_dir: Path, checkpoints: Path, records: list,
                        validator_addr: str, metrics: dict[str, Any]) -> Path:
    """Among the kept best-by-loss checkpoints, the one whose replies the validator scores most in style."""
    import asyncio

    from emotune.data.styles import parse_styles
    from emotune.services.trainer import hf_backend

    document = parse_styles(spec.styles_yaml, "styles_yaml")
    trained = {r.style for r in records}
    systems = {s.name: s.serving_prompt for s in document.styles if s.name in trained} or \
        {s.name: s.serving_prompt for s in document.styles}
    candidates = hf_backend.candidate_checkpoints(checkpoints)
    replies = hf_backend.style_replies(base_dir, candidates, fmt, spec.eval_prompts, systems)
    scores = asyncio.run(_score(validator_addr, spec.styles_yaml, replies))
    losses = hf_backend.eval_losses(checkpoints)
    for path in candidates:
        emit("metric", f"{path.name} style score {scores[path.name]:.4f}", step=hf_backend.checkpoint_step(path),
             style_score=round(scores[path.name], 5), eval_loss=losses.get(path))
    best = max(candidates, key=lambda p: (scores[p.name], -losses.get(p, 0.0)))
    metrics.update(style_scores={k: round(v, 5) for k, v in scores.items()}, best_checkpoint=best.name,
                   best_step=hf_backend.checkpoint_step(best), best_eval_loss=losses.get(best))
    return best


async def _score(address: str, styles_yaml: str, replies: dict[str, dict[str, list[str]]]) -> dict[str, float]:
    """Mean validator style score per checkpoint over its styles (emotune.v1.Validator/Score)."""
    from emotune.grpc.client import open_channel
    from emotune.settings import Settings
    from emotune.v1 import validator_pb2, validator_pb2_grpc

    out = {}
    async with open_channel(address, Settings()) as channel:
        stub = validator_pb2_grpc.ValidatorStub(channel)
        for checkpoint, by_style in replies.items():
            results = [await stub.Score(validator_pb2.ScoreRequest(texts=texts, style=style, styles_yaml=styles_yaml),
                                        timeout=SCORE_TIMEOUT_SECONDS)  # the first call loads the embedder
                       for style, texts in by_style.items()]
            out[checkpoint] = sum(r.style_score for r in results) / len(results)
    return out



def _common_system_prompt(records: list) -> str | None:
    """The system prompt most training conversations carry (what eval prompts are asked with)."""
    from collections import Counter

    prompts = Counter(r.messages[0].content for r in records if r.messages[0].role == "system")
    return prompts.most_common(1)[0][0] if prompts else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--base-model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--general", type=Path)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--validator-addr", default="", help="score checkpoints' style (with styles_yaml)")
    parser.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on a CPU with native bf16")
    args = parser.parse_args(argv)
    die_with_parent()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        run(args.spec, args.base_model, args.data, args.general, args.work_dir, args.threads, args.validator_addr,
            args.cpu_bf16)
    except Exception as exc:
        from emotune.errors import EmotuneError

        message = exc.message if isinstance(exc, EmotuneError) else f"{type(exc).__name__}: {exc}"
        emit("error", message, kind=type(exc).__name__)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
