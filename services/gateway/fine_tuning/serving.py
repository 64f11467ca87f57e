"""The fine-tuning routes' one dependency: calls to the pipeline service, answers parsed into the API's models.

A pipeline error comes back as a gRPC status with its details; the gateway's handlers turn it into the OpenAI
error body (404 naming the job, 400 naming the field ...)."""

from __future__ import annotations

import json
from typing import Any

from emotune.fine_tuning.protocol import CreateFineTuningJob, FineTuningJob, ListPage
from emotune.v1 import pipeline_pb2, pipeline_pb2_grpc

# Creating a job checks its files in the store; a report may render nothing heavy, but a plot draws a chart.
CALL_TIMEOUT_SECONDS = 60.0


class FineTuningClient:
    def __init__(self, stub: pipeline_pb2_grpc.PipelineStub) -> None:
        self.stub = stub

    async def create(self, request: CreateFineTuningJob, idempotency_key: str | None = None) -> FineTuningJob:
        reply = await self.stub.CreateFineTuningJob(
            pipeline_pb2.CreateFineTuningJobRequest(request_json=request.model_dump_json(),
                                                    idempotency_key=idempotency_key or ""),
            timeout=CALL_TIMEOUT_SECONDS)
        return FineTuningJob.model_validate_json(reply.json)

    async def retrieve(self, job_id: str) -> FineTuningJob:
        reply = await self.stub.GetFineTuningJob(pipeline_pb2.FineTuningJobRef(job_id=job_id))
        return FineTuningJob.model_validate_json(reply.json)

    async def list(self, after: str | None, limit: int) -> ListPage:
        reply = await self.stub.ListFineTuningJobs(pipeline_pb2.ListFineTuningJobsRequest(after=after or "",
                                                                                          limit=limit))
        return ListPage.model_validate_json(reply.json)

    async def cancel(self, job_id: str) -> FineTuningJob:
        reply = await self.stub.CancelFineTuningJob(pipeline_pb2.FineTuningJobRef(job_id=job_id),
                                                    timeout=CALL_TIMEOUT_SECONDS)
        return FineTuningJob.model_validate_json(reply.json)

    async def events(self, job_id: str, after: str | None, limit: int) -> ListPage:
        reply = await self.stub.ListFineTuningEvents(pipeline_pb2.ListFineTuningEventsRequest(
            job_id=job_id, after=after or "", limit=limit))
        return ListPage.model_validate_json(reply.json)

    async def checkpoints(self, job_id: str, limit: int) -> ListPage:
        reply = await self.stub.ListFineTuningCheckpoints(pipeline_pb2.ListFineTuningCheckpointsRequest(
            job_id=job_id, limit=limit))
        return ListPage.model_validate_json(reply.json)

    async def report(self, job_id: str) -> dict[str, Any]:
        reply = await self.stub.GetFineTuningReport(pipeline_pb2.FineTuningJobRef(job_id=job_id))
        return json.loads(reply.json)

    async def plot(self, job_id: str, name: str) -> bytes:
        reply = await self.stub.GetFineTuningPlot(pipeline_pb2.FineTuningPlotRequest(job_id=job_id, name=name),
                                                  timeout=CALL_TIMEOUT_SECONDS)
        return reply.data
