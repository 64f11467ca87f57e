"""The fine-tuning routes' one dependency: calls to the pipeline service, answers parsed into the API's models.

A pipeline error comes back as a gRPC status with its details; the gateway's handlers turn it into the OpenAI
error body (404 naming the job, 400 naming the field ...).

Projects: a job belongs to the project of the key that created it (``project`` in the stored request; none: the
default project). The gateway reads the job's record from the store before forwarding a call about it, so
another project's job answers the same 404 as a job that does not exist; a job's files must be the caller's; an
Idempotency-Key is scoped to the project (the pipeline derives the job id from the key it is sent)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from functools import cached_property
from typing import Any

from emotune.errors import InvalidInput, NotFound
from emotune.fine_tuning.protocol import CreateFineTuningJob, FineTuningJob, ListPage
from emotune.jobs.store import JobStore
from emotune.logging import get_logger
from emotune.projects import DEFAULT_PROJECT
from emotune.services.gateway.auth import Caller
from emotune.services.gateway.owners import job_owner
from emotune.store.base import ArtifactStore
from emotune.store.files import FileService
from emotune.v1 import pipeline_pb2, pipeline_pb2_grpc

log = get_logger(__name__)

# Creating a job checks its files in the store; a report may render nothing heavy, but a plot draws a chart.
CALL_TIMEOUT_SECONDS = 60.0
KIND = "fine_tuning"  # the pipeline's job kind
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, as HTTP header values allow


def scoped_idempotency_key(project: str, key: str | None) -> str:
    """The key sent on: one per (project, client key), so two projects' equal keys make two jobs."""
    if not key:
        return ""
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidInput("Idempotency-Key must be 1 to 255 visible ASCII characters", field="Idempotency-Key")
    return "p-" + hashlib.sha256(f"{project}\n{key}".encode()).hexdigest()


class FineTuningClient:
    def __init__(self, stub: pipeline_pb2_grpc.PipelineStub, store: ArtifactStore | None = None) -> None:
        self.stub, self.store = stub, store

    @cached_property
    def jobs(self) -> JobStore:
        """Read-only here (the pipeline writes jobs); made on first use (an S3 store is probed then)."""
        return JobStore(self.store)

    @cached_property
    def files(self) -> FileService:
        return FileService(self.store)

    async def _owned(self, caller: Caller, job_id: str) -> None:
        """404 (the pipeline's own words for an unknown job) unless the caller's project owns the job."""
        if caller.admin:
            return
        try:
            record = await asyncio.to_thread(lambda: self.jobs.load(job_id))  # made (S3: probed) off the loop
        except NotFound:
            return  # the pipeline answers its 404
        if not caller.sees(job_owner(record)):
            # the same 404 as the pipeline's for an unknown id; the log says which of the two refused it
            log.info("job of another project refused", job_id=job_id, owner=job_owner(record),
                     project=caller.project)
            raise NotFound(f"No fine-tuning job found with id {job_id}", param="fine_tuning_job_id")

    async def create(self, caller: Caller, request: CreateFineTuningJob,
                     idempotency_key: str | None = None) -> FineTuningJob:
        for file_id in request.files:  # another project's file: "No such File object", as for no file
            if caller.scope is not None:
                await asyncio.to_thread(self.files.get, file_id, caller.scope)
        request = request.model_copy(update={"project": None if caller.project == DEFAULT_PROJECT else caller.project})
        reply = await self.stub.CreateFineTuningJob(
            pipeline_pb2.CreateFineTuningJobRequest(
                request_json=request.model_dump_json(),
                idempotency_key=scoped_idempotency_key(caller.project, idempotency_key)),
            timeout=CALL_TIMEOUT_SECONDS)
        return FineTuningJob.model_validate_json(reply.json)

    async def retrieve(self, caller: Caller, job_id: str) -> FineTuningJob:
        await self._owned(caller, job_id)
        return await self._retrieve(job_id)

    async def _retrieve(self, job_id: str) -> FineTuningJob:
        reply = await self.stub.GetFineTuningJob(pipeline_pb2.FineTuningJobRef(job_id=job_id))
        return FineTuningJob.model_validate_json(reply.json)

    async def list(self, caller: Caller, after: str | None, limit: int) -> ListPage:
        if caller.admin:
            reply = await self.stub.ListFineTuningJobs(pipeline_pb2.ListFineTuningJobsRequest(after=after or "",
                                                                                              limit=limit))
            return ListPage.model_validate_json(reply.json)
        # One project's page from the store's index, then each job as the pipeline shows it.
        records, more = await asyncio.to_thread(
            lambda: self.jobs.page(KIND, after, limit, lambda record: caller.sees(job_owner(record))))
        jobs = await asyncio.gather(*(self._retrieve(record.job_id) for record in records))
        return ListPage(data=list(jobs), has_more=more)

    async def cancel(self, caller: Caller, job_id: str) -> FineTuningJob:
        await self._owned(caller, job_id)
        reply = await self.stub.CancelFineTuningJob(pipeline_pb2.FineTuningJobRef(job_id=job_id),
                                                    timeout=CALL_TIMEOUT_SECONDS)
        return FineTuningJob.model_validate_json(reply.json)

    async def events(self, caller: Caller, job_id: str, after: str | None, limit: int) -> ListPage:
        await self._owned(caller, job_id)
        reply = await self.stub.ListFineTuningEvents(pipeline_pb2.ListFineTuningEventsRequest(
            job_id=job_id, after=after or "", limit=limit))
        return ListPage.model_validate_json(reply.json)

    async def checkpoints(self, caller: Caller, job_id: str, limit: int) -> ListPage:
        await self._owned(caller, job_id)
        reply = await self.stub.ListFineTuningCheckpoints(pipeline_pb2.ListFineTuningCheckpointsRequest(
            job_id=job_id, limit=limit))
        return ListPage.model_validate_json(reply.json)

    async def report(self, caller: Caller, job_id: str) -> dict[str, Any]:
        await self._owned(caller, job_id)
        reply = await self.stub.GetFineTuningReport(pipeline_pb2.FineTuningJobRef(job_id=job_id))
        return json.loads(reply.json)

    async def plot(self, caller: Caller, job_id: str, name: str) -> bytes:
        await self._owned(caller, job_id)
        reply = await self.stub.GetFineTuningPlot(pipeline_pb2.FineTuningPlotRequest(job_id=job_id, name=name),
                                                  timeout=CALL_TIMEOUT_SECONDS)
        return reply.data
