"""``python -m emotune.services.pipeline``: fine-tuning jobs end to end over gRPC (Pipeline + shared Jobs), with /metrics.
Any number of replicas may share one store: each job has one owner, and a dead owner's jobs are taken over."""

from __future__ import annotations

from emotune.grpc.process import ServiceParts, run_service
from emotune.services.pipeline.config import PipelineSettings
from emotune.services.pipeline.server import add_servicers
from emotune.services.pipeline.service import PipelineService
from emotune.services.pipeline.stages import ServiceChannels
from emotune.store.base import ArtifactStore

DEFAULT_METRICS_PORT = 9105


def build(settings: PipelineSettings, store: ArtifactStore) -> ServiceParts:
    service = PipelineService(settings, store, ServiceChannels.open(settings))
    return ServiceParts(add_servicers(service), after_serving=service.start_runner, on_stop=service.shutdown)


if __name__ == "__main__":
    run_service("pipeline", PipelineSettings, build, DEFAULT_METRICS_PORT)
