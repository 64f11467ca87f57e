"""``python -m emotune.services.validator``: the validator gRPC service (Validator + shared Jobs), with /metrics."""

from __future__ import annotations

from emotune.grpc.process import ServiceParts, run_service
from emotune.services.validator.config import ValidatorSettings
from emotune.services.validator.server import add_servicers
from emotune.services.validator.service import Validator
from emotune.store.base import ArtifactStore

DEFAULT_METRICS_PORT = 9102


def build(settings: ValidatorSettings, store: ArtifactStore) -> ServiceParts:
    validator = Validator(settings, store)
    return ServiceParts(add_servicers(validator), after_serving=validator.start_runner, on_stop=validator.shutdown)


if __name__ == "__main__":
    run_service("validator", ValidatorSettings, build, DEFAULT_METRICS_PORT)
