"""``python -m services.validator``: the validator gRPC service (Validator + shared Jobs), with /metrics."""

from __future__ import annotations

import asyncio

from emotune.grpc.server import serve_forever, start_server
from emotune.jobrunner import JobRunner
from emotune.jobs import JobStore
from emotune.jobs_grpc import JobsServicer
from emotune.logging import configure_logging, get_logger
from emotune.metrics import start_metrics_server
from emotune.store import open_store
from emotune.v1 import jobs_pb2_grpc, validator_pb2_grpc
from services.validator.config import ValidatorSettings
from services.validator.server import ValidatorServicer
from services.validator.service import Validator

JOB_KIND = "validation"
log = get_logger(__name__)


async def main() -> None:
    settings = ValidatorSettings()
    configure_logging(settings.log_level, settings.log_json)
    store = open_store(settings)
    validator = Validator(settings, store)
    jobs = JobStore(store)
    runner = JobRunner(jobs, JOB_KIND, validator.run_job, max_concurrent=settings.validator_max_concurrent_jobs)
    metrics_port = start_metrics_server(settings.metrics_port_or_default(), addr=settings.grpc_bind)
    log.info("metrics served", port=metrics_port)

    def add_servicers(server):
        validator_pb2_grpc.add_ValidatorServicer_to_server(ValidatorServicer(validator, runner), server)
        jobs_pb2_grpc.add_JobsServicer_to_server(JobsServicer(jobs, runner), server)
        return ["emotune.v1.Validator", "emotune.v1.Jobs"]

    running = await start_server("validator", settings, add_servicers)
    await runner.resume_unfinished()

    async def on_stop() -> None:
        validator.stop()
        await runner.shutdown()

    await serve_forever(running, on_stop=on_stop)


if __name__ == "__main__":
    asyncio.run(main())
