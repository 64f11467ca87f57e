"""The shared ``emotune.v1.Jobs`` servicer: GetJob / CancelJob / WatchJob / ListJobs over a JobStore."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import grpc
from google.protobuf import struct_pb2
from google.protobuf.json_format import ParseDict
from google.protobuf.timestamp_pb2 import Timestamp

from emotune.errors import InvalidInput
from emotune.jobs.runner import JobRunner
from emotune.jobs.store import JobEvent, JobRecord, JobState, JobStore
from emotune.v1 import jobs_pb2, jobs_pb2_grpc

_STATE_TO_PROTO = {
    JobState.QUEUED: jobs_pb2.JOB_STATE_QUEUED,
    JobState.RUNNING: jobs_pb2.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: jobs_pb2.JOB_STATE_SUCCEEDED,
    JobState.FAILED: jobs_pb2.JOB_STATE_FAILED,
    JobState.CANCELLED: jobs_pb2.JOB_STATE_CANCELLED,
}
PROTO_TO_STATE = {v: k for k, v in _STATE_TO_PROTO.items()}


def _struct(data: dict) -> struct_pb2.Struct:
    return ParseDict(data, struct_pb2.Struct())


def _timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def job_to_proto(record: JobRecord, event_count: int = 0) -> jobs_pb2.Job:
    return jobs_pb2.Job(
        job_id=record.job_id, kind=record.kind, state=_STATE_TO_PROTO[record.state],
        spec=_struct(record.spec), result=_struct(record.result), error=record.error,
        created_at=_timestamp(record.created_at), updated_at=_timestamp(record.updated_at),
        event_count=event_count,
    )


def event_to_proto(event: JobEvent) -> jobs_pb2.Event:
    return jobs_pb2.Event(
        seq=event.seq, time=_timestamp(event.time), type=event.type, message=event.message,
        data=_struct(event.data),
    )


class JobsServicer(jobs_pb2_grpc.JobsServicer):
    """Serves the jobs of one service; cancellation goes through its runner so a running task stops."""

    def __init__(self, jobs: JobStore, runner: JobRunner) -> None:
        self.jobs, self.runner = jobs, runner

    async def GetJob(self, request: jobs_pb2.GetJobRequest, context: grpc.aio.ServicerContext) -> jobs_pb2.Job:
        return await asyncio.to_thread(self._job, request.job_id)

    def _job(self, job_id: str) -> jobs_pb2.Job:
        return job_to_proto(self.jobs.get(job_id), self.jobs.event_count(job_id))

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest, context: grpc.aio.ServicerContext) -> jobs_pb2.Job:
        await self.runner.cancel(request.job_id)
        return await asyncio.to_thread(self._job, request.job_id)

    async def WatchJob(
        self, request: jobs_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[jobs_pb2.Event]:
        async for event in self.jobs.watch(request.job_id, after=request.after_seq):
            yield event_to_proto(event)

    async def ListJobs(
        self, request: jobs_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> jobs_pb2.ListJobsResponse:
        if request.limit < 0:
            raise InvalidInput("must not be negative", field="limit")
        records = await asyncio.to_thread(self.jobs.list, request.kind or None, request.limit)
        return jobs_pb2.ListJobsResponse(jobs=[job_to_proto(r) for r in records])
