"""``kill -9`` of the real datagen service mid-job, restart, resume: the dataset equals an uninterrupted run's."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf.json_format import ParseDict

from emotune.data.records import parse_records
from emotune.jobs.store import JobState, JobStore
from emotune.services.datagen.service import DatagenService
from emotune.services.datagen.shards import read_shards
from emotune.store.artifacts import read_file
from emotune.store.local import LocalStore
from emotune.v1 import datagen_pb2, datagen_pb2_grpc
from tests.emotune.services.datagen.conftest import TEST_TEACHER, name_test_teacher
from tests.support.service_process import ServiceProcess

ROOT = Path(__file__).resolve().parents[4]
QUESTIONS = [f"问题{i:03d}：今天过得怎么样" for i in range(60)]


def _comparable(store: LocalStore, prefix: str) -> list[tuple]:
    records, _ = parse_records(read_file(store, prefix, "records.jsonl").decode(), strict=True)
    return [(r.id, r.style, json.dumps([m.model_dump() for m in r.messages], ensure_ascii=False),
             json.dumps(r.meta, ensure_ascii=False, sort_keys=True)) for r in records]


async def _uninterrupted(tmp_path: Path, settings, request: dict) -> list[tuple]:
    store = LocalStore(tmp_path / "baseline")
    service = DatagenService(settings.model_copy(update={"store_path": tmp_path / "baseline"}), store)
    record = await service.start(request)
    await service.runner.wait(record.job_id)
    job = service.jobs.get(record.job_id)
    assert job.state == JobState.SUCCEEDED, job.error
    return _comparable(store, job.result["dataset_artifact"])


@pytest.mark.slow
async def test_kill_minus_nine_then_resume(tmp_path, settings, teacher, styles_yaml):
    teacher.latency = 0.04
    request = {"styles_yaml": styles_yaml, "questions": {"questions": QUESTIONS},
               "teacher": {"name": TEST_TEACHER, "max_concurrency": 4}}
    name_test_teacher(settings, teacher)
    expected = await _uninterrupted(tmp_path, settings, request)
    assert len(expected) == 120
    teacher.reset()

    store_dir = tmp_path / "store"
    store, log = LocalStore(store_dir), tmp_path / "datagen.log"
    service = ServiceProcess("datagen", log, {
        "EMOTUNE_STORE_BACKEND": "local", "EMOTUNE_STORE_PATH": str(store_dir),
        "EMOTUNE_DATAGEN_SHARD_SIZE": "5", "EMOTUNE_DATAGEN_FLUSH_SECONDS": "0.3",
        "EMOTUNE_DATAGEN_PROGRESS_SECONDS": "0.3", "EMOTUNE_LOG_LEVEL": "WARNING",
        # a killed process's job is taken over after one lease: keep it short (local store)
        "EMOTUNE_JOB_LEASE_SECONDS": "2",
        "EMOTUNE_DATAGEN_TEACHERS": json.dumps({TEST_TEACHER: {"base_url": teacher.base_url, "model": "teacher-test"}}),
    }).start()
    try:
        with grpc.insecure_channel(service.address) as channel:
            ref = datagen_pb2_grpc.DatagenStub(channel).StartGeneration(
                ParseDict(request, datagen_pb2.GenerationSpec()), timeout=30)
        shards = f"datasets/{ref.job_id}/shards"
        deadline = time.monotonic() + 60
        while sum(1 for _ in store.list(shards + "/")) < 3:
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.02)
        service.kill9()
        persisted, _ = read_shards(store, shards)
        assert 0 < len(persisted) < 120, "the kill must land mid-job"
        assert not JobStore(store).get(ref.job_id).state.terminal
        asked_before_kill = len(teacher.calls)

        service.start()  # a new process: resume_unfinished picks the job up
        deadline = time.monotonic() + 90
        while not (job := JobStore(store).get(ref.job_id)).state.terminal:
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.1)
        assert job.state == JobState.SUCCEEDED, job.error
        metrics = (await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{service.metrics_port}/metrics")).text
        assert 'emotune_datagen_samples_total{status="ok"}' in metrics
        assert 'emotune_datagen_teacher_requests_total{outcome="ok",provider="openai"}' in metrics
        # the job metrics of the process that finished the job (after its predecessor was killed)
        assert 'emotune_jobs_finished_total{kind="datagen",state="succeeded"} 1.0' in metrics
        assert 'emotune_jobs_running{kind="datagen"} 0.0' in metrics
        assert 'emotune_job_run_seconds_count{kind="datagen",state="succeeded"} 1.0' in metrics
    finally:
        service.stop()

    resumed = _comparable(store, job.result["dataset_artifact"])
    assert resumed == expected  # same ids, same order, same samples
    ids = [row[0] for row in resumed]
    assert len(ids) == len(set(ids)) == 120  # no duplicates, no gaps
    # work that was written before the kill is never requested again
    persisted_questions = {(o.style, o.record.first_user_text) for o in persisted.values()}
    style_of = {"你是一个温柔体贴的聊天助手": "温柔", "你是一个喜欢用犀利吐槽表达关心的朋友": "毒舌"}
    after = {(style_of[c.messages[0]["content"]], c.last_user) for c in teacher.calls[asked_before_kill:]}
    assert after and not (after & persisted_questions)
    events = JobStore(store).events(ref.job_id)
    assert any(e.type == "log" and e.message.startswith("resuming:") for e in events)
