"""A real hf-backend training job over real gRPC on loopback: SmolLM2-135M LoRA on a small styled set.

Checks what the issue's "done" asks: loss goes down, progress events carry step/epoch/loss/lr/tokens-per-second/
ETA and held-out loss, the merged export reloads and generates, stops at the end token, carries the same template
and stop tokens everywhere (the job's parity check passed), and the loss curve / adapter / report are published.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from emotune.chat_template import LMDEPLOY_FILE, MODELFILE, ChatFormat
from emotune.grpc.client import open_channel
from emotune.grpc.server import start_server
from emotune.store.artifacts import download_artifact, read_manifest
from emotune.v1 import jobs_pb2, jobs_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from services.trainer.server import add_servicers
from tests.services.trainer.conftest import trainer_with_dataset

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


async def _watch(stub: jobs_pb2_grpc.JobsStub, job_id: str) -> list[dict]:
    events = []
    async for event in stub.WatchJob(jobs_pb2.WatchJobRequest(job_id=job_id), timeout=1200):
        events.append({"type": event.type, "message": event.message,
                       "data": MessageToDict(event.data, preserving_proto_field_name=True)})
    return events


async def test_hf_job_trains_merges_exports_and_the_export_stops(tmp_path: Path, smollm2_dir: Path):
    service = trainer_with_dataset(tmp_path, "validated/t1/kept", grpc_deadline_seconds=60)
    settings, store = service.settings, service.store
    server = await start_server("trainer", settings, add_servicers(service), port=0)
    try:
        channel = open_channel(f"127.0.0.1:{server.port}", settings)
        trainer, jobs = trainer_pb2_grpc.TrainerStub(channel), jobs_pb2_grpc.JobsStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await trainer.StartTraining(trainer_pb2.TrainingSpec(dataset_artifact="validated/none"))
        assert bad.value.code() == grpc.StatusCode.NOT_FOUND and "validated/none" in bad.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await trainer.StartTraining(trainer_pb2.TrainingSpec(dataset_artifact="validated/t1/kept",
                                                                 learning_rate=5.0))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "learning_rate" in bad.value.details()

        ref = await trainer.StartTraining(trainer_pb2.TrainingSpec(
            backend="hf", base_model="smollm2-135m", dataset_artifact="validated/t1/kept",
            lora=trainer_pb2.LoraConfig(r=8, alpha=16, dropout=0.0), max_length=128, packing=True, max_steps=8,
            learning_rate=1e-3, batch_size=2, eval_fraction=0.1, eval_every_steps=4, keep_best_checkpoints=1,
            seed=3, output_prefix="models/gentle", eval_prompts=["I lost my umbrella"],
        ))
        events = await _watch(jobs, ref.job_id)
        job = await jobs.GetJob(jobs_pb2.GetJobRequest(job_id=ref.job_id))
    finally:
        await server.stop()
    assert job.state == jobs_pb2.JOB_STATE_SUCCEEDED, job.error
    result = MessageToDict(job.result, preserving_proto_field_name=True)

    progress = [e["data"] for e in events if e["type"] == "progress"]
    assert [p["step"] for p in progress] == list(range(1, 9))
    assert all({"epoch", "loss", "lr", "tokens_per_s", "eta_s", "total"} <= set(p) for p in progress)
    assert progress[-1]["tokens_per_s"] > 0 and progress[-1]["eta_s"] == 0
    losses = [p["loss"] for p in progress]
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses  # loss goes down
    held_out = [e["data"]["eval_loss"] for e in events if e["type"] == "metric"]
    assert len(held_out) == 2 and held_out[-1] < held_out[0]
    checkpoints = [e["data"] for e in events if e["type"] == "checkpoint"]
    assert [c["step"] for c in checkpoints] == [4, 8] and all(c["artifact"] for c in checkpoints)
    assert result["best_step"] == 8 and result["best_eval_loss"] == pytest.approx(held_out[-1], rel=1e-3)

    # Published: adapter, merged model, report (loss curve PNG + JSON, spec, metrics, parity); checkpoints cleaned.
    assert result["merged_artifact"] == "models/gentle/merged"
    assert store.get_bytes(result["plots"]["loss_curve"]).startswith(b"\x89PNG")
    report = read_manifest(store, result["report_artifact"])
    assert {"loss_curve.png", "loss_curve.json", "spec.json", "metrics.json", "parity.json"} <= set(report.files)
    assert read_manifest(store, result["adapter_artifact"]).files.keys() >= {"adapter_model.safetensors",
                                                                             "adapter_config.json", MODELFILE}
    assert not list(store.list("models/gentle/checkpoints/"))
    assert result["parity"]["conversations"] > 0 and result["stop_tokens"] == ["<|im_end|>"]

    samples = result["samples"]  # the job's own check on the export: the eval reply stops by itself
    assert [s["prompt"] for s in samples] == ["I lost my umbrella"] and samples[0]["stopped"] is True, samples
    assert "samples.json" in report.files

    # The export reloads on its own and generates in the style, stopping at the end token.
    merged = download_artifact(store, result["merged_artifact"], tmp_path / "merged")
    assert json.loads((merged / LMDEPLOY_FILE).read_text())["stop_words"] == ["<|im_end|>"]
    _generate_and_stop(merged)


def _generate_and_stop(model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    fmt = ChatFormat.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = fmt.prompt_ids([{"role": "system", "content": "You are a gentle, caring friend."},
                             {"role": "user", "content": "I lost my umbrella"}])
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=60, do_sample=False)[0, len(prompt):].tolist()
    assert out[-1] in fmt.stop_token_ids, fmt.tokenizer.decode(out)  # stopped by itself, not by max_new_tokens
    text = fmt.tokenizer.decode(out, skip_special_tokens=True)
    assert "sweetie" in text.lower() or "🌸" in text, text
