"""Prometheus ``/metrics`` for the gRPC services (the gateway serves its own on its HTTP port)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

GRPC_REQUESTS = Counter(
    "emotune_grpc_requests_total", "gRPC calls handled", ["service", "method", "code"]
)
GRPC_LATENCY = Histogram(
    "emotune_grpc_request_seconds", "gRPC call latency (until the last response message)", ["service", "method"]
)


def start_metrics_server(port: int, addr: str = "127.0.0.1") -> int:
    """Serve the default registry on ``addr:port`` (port 0 picks a free one); returns the bound port."""
    server, _thread = start_http_server(port, addr=addr)
    return server.server_address[1]
