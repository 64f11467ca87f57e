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

from emotune.grpc.client import open_channel
from emotune.grpc.server import start_server
from emotune.models.chat_template import LMDEPLOY_FILE, MODELFILE, ChatFormat
from emotune.services.trainer.server import add_servicers
from emotune.settings import Settings
from emotune.store.artifacts import download_artifact, read_manifest
from emotune.v1 import jobs_pb2, jobs_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from tests.emotune.services.trainer.conftest import trainer_with_dataset

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
            seed=3, output_prefix="models/gentle", eval_prompts=["I lost my umbrella"], gguf_quantization="Q8_0",
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
    # The adapter folder samples as its base: the merged model's generation_config (the base's), not eos ids only.
    adapter = download_artifact(store, result["adapter_artifact"], tmp_path / "adapter")
    assert json.loads((adapter / "generation_config.json").read_text()) == json.loads(
        (merged / "generation_config.json").read_text())
    _generate_and_stop(merged)

    # The GGUF export: llama.cpp built the same prompts as training (checked by the job), and the quantized model
    # served from its own metadata (template, eos) by llama-server stops by itself, in the style. (Q8_0: the
    # packaged SmolLM2 is already Q4_1, and re-quantizing a 135M model to 4 bits again makes it loop.)
    assert result["gguf_artifact"] == "models/gentle/gguf" and "llama.cpp" in result["parity"]["engines"]
    assert result["gguf"]["quantization"] == "Q8_0" and result["gguf"]["parity_prompts"] > 0
    gguf = download_artifact(store, result["gguf_artifact"], tmp_path / "gguf")
    modelfile = (gguf / MODELFILE).read_text()
    assert modelfile.startswith("FROM ./model.gguf\n") and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "PARAMETER num_ctx 8192" in modelfile  # SmolLM2's trained context, not a constant
    _gguf_stops(gguf, tmp_path)


def _gguf_stops(gguf_dir: Path, work: Path) -> None:
    import httpx

    from emotune.models.llamacpp import LlamaCpp, LlamaServer, gguf_metadata

    assert gguf_metadata(gguf_dir / "model.gguf")["tokenizer.ggml.eos_token_id"] == 2  # <|im_end|>
    tools = LlamaCpp.locate(Settings().cache_dir)
    with LlamaServer(tools, gguf_dir / "model.gguf", work / "served-gguf") as server:
        reply = httpx.post(f"{server.url}/v1/chat/completions", timeout=120, json={
            "messages": [{"role": "system", "content": "You are a gentle, caring friend."},
                         {"role": "user", "content": "I lost my umbrella"}], "max_tokens": 80, "temperature": 0,
        }).json()["choices"][0]
    assert reply["finish_reason"] == "stop", reply  # the end-of-turn token, not max_tokens
    text = reply["message"]["content"]
    assert "<|im_end|>" not in text and ("sweetie" in text.lower() or "🌸" in text), text


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
