"""Trainer options: every field is an ``EMOTUNE_*`` environment variable (e.g. ``EMOTUNE_TRAINER_THREADS``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from emotune.settings import Settings


class TrainerSettings(Settings):
    trainer_work_dir: Path | None = Field(
        None, description="local folder for job inputs, checkpoints and outputs (default <cache_dir>/trainer)"
    )
    trainer_threads: int = Field(0, ge=0, description="torch CPU threads of a training run (0 = all cores)")
    trainer_cpu_bf16: bool = Field(
        False, description="hf LoRA on a CPU with native bf16 (AVX512-BF16 / AMX) under bf16 autocast: about 2x "
                           "faster steps than fp32, slightly different numbers (ignored on other CPUs and on CUDA)")
    trainer_max_jobs: int = Field(1, ge=1, description="training jobs run at the same time")
    trainer_python: Path | None = Field(
        None, description="python of the hf worker (default: the service's own interpreter)"
    )
    trainer_xtuner_venv: Path | None = Field(
        None, description="XTuner virtualenv (default: built/reused by scripts/xtuner-venv.sh; GPU images set it)"
    )
    trainer_xtuner_device: str = Field(
        "auto", description="'auto' (cuda when present), 'cuda' or 'cpu' (fp32 LoRA, tests/CI only)"
    )
    trainer_max_restarts: int = Field(
        0, ge=0, le=10, description="hf backend: times a failed training run (one process, or a torchrun group "
        "whose rank died) is started again, each resuming from its last checkpoint; 0 = the job fails at once")
    trainer_stop_grace_seconds: float = Field(10.0, gt=0, description="SIGTERM -> SIGKILL wait on cancel")

    @property
    def work_root(self) -> Path:
        return self.trainer_work_dir or self.cache_dir / "trainer"
