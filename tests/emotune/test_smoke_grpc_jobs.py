"""A job served over real gRPC on loopback: health, watch from the start, result, NotFound mapping."""

import asyncio

import grpc
import pytest

from emotune.errors import NotFound
from emotune.grpc.client import open_channel, to_domain_error
from emotune.grpc.probe import check
from emotune.grpc.server import start_server
from emotune.jobrunner import JobRunner
from emotune.jobs import JobStore
from emotune.jobs_grpc import JobsServicer
from emotune.settings import Settings
from emotune.store.local import LocalStore
from emotune.v1 import jobs_pb2, jobs_pb2_grpc


async def test_job_round_trip_over_grpc(tmp_path):
    settings = Settings(store_path=tmp_path)
    jobs = JobStore(LocalStore(tmp_path))

    async def handler(ctx):
        for i in range(3):
            ctx.progress(i + 1, 3)
            await asyncio.sleep(0.01)
        return {"answer": 42}

    runner = JobRunner(jobs, "demo", handler)

    def add(server):
        jobs_pb2_grpc.add_JobsServicer_to_server(JobsServicer(jobs, runner), server)
        return ["emotune.v1.Jobs"]

    server = await start_server("datagen", settings, add, port=0)
    try:
        assert await asyncio.to_thread(check, f"127.0.0.1:{server.port}")
        record = await runner.submit({"x": 1})
        stub = jobs_pb2_grpc.JobsStub(open_channel(f"127.0.0.1:{server.port}", settings))
        events = [e async for e in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=record.job_id))]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert [e.message for e in events if e.type == "progress"] == ["1/3", "2/3", "3/3"]
        assert events[-1].type == "state" and events[-1].data["state"] == "succeeded"
        job = await stub.GetJob(jobs_pb2.GetJobRequest(job_id=record.job_id))
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED and job.result["answer"] == 42
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetJob(jobs_pb2.GetJobRequest(job_id="missing"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert isinstance(to_domain_error(info.value), NotFound)
    finally:
        await server.stop()
