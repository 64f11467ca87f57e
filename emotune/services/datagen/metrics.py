"""Prometheus series of the datagen service (served by ``emotune.metrics.start_metrics_server``)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TEACHER_REQUESTS = Counter(
    "emotune_datagen_teacher_requests_total", "Teacher requests by outcome (ok or failure reason)",
    ["provider", "outcome"],
)
TEACHER_LATENCY = Histogram(
    "emotune_datagen_teacher_request_seconds", "Teacher request latency", ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
RETRIES = Counter("emotune_datagen_retries_total", "Teacher requests retried, by reason", ["reason"])
SAMPLES = Counter("emotune_datagen_samples_total", "Finished samples by status (ok / failed)", ["status"])
