"""A pipeline stage runs its sub-job once, across owners: the next owner re-attaches to the sub-job by its id, or,
when the previous owner died between starting the sub-job and saving its id, by the sub-job's output prefix.
Real gRPC (the shared Jobs service of a stage service) on a real store."""

from __future__ import annotations

import asyncio

from emotune.grpc.client import open_channel
from emotune.grpc.server import start_server
from emotune.jobs.runner import JobContext, JobRunner
from emotune.jobs.servicer import JobsServicer
from emotune.jobs.store import JobState, JobStore
from emotune.services.pipeline.stages import _Run
from emotune.settings import Settings
from emotune.v1 import jobs_pb2, jobs_pb2_grpc


async def _work(ctx) -> dict:
    for done in range(1, 4):
        await asyncio.sleep(0.05)
        ctx.progress(done, 3)
    return {"dataset_artifact": f"{ctx.spec['output_prefix']}/out"}


async def test_a_sub_job_started_but_not_recorded_is_found_by_its_prefix(any_store) -> None:
    settings = Settings()
    stage_jobs = JobStore(any_store, prefix="stage-service")
    stage_runner = JobRunner(stage_jobs, "datagen", _work, lease_seconds=2)

    def add_jobs_servicer(grpc_server) -> list[str]:
        jobs_pb2_grpc.add_JobsServicer_to_server(JobsServicer(stage_jobs, stage_runner), grpc_server)
        return ["emotune.v1.Jobs"]

    server = await start_server("datagen", settings, add_jobs_servicer, port=0)
    pipeline_jobs = JobStore(any_store, prefix="pipeline")
    starts: list[str] = []

    async def start(prefix: str) -> jobs_pb2.JobRef:
        starts.append(prefix)
        return jobs_pb2.JobRef(job_id=(await stage_runner.submit({"output_prefix": prefix})).job_id)

    try:
        async with open_channel(f"127.0.0.1:{server.port}", settings) as channel:
            stub = jobs_pb2_grpc.JobsStub(channel)
            # The first owner started the sub-job and died before saving its id: only the prefix was saved.
            orphan = await stage_runner.submit({"output_prefix": "datasets/ftjob-1"})
            record = pipeline_jobs.create("fine_tuning", {}, "ftjob-1")
            pipeline_jobs.update(record.job_id, checkpoint={
                "stage": "datagen", "stages": {"datagen": {"status": "running", "starting": "datasets/ftjob-1"}}})
            ctx = JobContext(pipeline_jobs, pipeline_jobs.get("ftjob-1"), resumed=True)
            result = await _Run(ctx, dict(ctx.checkpoint)).remote("datagen", stub, "datasets/ftjob-1", start)

            assert starts == []  # not started a second time
            assert result == {"dataset_artifact": "datasets/ftjob-1/out"}
            assert stage_jobs.get(orphan.job_id).state == JobState.SUCCEEDED
            assert [j.job_id for j in stage_jobs.list("datagen")] == [orphan.job_id]
            messages = [e.message for e in pipeline_jobs.events("ftjob-1")]
            assert "datagen resumed" not in messages  # no id was recorded: the stage restarts its bookkeeping...
            assert f"datagen: re-attached to {orphan.job_id}, started before the restart" in messages  # ...but not its job

            # A stage whose owner died before anything was started starts its sub-job, once.
            fresh = JobContext(pipeline_jobs, pipeline_jobs.create("fine_tuning", {}, "ftjob-2"), resumed=False)
            await _Run(fresh, {}).remote("datagen", stub, "datasets/ftjob-2", start)
            assert starts == ["datasets/ftjob-2"]
    finally:
        await stage_runner.shutdown()
        await server.stop()
