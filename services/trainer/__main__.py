"""``python -m services.trainer``: serve training jobs over gRPC, resuming any job a previous process left."""

from __future__ import annotations

import asyncio

from emotune.grpc.server import serve_forever, start_server
from emotune.logging import configure_logging, get_logger
from emotune.metrics import start_metrics_server
from emotune.store import open_store
from services.trainer.config import TrainerSettings
from services.trainer.server import add_servicers
from services.trainer.service import TrainerService

DEFAULT_METRICS_PORT = 9103


async def main() -> None:
    settings = TrainerSettings()
    configure_logging(settings.log_level, settings.log_json)
    log = get_logger("services.trainer")
    store = open_store(settings)
    service = TrainerService(settings, store)
    metrics_port = start_metrics_server(settings.metrics_port or DEFAULT_METRICS_PORT, addr=settings.grpc_bind)
    running = await start_server("trainer", settings, add_servicers(service))
    resumed = await service.resume_unfinished()
    log.info("trainer ready", grpc_port=running.port, metrics_port=metrics_port, store=store.backend,
             work_dir=str(settings.work_root), resumed_jobs=resumed)
    await serve_forever(running, on_stop=service.shutdown)


if __name__ == "__main__":
    asyncio.run(main())
