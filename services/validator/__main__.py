"""``python -m services.validator``: the validator gRPC service (Validator + shared Jobs), with /metrics."""

from __future__ import annotations

from emotune.grpc.process import ServiceParts, run_service
from emotune.store.base import ArtifactStore
from services.validator.config import ValidatorSettings
from services.validator.server import add_servicers
from services.validator.service import Validator

DEFAULT_METRICS_PORT = 9102


def build(settings: ValidatorSettings, store: ArtifactStore) -> ServiceParts:
    validator = Validator(settings, store)
    return ServiceParts(add_servicers(validator), after_serving=validator.start_runner, on_stop=validator.shutdown)


if __name__ == "__main__":
    run_service("validator", ValidatorSettings, build, DEFAULT_METRICS_PORT)
