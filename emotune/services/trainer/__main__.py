"""``python -m emotune.services.trainer``: serve training jobs over gRPC, resuming any job a previous process left."""

from __future__ import annotations

from emotune.grpc.process import ServiceParts, run_service
from emotune.services.trainer.config import TrainerSettings
from emotune.services.trainer.server import add_servicers
from emotune.services.trainer.service import TrainerService
from emotune.store.base import ArtifactStore

DEFAULT_METRICS_PORT = 9103


def build(settings: TrainerSettings, store: ArtifactStore) -> ServiceParts:
    service = TrainerService(settings, store)
    return ServiceParts(add_servicers(service), after_serving=service.start_runner, on_stop=service.shutdown,
                        describe=lambda: {"work_dir": str(settings.work_root)})


if __name__ == "__main__":
    run_service("trainer", TrainerSettings, build, DEFAULT_METRICS_PORT)
