"""``python -m services.datagen``: serve generation jobs over gRPC, resuming any job a previous process left."""

from __future__ import annotations

import asyncio

from emotune.grpc.server import serve_forever, start_server
from emotune.logging import configure_logging, get_logger
from emotune.metrics import start_metrics_server
from emotune.store import open_store
from services.datagen.config import DatagenSettings
from services.datagen.server import add_servicers
from services.datagen.service import DatagenService

DEFAULT_METRICS_PORT = 9101


async def main() -> None:
    settings = DatagenSettings()
    configure_logging(settings.log_level, settings.log_json)
    log = get_logger("services.datagen")
    store = open_store(settings)
    service = DatagenService(settings, store)
    metrics_port = start_metrics_server(settings.metrics_port or DEFAULT_METRICS_PORT, addr=settings.grpc_bind)
    running = await start_server("datagen", settings, add_servicers(service))
    resumed = await service.resume_unfinished()
    log.info("datagen ready", grpc_port=running.port, metrics_port=metrics_port, store=store.backend,
             resumed_jobs=resumed)
    await serve_forever(running, on_stop=service.shutdown)


if __name__ == "__main__":
    asyncio.run(main())
