"""The datagen gRPC surface on loopback: StartGeneration, the shared Jobs service, health, error mapping."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf.json_format import ParseDict

from emotune.grpc.client import error_details, open_channel
from emotune.grpc.probe import check
from emotune.grpc.server import start_server
from emotune.services.datagen.server import add_servicers
from emotune.v1 import datagen_pb2, datagen_pb2_grpc, jobs_pb2, jobs_pb2_grpc
from tests.support.teacher_server import Fault


@pytest.fixture
async def channel(service, settings):
    server = await start_server("datagen", settings, add_servicers(service), port=0)
    address = f"127.0.0.1:{server.port}"
    async with open_channel(address, settings) as chan:
        yield address, chan
    await service.shutdown()
    await server.stop()


async def test_start_watch_and_get(channel, teacher, teacher_cfg, styles_yaml):
    address, chan = channel
    assert await asyncio.to_thread(check, address, "emotune.v1.Datagen")
    teacher.always("敏感", Fault.SAFETY_ZHIPUAI)
    spec = ParseDict({"styles_yaml": styles_yaml, "questions": {"questions": ["你好", "敏感话题", "下雨了"]},
                      "teacher": {**teacher_cfg, "max_retries": 0}, "output_prefix": "datasets/grpc-run"},
                     datagen_pb2.GenerationSpec())
    ref = await datagen_pb2_grpc.DatagenStub(chan).StartGeneration(spec)
    jobs = jobs_pb2_grpc.JobsStub(chan)
    events = [e async for e in jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=ref.job_id))]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == "state" and events[-1].data["state"] == "succeeded"
    final = [e for e in events if e.type == "progress"][-1]
    assert final.data["done"] == final.data["total"] == 6 and final.data["failed"] == 2
    job = await jobs.GetJob(jobs_pb2.GetJobRequest(job_id=ref.job_id))
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED
    assert job.result["dataset_artifact"] == "datasets/grpc-run" and job.result["records"] == 4
    assert job.spec["teacher"]["max_retries"] == 0  # an explicit 0 survives (optional field)
    listed = await jobs.ListJobs(jobs_pb2.ListJobsRequest(kind="datagen"))
    assert ref.job_id in [j.job_id for j in listed.jobs]


async def test_invalid_spec_is_invalid_argument_with_field(channel, teacher_cfg, styles_yaml):
    _address, chan = channel
    spec = ParseDict({"styles_yaml": styles_yaml, "style_names": ["不存在"], "questions": {"questions": ["你好"]},
                      "teacher": teacher_cfg}, datagen_pb2.GenerationSpec())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await datagen_pb2_grpc.DatagenStub(chan).StartGeneration(spec)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "不存在" in info.value.details() and error_details(info.value)["field"] == "style_names[0]"


async def test_resume_of_unknown_job_is_not_found(channel):
    _address, chan = channel
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await datagen_pb2_grpc.DatagenStub(chan).StartGeneration(datagen_pb2.GenerationSpec(resume_job_id="nope"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
