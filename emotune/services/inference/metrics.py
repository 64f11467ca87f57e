"""Prometheus metrics of the inference service (served by ``emotune.metrics.start_metrics_server``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

IN_FLIGHT = Gauge("emotune_inference_in_flight", "generations running now")
QUEUED = Gauge("emotune_inference_queued", "requests waiting for a generation slot")
REJECTED = Counter("emotune_inference_rejected_total", "requests refused because the queue was full")
GENERATIONS = Counter("emotune_inference_generations_total", "finished generations", ["model", "finish_reason"])
TOKENS = Counter("emotune_inference_tokens_total", "prompt and completion tokens", ["model", "kind"])
TTFT = Histogram("emotune_inference_time_to_first_token_seconds", "admission to first text chunk", ["model"],
                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
LOADED_MODELS = Gauge("emotune_inference_loaded_models", "models currently served")
MODEL_MEMORY = Gauge("emotune_inference_model_memory_bytes", "memory held by a served model", ["model"])
ON_DEMAND_LOADS = Histogram("emotune_inference_on_demand_load_seconds",
                            "loading a published fine-tune on the first request that names it here",
                            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900))
