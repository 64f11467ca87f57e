"""A killed trainer resumes its job from the last checkpoint: the real service process is SIGKILLed mid-run (its
worker dies with it), restarted, and finishes the same job without redoing the steps already saved."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict

from emotune.grpc.client import open_channel
from emotune.grpc.probe import check
from emotune.settings import Settings
from emotune.store.artifacts import publish_artifact
from emotune.store.local import LocalStore
from emotune.v1 import jobs_pb2, jobs_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from tests.emotune.services.trainer.conftest import styled_jsonl, trainer_with_dataset
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]
REPO = Path(__file__).resolve().parents[4]


def _start_service(tmp_path: Path, port: int, log: Path, store: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "EMOTUNE_STORE_PATH": str(store or tmp_path / "store"), "EMOTUNE_TRAINER_WORK_DIR":
           str(tmp_path / "work"), "EMOTUNE_TRAINER_ADDR": f"127.0.0.1:{port}",
           "EMOTUNE_METRICS_PORT": str(free_port()), "HF_HUB_OFFLINE": "1",
           "EMOTUNE_JOB_LEASE_SECONDS": "3"}  # a killed process's job is taken over after one lease
    return subprocess.Popen([sys.executable, "-m", "emotune.services.trainer"], cwd=REPO, env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


async def _wait_healthy(port: int, process: subprocess.Popen) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise AssertionError(f"trainer exited with {process.returncode}")
        if await asyncio.to_thread(check, f"127.0.0.1:{port}"):
            return
        await asyncio.sleep(0.5)
    raise AssertionError("trainer did not become healthy")


def _workers_of(work: Path) -> list[int]:
    """PIDs of worker processes still running on this test's work dir."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "emotune.services.trainer.worker" in cmdline and str(work) in cmdline:
                pids.append(int(proc.name))
    return pids


async def test_killed_training_resumes_from_its_last_checkpoint(tmp_path: Path, tiny_model_dir: Path):
    store = LocalStore(tmp_path / "store")
    publish_artifact(store, "validated/r/kept", {"records.jsonl": styled_jsonl(30)}, {"kind": "dataset"})
    port, log = free_port(), tmp_path / "trainer.log"
    settings = Settings(grpc_deadline_seconds=60)
    first = _start_service(tmp_path, port, log)
    try:
        await _wait_healthy(port, first)
        async with open_channel(f"127.0.0.1:{port}", settings) as channel:
            ref = await trainer_pb2_grpc.TrainerStub(channel).StartTraining(trainer_pb2.TrainingSpec(
                base_model=str(tiny_model_dir), dataset_artifact="validated/r/kept", max_steps=8, batch_size=2,
                max_length=128, learning_rate=3e-3, eval_every_steps=3, keep_best_checkpoints=1))
            seen = 0
            async for event in jobs_pb2_grpc.JobsStub(channel).WatchJob(
                    jobs_pb2.WatchJobRequest(job_id=ref.job_id), timeout=600):
                seen = event.seq
                if event.type == "checkpoint" and event.data["step"] == 3:
                    break
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    for _ in range(50):  # the worker dies with its service (PR_SET_PDEATHSIG), it must not keep training
        if not _workers_of(tmp_path / "work"):
            break
        await asyncio.sleep(0.2)
    assert not _workers_of(tmp_path / "work")

    second = _start_service(tmp_path, port, log)
    try:
        await _wait_healthy(port, second)
        async with open_channel(f"127.0.0.1:{port}", settings) as channel:
            jobs = jobs_pb2_grpc.JobsStub(channel)
            after = [e async for e in jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=ref.job_id, after_seq=seen),
                                                    timeout=900)]
            job = await jobs.GetJob(jobs_pb2.GetJobRequest(job_id=ref.job_id))
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, (job.error, log.read_text()[-3000:])
    messages = [e.message for e in after]
    assert "resumed after restart" in messages and "resuming from checkpoint-3" in messages
    steps = [MessageToDict(e.data)["step"] for e in after if e.type == "progress"]
    assert steps[0] > 3 and steps[-1] == 8  # steps 1-3 were not trained again
    assert MessageToDict(job.result)["global_step"] == 8


async def test_cancel_stops_the_worker_and_marks_the_job_cancelled(tmp_path: Path, tiny_model_dir: Path):
    from emotune.jobs.store import JobState

    service = trainer_with_dataset(tmp_path, "validated/c/kept", trainer_stop_grace_seconds=2)
    record = await service.start({"base_model": str(tiny_model_dir), "dataset_artifact": "validated/c/kept",
                                  "max_steps": 500, "batch_size": 2, "max_length": 128})
    async for event in service.jobs.watch(record.job_id):
        if event.type == "progress":
            break
    assert _workers_of(tmp_path / "work")
    await service.runner.cancel(record.job_id)
    await service.runner.wait(record.job_id)
    assert service.jobs.get(record.job_id).state == JobState.CANCELLED
    assert not _workers_of(tmp_path / "work")
