"""Prometheus metrics of the gateway, served at ``/metrics`` on a port of their own (``EMOTUNE_METRICS_PORT``,
default 9106; ``emotune/services/gateway/__main__.py``), not on the API port."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("emotune_gateway_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram("emotune_gateway_request_seconds", "HTTP request duration (streams: until the last byte)",
                    ["route", "method"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120))
TTFT = Histogram("emotune_gateway_time_to_first_token_seconds", "request received to first content token",
                 ["model"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
TOKENS = Counter("emotune_gateway_tokens_total", "tokens reported by inference", ["model", "kind"])
IN_FLIGHT = Gauge("emotune_gateway_in_flight", "chat completions in flight")
REJECTED = Counter("emotune_gateway_rejected_total", "requests answered 429", ["reason"])


class RequestMetrics:
    """ASGI middleware: count and time every request by its route template (not the raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(route, scope["method"], str(status)).inc()
            LATENCY.labels(route, scope["method"]).observe(time.perf_counter() - started)
