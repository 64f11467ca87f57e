"""``python -m emotune.services.inference``: serve ``emotune.v1.Inference`` until SIGTERM/SIGINT."""

from __future__ import annotations

from emotune.grpc.process import ServiceParts, run_service
from emotune.services.inference.bootstrap import build_service, preload, shutdown
from emotune.services.inference.config import InferenceSettings
from emotune.services.inference.server import add_servicers
from emotune.store.base import ArtifactStore

DEFAULT_METRICS_PORT = 9104


def build(settings: InferenceSettings, store: ArtifactStore) -> ServiceParts:
    service = build_service(settings, store)
    # Models load before the port opens: the health check turns SERVING only when requests can be answered.
    # The engines are freed only after in-flight calls drained within the grace period.
    return ServiceParts(add_servicers(service), before_serving=lambda: preload(service, settings),
                        after_stop=lambda: shutdown(service),
                        describe=lambda: {"models": [m.id for m in service.registry.list()]})


def main() -> None:
    run_service("inference", InferenceSettings, build, DEFAULT_METRICS_PORT)


if __name__ == "__main__":
    main()
