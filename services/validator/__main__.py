"""``python -m services.validator``: the validator gRPC service (Validator + shared Jobs), with /metrics."""

from __future__ import annotations

from emotune.grpc.process import ServiceParts, run_service
from emotune.jobrunner import JobRunner
from emotune.jobs import JobStore
from emotune.store.base import ArtifactStore
from services.validator.config import ValidatorSettings
from services.validator.server import add_servicers
from services.validator.service import Validator

DEFAULT_METRICS_PORT = 9102
JOB_KIND = "validation"


def build(settings: ValidatorSettings, store: ArtifactStore) -> ServiceParts:
    validator = Validator(settings, store)
    jobs = JobStore(store)
    runner = JobRunner(jobs, JOB_KIND, validator.run_job, max_concurrent=settings.validator_max_concurrent_jobs,
                       lease_seconds=settings.job_lease_seconds)

    async def on_stop() -> None:
        validator.stop()
        await runner.shutdown()

    return ServiceParts(add_servicers(validator, jobs, runner), after_serving=runner.start, on_stop=on_stop)


if __name__ == "__main__":
    run_service("validator", ValidatorSettings, build, DEFAULT_METRICS_PORT)
