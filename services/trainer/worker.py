"""``python -m services.trainer.worker``: one hf-backend training run in its own process.

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


def emit(type: str, message: str = "", **data: Any) -> None:
    line = json.dumps({"type": type, "message": message, "data": data}, ensure_ascii=False, default=str)
    sys.stdout.write(EVENT_PREFIX + line + "\n")
    sys.stdout.flush()


def die_with_parent() -> None:
    """A worker must not outlive the service that started it (two trainers on one work dir)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run(spec_path: Path, base_dir: Path, data_path: Path, general_path: Path | None, work_dir: Path,
        threads: int) -> None:
    from emotune.chat_template import ChatFormat
    from services.trainer import hf_backend
    from services.trainer.data import read_records
    from services.trainer.spec import TrainingSpec

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
    prepared = hf_backend.prepare(spec, fmt, records, general, emit)
    metrics = hf_backend.train(spec, prepared, base_dir, work_dir, emit, threads)
    best = work_dir / "checkpoints" / metrics["best_checkpoint"]
    emit("log", f"best checkpoint {best.name} (eval loss {metrics['best_eval_loss']}); merging",
         step=metrics["best_step"])
    staging = work_dir / (OUTPUT_DIR + ".tmp")
    hf_backend.save_adapter(best, staging / "adapter")
    hf_backend.merge_adapter(base_dir, staging / "adapter", staging / "merged")
    (staging / "run.json").write_text(json.dumps(metrics, ensure_ascii=False, default=str), encoding="utf-8")
    if output.exists():
        import shutil

        shutil.rmtree(output)
    staging.rename(output)
    (output / COMPLETE).touch()
    emit("log", "training finished", global_step=metrics["global_step"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--base-model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--general", type=Path)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    die_with_parent()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        run(args.spec, args.base_model, args.data, args.general, args.work_dir, args.threads)
    except Exception as exc:
        from emotune.errors import EmotuneError

        message = exc.message if isinstance(exc, EmotuneError) else f"{type(exc).__name__}: {exc}"
        emit("error", message, kind=type(exc).__name__)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
