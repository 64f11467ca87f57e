"""method "dpo" through the trainer service over real gRPC (a tiny Llama with SmolLM2's template, a few pairs):
reward events, the rewards plot and the exported model; and a DPO run resumed from its checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from google.protobuf.json_format import MessageToDict

from emotune.data.records import dumps_records
from emotune.grpc.client import open_channel
from emotune.grpc.server import start_server
from emotune.services.trainer.server import add_servicers
from emotune.store.artifacts import publish_artifact, read_manifest
from emotune.v1 import jobs_pb2, jobs_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from tests.emotune.services.trainer.conftest import trainer_with_dataset
from tests.emotune.services.trainer.test_dpo import pairs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


async def test_dpo_job_logs_rewards_plots_them_and_exports(tmp_path: Path, tiny_model_dir: Path):
    service = trainer_with_dataset(tmp_path, "validated/unused", grpc_deadline_seconds=60)
    store = service.store
    publish_artifact(store, "datasets/pairs", {"records.jsonl": dumps_records(pairs(12)).encode()},
                     {"kind": "dataset"})
    server = await start_server("trainer", service.settings, add_servicers(service), port=0)
    try:
        async with open_channel(f"127.0.0.1:{server.port}", service.settings) as channel:
            ref = await trainer_pb2_grpc.TrainerStub(channel).StartTraining(trainer_pb2.TrainingSpec(
                base_model=str(tiny_model_dir), dataset_artifact="datasets/pairs", method="dpo",
                dpo=trainer_pb2.DpoConfig(beta=0.2, nll_weight=0.1), max_steps=6, batch_size=2, max_length=128,
                learning_rate=3e-3, eval_fraction=0.2, eval_every_steps=3, keep_best_checkpoints=1,
                output_prefix="models/pairs", gguf_quantization="none"))
            jobs = jobs_pb2_grpc.JobsStub(channel)
            events = [{"type": e.type, "message": e.message, "data": MessageToDict(e.data)}
                      async for e in jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=ref.job_id), timeout=900)]
            job = await jobs.GetJob(jobs_pb2.GetJobRequest(job_id=ref.job_id))
    finally:
        await server.stop()
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error
    result = MessageToDict(job.result, preserving_proto_field_name=True)
    progress = [e["data"] for e in events if e["type"] == "progress"]
    assert [p["step"] for p in progress] == [1, 2, 3, 4, 5, 6]
    figures = {"loss", "chosen_reward", "rejected_reward", "reward_margin", "reward_accuracy", "chosen_logps",
               "rejected_logps", "nll_loss", "tokens_per_s", "eta_s"}
    assert all(figures <= set(p) for p in progress), progress[0]
    assert progress[0]["reward_margin"] == pytest.approx(0.0, abs=1e-6)  # step 1: the policy is the reference
    assert progress[-1]["reward_margin"] > 0  # the pairs separate
    held_out = [e["data"] for e in events if e["type"] == "metric"]
    assert [m["step"] for m in held_out] == [3, 6] and all("eval_reward_accuracy" in m for m in held_out)
    assert result["method"] == "dpo" and result["beta"] == 0.2 and result["train_samples"] == 10
    assert store.get_bytes(result["plots"]["rewards"]).startswith(b"\x89PNG")
    assert len(result["reward_curve"]) == 6
    report = read_manifest(store, result["report_artifact"])
    assert {"rewards.png", "rewards.json", "loss_curve.png"} <= set(report.files)
    assert result["merged_artifact"] == "models/pairs/merged" and result["parity"]["conversations"] > 0


def test_a_dpo_run_resumes_from_its_checkpoint(tmp_path: Path, tiny_model_dir: Path):
    from emotune.models.chat_template import ChatFormat
    from emotune.services.trainer import dpo
    from emotune.services.trainer.spec import TrainingSpec

    spec = TrainingSpec(dataset_artifact="x", base_model=str(tiny_model_dir), method="dpo", max_steps=4,
                        batch_size=2, max_length=128, learning_rate=3e-3, eval_fraction=0.2, eval_every_steps=2,
                        keep_best_checkpoints=2, seed=5)
    fmt = ChatFormat.from_pretrained(tiny_model_dir)
    events: list[tuple] = []

    def emit(type: str, message: str = "", **data: object) -> None:
        events.append((type, message, data))

    prepared = dpo.prepare(spec, fmt, pairs(10), None, emit)
    first = dpo.train(spec, prepared, tiny_model_dir, tmp_path, emit, threads=1)
    full_losses = [h["loss"] for h in first["log_history"] if "loss" in h]
    shutil.rmtree(tmp_path / "checkpoints" / "checkpoint-4")  # as if killed after step 2's checkpoint
    events.clear()
    second = dpo.train(spec, prepared, tiny_model_dir, tmp_path, emit, threads=1)
    assert ("log", "resuming from checkpoint-2") in [(t, m) for t, m, _ in events]
    steps = [d["step"] for t, _, d in events if t == "progress"]
    assert steps == [3, 4]
    resumed = [h["loss"] for h in second["log_history"] if "loss" in h]
    assert resumed[-2:] == pytest.approx(full_losses[-2:], rel=1e-4)  # the same steps 3 and 4 as uninterrupted
    assert json.loads((tmp_path / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())[
        "global_step"] == 4
