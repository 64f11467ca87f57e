"""``python -m services.gateway``: serve the OpenAI-compatible HTTP API with uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import uvicorn

from emotune.logging import configure_logging
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    configure_logging(settings.log_level, settings.log_json)
    uvicorn.run(create_app(settings), host=settings.gateway_host, port=settings.gateway_port,
                log_level=settings.log_level.lower(), access_log=False, timeout_graceful_shutdown=30)


if __name__ == "__main__":
    main()
