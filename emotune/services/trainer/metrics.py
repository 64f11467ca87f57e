"""Prometheus series of the trainer service (served by ``emotune.metrics.start_metrics_server``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

STEPS = Counter("emotune_trainer_steps_total", "Optimizer steps completed, by backend", ["backend"])
TOKENS_PER_SECOND = Gauge("emotune_trainer_tokens_per_second", "Training throughput of the running job",
                          ["backend"])
TRAIN_LOSS = Gauge("emotune_trainer_loss", "Last training loss of the running job", ["backend"])
EVAL_LOSS = Gauge("emotune_trainer_eval_loss", "Last held-out loss of the running job", ["backend"])
CHECKPOINTS = Counter("emotune_trainer_checkpoints_total", "Checkpoints saved", ["backend"])
