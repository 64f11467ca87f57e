"""``python -m services.inference``: serve ``emotune.v1.Inference`` until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio

from emotune.grpc.server import serve_forever, start_server
from emotune.logging import configure_logging, get_logger
from emotune.metrics import start_metrics_server
from emotune.store import open_store
from services.inference.bootstrap import build_service, preload, servicers, shutdown
from services.inference.config import InferenceSettings

DEFAULT_METRICS_PORT = 9104
log = get_logger(__name__)


async def main() -> None:
    settings = InferenceSettings()
    configure_logging(settings.log_level, settings.log_json)
    store = open_store(settings)
    service = build_service(settings, store)
    metrics_port = start_metrics_server(settings.metrics_port or DEFAULT_METRICS_PORT, addr=settings.grpc_bind)
    # Models load before the port opens: the health check turns SERVING only when requests can be answered.
    await preload(service, settings)
    running = await start_server("inference", settings, servicers(service))
    log.info("inference ready", grpc_port=running.port, metrics_port=metrics_port, store=store.backend,
             models=[m.id for m in service.registry.list()])
    await serve_forever(running)  # returns after in-flight calls drained within the grace period
    shutdown(service)


if __name__ == "__main__":
    asyncio.run(main())
