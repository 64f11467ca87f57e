"""gRPC transport of the datagen service: ``emotune.v1.Datagen`` plus the shared ``emotune.v1.Jobs``."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from emotune.jobs.servicer import JobsServicer
from emotune.services.datagen.service import DatagenService
from emotune.services.datagen.spec import spec_from_proto
from emotune.v1 import datagen_pb2, datagen_pb2_grpc, jobs_pb2, jobs_pb2_grpc


class DatagenServicer(datagen_pb2_grpc.DatagenServicer):
    def __init__(self, service: DatagenService) -> None:
        self.service = service

    async def StartGeneration(self, request: datagen_pb2.GenerationSpec,
                              context: grpc.aio.ServicerContext) -> jobs_pb2.JobRef:
        record = await self.service.start(spec_from_proto(request), resume_job_id=request.resume_job_id)
        return jobs_pb2.JobRef(job_id=record.job_id)


def add_servicers(service: DatagenService) -> Callable[[grpc.aio.Server], list[str]]:
    """The ``add_servicers`` callback for :func:`emotune.grpc.server.start_server`."""

    def add(server: grpc.aio.Server) -> list[str]:
        datagen_pb2_grpc.add_DatagenServicer_to_server(DatagenServicer(service), server)
        jobs_pb2_grpc.add_JobsServicer_to_server(JobsServicer(service.jobs, service.runner), server)
        return ["emotune.v1.Datagen", "emotune.v1.Jobs"]

    return add
