"""``python -m emotune.services.gateway``: serve the OpenAI-compatible HTTP API with uvicorn until SIGTERM/SIGINT, and
Prometheus ``/metrics`` on its own port (``EMOTUNE_METRICS_PORT``, default 9106), never on the API's."""

from __future__ import annotations

import uvicorn

from emotune.logging import configure_logging, get_logger
from emotune.metrics import start_metrics_server
from emotune.services.gateway.app import create_app
from emotune.services.gateway.config import GatewaySettings

DEFAULT_METRICS_PORT = 9106  # /metrics on a port of its own, as the gRPC services (9101-9105): never the API's


def main() -> None:
    settings = GatewaySettings()
    configure_logging(settings.log_level, settings.log_json)
    metrics_port = start_metrics_server(settings.metrics_port or DEFAULT_METRICS_PORT, addr=settings.gateway_host)
    get_logger("emotune.services.gateway").info("gateway metrics", metrics_port=metrics_port)
    uvicorn.run(create_app(settings), host=settings.gateway_host, port=settings.gateway_port,
                log_level=settings.log_level.lower(), access_log=False, timeout_graceful_shutdown=30)


if __name__ == "__main__":
    main()
