"""``python -m services.inference``: serve ``emotune.v1.Inference`` until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio

from emotune.grpc.server import serve_forever, start_server
from emotune.logging import configure_logging
from emotune.metrics import start_metrics_server
from emotune.store import open_store
from services.inference.bootstrap import build_service, preload, servicers, shutdown
from services.inference.config import InferenceSettings

DEFAULT_METRICS_PORT = 9104


async def main() -> None:
    settings = InferenceSettings()
    configure_logging(settings.log_level, settings.log_json)
    service = build_service(settings, open_store(settings))
    start_metrics_server(settings.metrics_port or DEFAULT_METRICS_PORT,
                         addr="0.0.0.0" if settings.grpc_bind == "0.0.0.0" else "127.0.0.1")
    # Models load before the port opens: the health check turns SERVING only when requests can be answered.
    await preload(service, settings)
    running = await start_server("inference", settings, servicers(service))
    await serve_forever(running)  # returns after in-flight calls drained within the grace period
    shutdown(service)


if __name__ == "__main__":
    asyncio.run(main())
