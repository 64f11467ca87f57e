"""gRPC transport of the trainer service: ``emotune.v1.Trainer`` plus the shared ``emotune.v1.Jobs``."""

from __future__ import annotations

import grpc

from emotune.jobs.servicer import JobsServicer
from emotune.services.trainer.service import TrainerService
from emotune.services.trainer.spec import spec_from_proto
from emotune.v1 import jobs_pb2, jobs_pb2_grpc, trainer_pb2, trainer_pb2_grpc


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    def __init__(self, service: TrainerService) -> None:
        self.service = service

    async def StartTraining(self, request: trainer_pb2.TrainingSpec,
                            context: grpc.aio.ServicerContext) -> jobs_pb2.JobRef:
        record = await self.service.start(spec_from_proto(request))
        return jobs_pb2.JobRef(job_id=record.job_id)


def add_servicers(service: TrainerService):
    """The ``add_servicers`` callback for :func:`emotune.grpc.server.start_server`."""

    def add(server: grpc.aio.Server) -> list[str]:
        trainer_pb2_grpc.add_TrainerServicer_to_server(TrainerServicer(service), server)
        jobs_pb2_grpc.add_JobsServicer_to_server(JobsServicer(service.jobs, service.runner), server)
        return ["emotune.v1.Trainer", "emotune.v1.Jobs"]

    return add
