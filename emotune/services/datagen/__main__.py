"""``python -m emotune.services.datagen``: serve generation jobs over gRPC, resuming any job a previous process left."""

from __future__ import annotations

from emotune.grpc.process import ServiceParts, run_service
from emotune.services.datagen.config import DatagenSettings
from emotune.services.datagen.server import add_servicers
from emotune.services.datagen.service import DatagenService
from emotune.store.base import ArtifactStore

DEFAULT_METRICS_PORT = 9101


def build(settings: DatagenSettings, store: ArtifactStore) -> ServiceParts:
    service = DatagenService(settings, store)
    return ServiceParts(add_servicers(service), after_serving=service.start_runner, on_stop=service.shutdown)


if __name__ == "__main__":
    run_service("datagen", DatagenSettings, build, DEFAULT_METRICS_PORT)
