"""Prometheus metrics of the validator (served on its /metrics port next to the shared gRPC metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SAMPLES = Counter("emotune_validator_samples_total", "samples validated by jobs", ["result"])
REJECTIONS = Counter("emotune_validator_rejections_total", "rejection reasons given by jobs", ["reason"])
SCORED_TEXTS = Counter("emotune_validator_scored_texts_total", "texts rated by Score calls")
EMBED_SECONDS = Histogram("emotune_validator_embed_seconds", "time spent embedding, per validation job",
                          buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
