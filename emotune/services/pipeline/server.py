"""Thin gRPC servicer: proto <-> :mod:`emotune.services.pipeline.service`, nothing else. Answers are the fine-tuning
API's JSON objects (see ``proto/emotune/v1/pipeline.proto``)."""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc
from pydantic import BaseModel

from emotune.fine_tuning.protocol import CreateFineTuningJob
from emotune.jobs.servicer import JobsServicer
from emotune.services.pipeline.service import PipelineService
from emotune.v1 import jobs_pb2_grpc, pipeline_pb2, pipeline_pb2_grpc


def _json(value: BaseModel | dict) -> pipeline_pb2.JsonObject:
    text = value.model_dump_json() if isinstance(value, BaseModel) else json.dumps(value, ensure_ascii=False)
    return pipeline_pb2.JsonObject(json=text)


class PipelineServicer(pipeline_pb2_grpc.PipelineServicer):
    def __init__(self, service: PipelineService) -> None:
        self.service = service

    async def CreateFineTuningJob(self, request: pipeline_pb2.CreateFineTuningJobRequest,
                                  context: grpc.aio.ServicerContext) -> pipeline_pb2.JsonObject:
        body = CreateFineTuningJob.model_validate_json(request.request_json)  # a bad body: INVALID_ARGUMENT
        return _json(await self.service.create(body, request.idempotency_key))

    async def GetFineTuningJob(self, request: pipeline_pb2.FineTuningJobRef,
                               context: grpc.aio.ServicerContext) -> pipeline_pb2.JsonObject:
        return _json(await self.service.retrieve(request.job_id))

    async def ListFineTuningJobs(self, request: pipeline_pb2.ListFineTuningJobsRequest,
                                 context: grpc.aio.ServicerContext) -> pipeline_pb2.JsonObject:
        return _json(await self.service.list(request.after or None, request.limit or 20))

    async def CancelFineTuningJob(self, request: pipeline_pb2.FineTuningJobRef,
                                  context: grpc.aio.ServicerContext) -> pipeline_pb2.JsonObject:
        return _json(await self.service.cancel(request.job_id))

    async def ListFineTuningEvents(self, request: pipeline_pb2.ListFineTuningEventsRequest,
                                   context: grpc.aio.ServicerContext) -> pipeline_pb2.JsonObject:
        return _json(await self.service.events(request.job_id, request.after or None, request.limit or 20))

    async def ListFineTuningCheckpoints(self, request: pipeline_pb2.ListFineTuningCheckpointsRequest,
                                        context: grpc.aio.ServicerContext) -> pipeline_pb2.JsonObject:
        return _json(await self.service.checkpoints(request.job_id, request.limit or 10))

    async def GetFineTuningReport(self, request: pipeline_pb2.FineTuningJobRef,
                                  context: grpc.aio.ServicerContext) -> pipeline_pb2.JsonObject:
        return _json(await self.service.report(request.job_id))

    async def GetFineTuningPlot(self, request: pipeline_pb2.FineTuningPlotRequest,
                                context: grpc.aio.ServicerContext) -> pipeline_pb2.Png:
        return pipeline_pb2.Png(data=await self.service.plot(request.job_id, request.name))

    async def Evaluate(self, request: pipeline_pb2.EvaluateRequest,
                       context: grpc.aio.ServicerContext) -> pipeline_pb2.JsonObject:
        return _json(await self.service.evaluate(
            request.styles_yaml, list(request.style_names), list(request.questions), base_model=request.base_model,
            tuned_model=request.tuned_model, max_tokens=request.max_tokens, seed=request.seed))


def add_servicers(service: PipelineService) -> Callable[[grpc.aio.Server], list[str]]:
    """The ``add_servicers`` callback for :func:`emotune.grpc.server.start_server`."""

    def add(server: grpc.aio.Server) -> list[str]:
        pipeline_pb2_grpc.add_PipelineServicer_to_server(PipelineServicer(service), server)
        jobs_pb2_grpc.add_JobsServicer_to_server(JobsServicer(service.jobs, service.runner), server)
        return ["emotune.v1.Pipeline", "emotune.v1.Jobs"]

    return add
