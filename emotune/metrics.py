"""Prometheus ``/metrics`` on a port of its own for every service (the gRPC services and the gateway), and the
metrics every service shares: its gRPC calls and the jobs its ``JobRunner`` runs."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

GRPC_REQUESTS = Counter(
    "emotune_grpc_requests_total", "gRPC calls handled", ["service", "method", "code"]
)
GRPC_LATENCY = Histogram(
    "emotune_grpc_request_seconds", "gRPC call latency (until the last response message)", ["service", "method"]
)

JOBS_RUNNING = Gauge("emotune_jobs_running", "jobs whose handler is running in this process", ["kind"])
JOBS_FINISHED = Counter("emotune_jobs_finished_total", "final states this process recorded", ["kind", "state"])
JOB_RUN_SECONDS = Histogram(
    "emotune_job_run_seconds", "handler time of the jobs this process finished (its own share after a takeover)",
    ["kind", "state"], buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, float("inf")))


def start_metrics_server(port: int, addr: str = "127.0.0.1") -> int:
    """Serve the default registry on ``addr:port`` (port 0 picks a free one); returns the bound port."""
    server, _thread = start_http_server(port, addr=addr)
    return server.server_address[1]
