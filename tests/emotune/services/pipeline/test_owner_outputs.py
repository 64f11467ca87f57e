"""Each owner of a fine-tuning job writes its outputs under its own lease generation (issue 29, item 5): a late write
of an old owner after a takeover cannot change what the job's result points to, nor what readers get.

The real pipeline (``Pipeline.run`` under two ``JobRunner`` owners, A then B) on a real S3 server with conditional
writes (moto's, a separate process; ``tests/support/moto_s3.py``), its stage driver following a trainer's jobs over
real gRPC (the shared Jobs service on a real ``JobRunner``). The trainer and inference behind that gRPC are stand-ins
that publish / record what they are told: what is checked is where the pipeline tells them to write, and what the
job's result then names.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from google.protobuf.json_format import MessageToDict

from emotune.fine_tuning.protocol import CreateFineTuningJob
from emotune.grpc.client import open_channel
from emotune.grpc.server import start_server
from emotune.jobs.runner import JobContext, JobRunner, owner_outputs
from emotune.jobs.servicer import JobsServicer
from emotune.jobs.store import JobState, JobStore
from emotune.services.pipeline.stages import Pipeline, ServiceChannels, fine_tuned_model_id
from emotune.settings import Settings
from emotune.store.artifacts import publish_artifact, read_file
from emotune.store.files import FileService
from emotune.store.s3 import S3Store
from emotune.v1 import inference_pb2, inference_pb2_grpc, jobs_pb2, jobs_pb2_grpc, trainer_pb2_grpc
from tests.emotune.jobs.test_job_cas import moto_endpoint, moto_settings  # noqa: F401 (the fixture)

WEIGHTS = "adapter_model.safetensors"
TRAINING_JSONL = "\n".join(json.dumps({"messages": [
    {"role": "user", "content": f"question {n}"}, {"role": "assistant", "content": f"answer {n}"}]})
    for n in range(4)) + "\n"


class Trainer(trainer_pb2_grpc.TrainerServicer):
    """StartTraining submits a training job to a real JobRunner. The first call is held until the test lets it
    through, and then completes even though its caller is gone (a request the trainer received before the caller's
    process lost the job); the job it starts publishes first, the others once it has."""

    def __init__(self, store: S3Store, runner_jobs: JobStore) -> None:
        self.store = store
        self.runner = JobRunner(runner_jobs, "training", self.train, max_concurrent=4, lease_seconds=2)
        self.prefixes: list[str] = []
        self.first_call, self.second_call = asyncio.Event(), asyncio.Event()
        self.let_first_through, self.late_published = asyncio.Event(), asyncio.Event()

    async def StartTraining(self, request, context):
        spec = MessageToDict(request, preserving_proto_field_name=True)
        self.prefixes.append(spec["output_prefix"])
        late = len(self.prefixes) == 1
        (self.first_call if late else self.second_call).set()
        submitting = asyncio.ensure_future(self._submit({**spec, "late": late}))
        return jobs_pb2.JobRef(job_id=(await asyncio.shield(submitting)).job_id)

    async def _submit(self, spec: dict) -> object:
        if spec["late"]:
            await self.let_first_through.wait()
        return await self.runner.submit(spec)

    async def train(self, ctx: JobContext) -> dict:
        if not ctx.spec["late"]:
            await self.late_published.wait()
        key = f"{ctx.spec['output_prefix']}/adapter"
        await asyncio.to_thread(publish_artifact, self.store, key, {WEIGHTS: f"weights of {ctx.job_id}".encode()},
                                {"kind": "adapter"})
        if ctx.spec["late"]:
            self.late_published.set()
        return {"adapter_artifact": key}


class Inference(inference_pb2_grpc.InferenceServicer):
    def __init__(self) -> None:
        self.loaded: list[tuple[str, str]] = []

    async def LoadModel(self, request, context):
        self.loaded.append((request.model_id, request.adapter_artifact))
        return inference_pb2.ModelInfo(id=request.model_id, adapter_artifact=request.adapter_artifact)


async def _until(what, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(what):
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        await asyncio.sleep(0.1)


async def test_an_old_owners_late_output_does_not_change_what_the_job_names(moto_endpoint) -> None:  # noqa: F811
    bucket = f"emotune-gen-{uuid.uuid4().hex[:12]}"
    store = S3Store.from_settings(moto_settings(moto_endpoint, bucket))  # one client per "process"
    assert store.conditional_writes
    trainer = Trainer(store, JobStore(store, prefix="trainer-jobs"))
    inference = Inference()

    def add_servicers(server) -> list[str]:
        jobs_pb2_grpc.add_JobsServicer_to_server(JobsServicer(trainer.runner.jobs, trainer.runner), server)
        trainer_pb2_grpc.add_TrainerServicer_to_server(trainer, server)
        inference_pb2_grpc.add_InferenceServicer_to_server(inference, server)
        return ["emotune.v1.Jobs", "emotune.v1.Trainer", "emotune.v1.Inference"]

    settings = Settings()
    server = await start_server("trainer", settings, add_servicers, port=0)
    owners: dict[str, tuple[JobRunner, object]] = {}
    for name in ("A", "B"):
        client = S3Store.from_settings(moto_settings(moto_endpoint, bucket))
        channel = open_channel(f"127.0.0.1:{server.port}", settings)
        pipeline = Pipeline(client, FileService(client), ServiceChannels(channel, channel, channel, channel))
        owners[name] = (JobRunner(JobStore(client), "fine_tuning", pipeline.run, lease_seconds=2, owner=name),
                        channel)
    runner_a, runner_b = owners["A"][0], owners["B"][0]
    jobs = JobStore(store)
    try:
        training_file = FileService(store).create("train.jsonl", "fine-tune", TRAINING_JSONL.encode())
        request = CreateFineTuningJob(model="smollm2-135m", training_file=training_file.id, suffix="gen")
        job_id = (await runner_a.submit({"request": request.model_dump(mode="json")})).job_id

        # A asks the trainer for a training run; the request is in flight when A loses the job (here: A stops,
        # releasing its lease) and B takes the job over (generation 2).
        await asyncio.wait_for(trainer.first_call.wait(), 60)
        await runner_a.shutdown()
        assert job_id in await runner_b.start()
        # B finds no training job started before (A's request has not arrived) and starts its own.
        await asyncio.wait_for(trainer.second_call.wait(), 60)
        # A's request now reaches the trainer: its run publishes first, while B's is still training.
        trainer.let_first_through.set()
        await _until(lambda: jobs.get(job_id).state.terminal)

        record = jobs.get(job_id)
        assert record.state == JobState.SUCCEEDED, record.error
        late, mine = trainer.prefixes
        assert (late, mine) == (owner_outputs("models", job_id, 1), owner_outputs("models", job_id, 2))
        adapter = record.result["training"]["adapter_artifact"]
        assert adapter == f"{mine}/adapter"
        by_job = {j.spec["output_prefix"]: j.job_id for j in trainer.runner.jobs.list("training")}
        # What readers get from the job's result: B's run's bytes, not A's late run's.
        assert read_file(store, adapter, WEIGHTS) == f"weights of {by_job[mine]}".encode()
        assert read_file(store, f"{late}/adapter", WEIGHTS) == f"weights of {by_job[late]}".encode()
        model = fine_tuned_model_id("smollm2-135m", "gen", job_id)
        assert record.result["fine_tuned_model"] == model
        assert inference.loaded == [(model, adapter)]  # what inference serves under the job's model id
    finally:
        await runner_a.shutdown()
        await runner_b.shutdown()
        await trainer.runner.shutdown()
        for _runner, channel in owners.values():
            await channel.close()
        await server.stop()


def test_fine_tuned_model_ids_are_as_unique_as_job_ids() -> None:
    """Two jobs whose ids share their last 8 hex digits (of different projects, say) get two model ids."""
    first, second = "ftjob-0123456789abcdef" + "deadbeef", "ftjob-fedcba9876543210" + "deadbeef"
    assert fine_tuned_model_id("qwen2.5-0.5b", "demo", first) != fine_tuned_model_id("qwen2.5-0.5b", "demo", second)
    assert fine_tuned_model_id("qwen2.5-0.5b", None, first) == "ft-qwen2.5-0.5b-emotune-0123456789abcdefdeadbeef"
    assert ":" not in fine_tuned_model_id("base:tag", "x", first)  # <model>:<style> stays unambiguous


def test_each_owner_has_its_own_output_prefix_under_the_jobs_folder() -> None:
    assert owner_outputs("models", "ftjob-1", 1) == "models/ftjob-1/ftjob-1-g1"
    assert owner_outputs("models/", "ftjob-1", 2) == "models/ftjob-1/ftjob-1-g2"
