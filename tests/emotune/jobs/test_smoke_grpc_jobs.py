"""A job served over real gRPC on loopback: health, watch from the start, result, NotFound mapping; health
answers while a job writes to a slow store."""

import asyncio
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from emotune.errors import NotFound
from emotune.grpc.client import open_channel, to_domain_error
from emotune.grpc.probe import check
from emotune.grpc.server import start_server
from emotune.jobs.runner import JobRunner
from emotune.jobs.servicer import JobsServicer
from emotune.jobs.store import JobStore
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


class SlowStore(LocalStore):
    """A store whose job writes (events, checkpoints, state) take ``delay`` seconds (a slow or distant S3), once a
    test turns it on. Lease renewals stay fast: with them slowed too, a loaded CI machine once let the lease lapse
    (no renewal within 7.5 s) and the job stopped unfinished, which is the lease tests' subject, not this one's."""

    delay = 0.0

    def put_stream(self, key, stream, length=-1, content_type="application/octet-stream"):
        if "/leases/" not in key:
            time.sleep(self.delay)
        return super().put_stream(key, stream, length, content_type)


async def test_health_answers_while_a_job_writes_events_to_a_slow_store(tmp_path):
    """Event writes (and checkpoints) run off the event loop: with every store write taking 2 s, the health
    service of the process running the job still answers within 0.5 s, and the events keep their order."""
    settings = Settings(store_path=tmp_path)
    store = SlowStore(tmp_path)
    jobs = JobStore(store)
    emitting = asyncio.Event()

    async def handler(ctx):
        store.delay = 2.0
        emitting.set()
        for i in range(3):
            ctx.emit("log", f"line {i}")
            await asyncio.sleep(0)
        ctx.save_checkpoint({"lines": 3})
        ctx.progress(3, 3)
        return {"ok": True}

    runner = JobRunner(jobs, "demo", handler)

    def add(server):
        jobs_pb2_grpc.add_JobsServicer_to_server(JobsServicer(jobs, runner), server)
        return ["emotune.v1.Jobs"]

    server = await start_server("datagen", settings, add, port=0)
    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)  # connected before measuring
            while not stop.is_set():
                started = time.monotonic()
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=15)
                latencies.append(time.monotonic() - started)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
                time.sleep(0.05)

    try:
        prober = asyncio.create_task(asyncio.to_thread(probe))  # measuring before the job starts writing
        while not latencies:
            await asyncio.sleep(0.05)
        record = await runner.submit({})
        await asyncio.wait_for(emitting.wait(), 30)
        await asyncio.wait_for(runner.wait(record.job_id), 60)
        stop.set()
        await prober
    finally:
        stop.set()
        store.delay = 0.0
        await runner.shutdown()
        await server.stop()
    final = jobs.get(record.job_id)
    assert final.state.value == "succeeded" and final.checkpoint == {"lines": 3}
    events = jobs.events(record.job_id)
    assert [e.message for e in events] == ["queued", "running", "line 0", "line 1", "line 2", "3/3", "succeeded"]
    assert len(latencies) >= 10  # probed all along the ~10 s of slow writes
    assert max(latencies) < 0.5, f"health took up to {max(latencies):.2f}s while the job wrote events"
    print(f"health latency with a 2 s store: max {max(latencies) * 1000:.0f} ms over {len(latencies)} checks")
