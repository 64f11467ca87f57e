"""Two trainer replicas (real ``python -m emotune.services.trainer`` processes) sharing one store: runs submitted to one
of them while it is busy are taken by the idle one, so both train at once, and no run is taken twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict

from emotune.grpc.client import open_channel
from emotune.settings import Settings
from emotune.store.artifacts import publish_artifact
from emotune.store.local import LocalStore
from emotune.v1 import jobs_pb2, jobs_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from tests.emotune.services.trainer.conftest import styled_jsonl
from tests.emotune.services.trainer.test_resume import _start_service, _wait_healthy
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


async def _events(jobs: jobs_pb2_grpc.JobsStub, job_id: str) -> list[dict]:
    return [{"type": e.type, "message": e.message, "data": MessageToDict(e.data), "time": e.time.ToDatetime()}
            async for e in jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id), timeout=900)]


async def test_two_replicas_each_take_a_different_queued_run(tmp_path: Path, tiny_model_dir: Path,
                                                              monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EMOTUNE_TRAINER_THREADS", "1")  # two runs at once on a small CI machine
    store = LocalStore(tmp_path / "store")
    publish_artifact(store, "validated/q/kept", {"records.jsonl": styled_jsonl(30)}, {"kind": "dataset"})
    ports = [free_port(), free_port()]
    replicas = [_start_service(tmp_path / name, port, tmp_path / f"{name}.log", store=tmp_path / "store")
                for name, port in zip("ab", ports, strict=True)]
    try:
        for port, process in zip(ports, replicas, strict=True):
            await _wait_healthy(port, process)
        async with open_channel(f"127.0.0.1:{ports[0]}", Settings(grpc_deadline_seconds=60)) as channel:
            trainer, jobs = trainer_pb2_grpc.TrainerStub(channel), jobs_pb2_grpc.JobsStub(channel)
            spec = trainer_pb2.TrainingSpec(base_model=str(tiny_model_dir), dataset_artifact="validated/q/kept",
                                            max_steps=20, batch_size=2, max_length=128, eval_every_steps=10,
                                            gguf_quantization="none")
            refs = [await trainer.StartTraining(spec) for _ in range(2)]  # both to replica a (one job at a time)
            events = await asyncio.gather(*(_events(jobs, ref.job_id) for ref in refs))
            states = [(await jobs.GetJob(jobs_pb2.GetJobRequest(job_id=r.job_id))).state for r in refs]
    finally:
        for process in replicas:
            process.terminate()
        for process in replicas:
            process.wait(timeout=60)
    assert states == [jobs_pb2.JOB_STATE_SUCCEEDED] * 2, [(tmp_path / f"{n}.log").read_text()[-2000:] for n in "ab"]
    owners = [[e["data"]["owner"] for e in run if e["message"].startswith("training on ")] for run in events]
    assert all(len(o) == 1 for o in owners), owners  # each run started once: never taken twice
    assert owners[0][0] != owners[1][0], owners  # by different replicas
    running = [[e["time"] for e in run if e["type"] == "state" and e["data"].get("state") == "running"]
               for run in events]
    assert [len(r) for r in running] == [1, 1], running
    finished = [run[-1]["time"] for run in events]
    assert max(r[0] for r in running) < min(finished)  # they trained at the same time
