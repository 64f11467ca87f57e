"""The shared emotune.v1.Jobs service over real gRPC on loopback, on both store backends."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from emotune.errors import InvalidInput, NotFound
from emotune.grpc.client import open_channel, to_domain_error
from emotune.grpc.server import start_server
from emotune.jobs.runner import JobContext, JobRunner
from emotune.jobs.servicer import JobsServicer
from emotune.jobs.store import JobStore
from emotune.settings import Settings
from emotune.v1 import jobs_pb2, jobs_pb2_grpc


@pytest.fixture
async def jobs_service(any_store):
    jobs = JobStore(any_store)
    gate = asyncio.Event()

    async def handler(ctx: JobContext) -> dict:
        for done in range(1, 4):
            ctx.progress(done, 3)
            if ctx.spec.get("wait"):
                await gate.wait()
        if ctx.spec.get("fail"):
            raise ValueError("teacher refused: 1301")
        return {"rows": 3, "artifact": "datasets/x"}

    runner = JobRunner(jobs, "datagen", handler, max_concurrent=4)

    def add(server: grpc.aio.Server) -> list[str]:
        jobs_pb2_grpc.add_JobsServicer_to_server(JobsServicer(jobs, runner), server)
        return ["emotune.v1.Jobs"]

    server = await start_server("datagen", Settings(), add, port=0)
    channel = open_channel(f"127.0.0.1:{server.port}", Settings())
    try:
        yield runner, jobs_pb2_grpc.JobsStub(channel), gate
    finally:
        await runner.shutdown()
        await channel.close()
        await server.stop()


async def test_get_watch_and_list(jobs_service):
    runner, stub, _ = jobs_service
    ok = await runner.submit({"n": 1})
    failed = await runner.submit({"fail": True})
    events = [e async for e in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=ok.job_id))]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e.message for e in events] == ["queued", "running", "1/3", "2/3", "3/3", "succeeded"]
    assert events[2].data["done"] == 1 and events[2].HasField("time")

    job = await stub.GetJob(jobs_pb2.GetJobRequest(job_id=ok.job_id))
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED and job.kind == "datagen"
    assert dict(job.result) == {"rows": 3, "artifact": "datasets/x"} and dict(job.spec) == {"n": 1}
    assert job.event_count == 6 and job.created_at.ToDatetime() <= job.updated_at.ToDatetime()

    # resume from an offset
    tail = [e async for e in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=ok.job_id, after_seq=4))]
    assert [e.seq for e in tail] == [5, 6]

    await runner.wait(failed.job_id)
    bad = await stub.GetJob(jobs_pb2.GetJobRequest(job_id=failed.job_id))
    assert bad.state == jobs_pb2.JOB_STATE_FAILED and bad.error == "ValueError: teacher refused: 1301"

    listed = await stub.ListJobs(jobs_pb2.ListJobsRequest(kind="datagen"))
    assert [j.job_id for j in listed.jobs] == [failed.job_id, ok.job_id]
    assert len((await stub.ListJobs(jobs_pb2.ListJobsRequest(limit=1))).jobs) == 1
    assert (await stub.ListJobs(jobs_pb2.ListJobsRequest(kind="training"))).jobs == []


async def test_cancel_a_running_job_while_watching(jobs_service):
    runner, stub, _ = jobs_service
    record = await runner.submit({"wait": True})
    watch = stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=record.job_id))
    seen = []
    async for event in watch:
        seen.append(event.message)
        if event.message == "1/3":
            job = await stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=record.job_id))
            assert job.state == jobs_pb2.JOB_STATE_CANCELLED
    assert seen == ["queued", "running", "1/3", "cancelled"]  # the stream ends with the job


async def test_errors_map_to_status_codes(jobs_service):
    _, stub, _ = jobs_service
    for call in (stub.GetJob(jobs_pb2.GetJobRequest(job_id="datagen-missing")),
                 stub.CancelJob(jobs_pb2.CancelJobRequest(job_id="datagen-missing"))):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert isinstance(to_domain_error(info.value), NotFound)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id="datagen-missing")):
            pass
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetJob(jobs_pb2.GetJobRequest(job_id="../escape"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert to_domain_error(info.value).field == "job_id"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListJobs(jobs_pb2.ListJobsRequest(limit=-1))
    assert isinstance(to_domain_error(info.value), InvalidInput)
