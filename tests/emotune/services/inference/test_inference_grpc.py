"""The inference service over real gRPC on loopback: listing, streaming, styles, errors, capacity, cancellation,
and loading models from the artifact store (merged model, base + LoRA adapter, corrupt or missing artifacts)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import pytest_asyncio

from emotune.data.styles import load_styles
from emotune.errors import CorruptArtifact, InvalidInput, NotFound, ResourceExhausted
from emotune.grpc.client import error_details, open_channel, to_domain_error
from emotune.grpc.probe import check
from emotune.grpc.server import start_server
from emotune.services.inference.admission import Admission
from emotune.services.inference.server import add_servicers
from emotune.services.inference.service import InferenceService, Limits
from emotune.store.artifacts import file_key, publish_artifact
from emotune.v1 import inference_pb2, inference_pb2_grpc
from tests.emotune.services.inference.stack import EMOTION_STYLES, MODEL, RunningInference, start_inference

pytestmark = pytest.mark.asyncio(loop_scope="module")
QUESTION = "What is 2+2?"
GREEDY = inference_pb2.SamplingParams(max_tokens=24, temperature=0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def inference(tmp_path_factory):
    running = await start_inference(tmp_path_factory.mktemp("inference"))
    yield running
    await running.stop()


def chat_request(model: str, content: str = QUESTION, sampling=GREEDY, system: str | None = None):
    messages = [inference_pb2.ChatMessage(role="system", content=system)] if system else []
    messages.append(inference_pb2.ChatMessage(role="user", content=content))
    return inference_pb2.ChatRequest(model=model, messages=messages, sampling=sampling)


async def reply(stub, request) -> tuple[str, inference_pb2.ChatChunk]:
    chunks = [chunk async for chunk in stub.Chat(request)]
    assert chunks[0].text == "" and not chunks[0].finish_reason  # "accepted"
    assert chunks[-1].finish_reason and not any(c.finish_reason for c in chunks[:-1])
    return "".join(c.text for c in chunks), chunks[-1]


async def rpc_error(awaitable) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    return info.value


async def test_health_and_model_listing(inference: RunningInference):
    assert await asyncio.to_thread(check, inference.address)
    listing = await inference.stub.ListModels(inference_pb2.ListModelsRequest())
    (model,) = listing.models
    styles = load_styles(EMOTION_STYLES).styles
    assert model.id == MODEL and model.engine == "llamacpp" and model.base_model == MODEL
    assert [(s.style, s.system_prompt) for s in model.styles] == [(s.name, s.serving_prompt) for s in styles]
    # The packaged Q4_1 GGUF (98 MB); the context is a llama.cpp slot's (EMOTUNE_INFERENCE_LLAMACPP_CONTEXT).
    assert model.memory_bytes > 90 * 2**20 and model.max_context == 4096 and list(model.eos_token_ids) == [2]
    assert (listing.in_flight, listing.queued, listing.max_concurrency) == (0, 0, 2)


async def test_chat_streams_text_then_finish_and_usage(inference: RunningInference):
    text, final = await reply(inference.stub, chat_request(MODEL))
    assert "4" in text
    assert final.finish_reason == "stop" and final.usage.prompt_tokens > 10 and final.usage.completion_tokens > 2

    whole = chat_request(MODEL)
    whole.whole_reply = True  # non-streaming callers: "accepted", then one chunk with everything
    accepted, only = [chunk async for chunk in inference.stub.Chat(whole)]
    assert accepted.text == "" and only.text == text and only.usage == final.usage


async def test_style_id_applies_the_styles_serving_prompt(inference: RunningInference):
    style = load_styles(EMOTION_STYLES).get("毒舌")
    styled, styled_final = await reply(inference.stub, chat_request(f"{MODEL}:毒舌"))
    explicit, explicit_final = await reply(inference.stub, chat_request(MODEL, system=style.serving_prompt))
    _plain, plain_final = await reply(inference.stub, chat_request(MODEL))
    assert styled == explicit and styled_final.usage == explicit_final.usage
    assert styled_final.usage.prompt_tokens > plain_final.usage.prompt_tokens


async def test_unknown_model_and_style_are_not_found(inference: RunningInference):
    for name in ("no-such-model", f"{MODEL}:no-such-style"):
        error = await rpc_error(reply(inference.stub, chat_request(name)))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        domain = to_domain_error(error)
        assert isinstance(domain, NotFound) and domain.details["model"] == name


@pytest.mark.parametrize(("sampling", "messages", "field"), [
    (inference_pb2.SamplingParams(temperature=3.0), None, "sampling.temperature"),
    (inference_pb2.SamplingParams(top_p=0.0), None, "sampling.top_p"),
    (inference_pb2.SamplingParams(max_tokens=10**6), None, "sampling.max_tokens"),
    (GREEDY, [("robot", "hi")], "messages[0].role"),
    (GREEDY, [], "messages"),
    (inference_pb2.SamplingParams(presence_penalty=2.5), None, "sampling.presence_penalty"),
    (inference_pb2.SamplingParams(logprobs=True, top_logprobs=21), None, "sampling.top_logprobs"),
    (inference_pb2.SamplingParams(json_schema="[1, 2]"), None, "sampling.json_schema"),
    (inference_pb2.SamplingParams(json_schema="{nope"), None, "sampling.json_schema"),
])
async def test_bad_requests_name_the_field(inference: RunningInference, sampling, messages, field):
    request = chat_request(MODEL, sampling=sampling)
    if messages is not None:
        del request.messages[:]
        request.messages.extend(inference_pb2.ChatMessage(role=r, content=c) for r, c in messages)
    error = await rpc_error(reply(inference.stub, request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(to_domain_error(error), InvalidInput) and error_details(error)["field"] == field


@pytest.mark.parametrize(("model", "with_messages", "field"), [
    (MODEL, True, "prompt"),  # a raw prompt or messages, not both
    (f"{MODEL}:温柔", False, "model"),  # a style is a system prompt: a raw prompt has none
])
async def test_raw_prompt_requests_name_the_field(inference: RunningInference, model, with_messages, field):
    request = chat_request(model)
    request.prompt = "Once upon a time"
    if not with_messages:
        del request.messages[:]
    error = await rpc_error(reply(inference.stub, request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_details(error)["field"] == field


async def test_queue_full_is_resource_exhausted_and_cancel_frees_the_slot(inference: RunningInference):
    """A second service front on the same loaded model, with one slot and no queue."""
    tight = InferenceService(inference.service.registry, Admission(1, 0), Limits())
    server = await start_server("inference", inference.settings, add_servicers(tight), port=0)
    channel = open_channel(f"127.0.0.1:{server.port}", inference.settings)
    stub = inference_pb2_grpc.InferenceStub(channel)
    try:
        long = stub.Chat(chat_request(MODEL, "Tell me a long story.",
                                      inference_pb2.SamplingParams(max_tokens=400, temperature=0)))
        accepted = await long.read()
        assert accepted.text == "" and not accepted.finish_reason  # queued: the first chunk says so
        while not (await long.read()).text:  # generating
            pass
        error = await rpc_error(reply(stub, chat_request(MODEL)))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        refused = to_domain_error(error)
        assert isinstance(refused, ResourceExhausted) and refused.retry_after >= 1
        assert (await stub.ListModels(inference_pb2.ListModelsRequest())).in_flight == 1
        long.cancel()  # the client goes away: the generation must stop and free its slot
        for _ in range(100):
            if (await stub.ListModels(inference_pb2.ListModelsRequest())).in_flight == 0:
                break
            await asyncio.sleep(0.05)
        assert tight.admission.running == 0 and tight.admission.waiting == 0
        _text, final = await reply(stub, chat_request(MODEL))  # capacity is back
        assert final.finish_reason == "stop"
    finally:
        await channel.close()
        await server.stop()


async def test_load_merged_model_artifact_then_unload(inference: RunningInference, smollm_dir):
    store = inference.service.registry.store
    files = {p.name: p for p in smollm_dir.iterdir() if p.is_file() and not p.name.startswith(".")}
    await asyncio.to_thread(publish_artifact, store, "models/job-1/merged", files, {"kind": "merged"})
    # The reference engine: llama.cpp serves fine-tunes as adapters on their base (and converts merged HF models
    # only where its converter knows the tokenizer, which a GGUF-derived one is not).
    info = await inference.stub.LoadModel(inference_pb2.LoadModelRequest(
        model_id="tuned", artifact="models/job-1/merged", engine="transformers",
        styles=[inference_pb2.StyleTrigger(style="gentle", system_prompt="Answer gently.")]), timeout=300)
    assert info.id == "tuned" and info.artifact == "models/job-1/merged" and info.memory_bytes > 0
    (served,) = [m for m in inference.service.registry.list() if m.id == "tuned"]
    (download,) = served.owned_dirs
    assert (download / "model.safetensors").is_file()
    await inference.stub.LoadModel(inference_pb2.LoadModelRequest(
        model_id="reference", base_model=MODEL, engine="transformers"), timeout=300)
    ids = {m.id for m in (await inference.stub.ListModels(inference_pb2.ListModelsRequest())).models}
    assert ids == {MODEL, "tuned", "reference"}
    # Same weights, same template, same engine: the same greedy reply as the base model.
    assert (await reply(inference.stub, chat_request("tuned")))[0] == \
        (await reply(inference.stub, chat_request("reference")))[0]
    assert (await inference.stub.UnloadModel(inference_pb2.UnloadModelRequest(model_id="reference"))).unloaded
    assert (await reply(inference.stub, chat_request("tuned:gentle")))[1].finish_reason

    assert (await inference.stub.UnloadModel(inference_pb2.UnloadModelRequest(model_id="tuned"))).unloaded
    assert not download.exists()
    error = await rpc_error(reply(inference.stub, chat_request("tuned")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert not (await inference.stub.UnloadModel(inference_pb2.UnloadModelRequest(model_id="tuned"))).unloaded


async def test_base_plus_lora_adapter_artifact(inference: RunningInference, smollm_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def make_adapter():
        base = AutoModelForCausalLM.from_pretrained(smollm_dir)
        config = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
        files = {p.name: p for p in (tmp_path / "adapter").iterdir()}
        publish_artifact(inference.service.registry.store, "models/job-2/adapter", files, {"kind": "adapter"})

    await asyncio.to_thread(make_adapter)
    info = await inference.stub.LoadModel(inference_pb2.LoadModelRequest(
        model_id="styled", base_model=MODEL, adapter_artifact="models/job-2/adapter"), timeout=300)
    assert info.adapter_artifact == "models/job-2/adapter" and info.base_model == MODEL
    adapted, final = await reply(inference.stub, chat_request("styled"))
    base, _ = await reply(inference.stub, chat_request(MODEL))
    assert adapted != base and final.finish_reason in ("stop", "length")
    await inference.stub.UnloadModel(inference_pb2.UnloadModelRequest(model_id="styled"))


async def test_missing_or_corrupt_artifacts_fail_clearly_and_change_nothing(inference: RunningInference, smollm_dir):
    store = inference.service.registry.store
    before = await inference.stub.ListModels(inference_pb2.ListModelsRequest())

    error = await rpc_error(inference.stub.LoadModel(inference_pb2.LoadModelRequest(artifact="models/none")))
    assert error.code() == grpc.StatusCode.NOT_FOUND

    small = {name: smollm_dir / name for name in ("config.json", "tokenizer.json", "tokenizer_config.json")}
    await asyncio.to_thread(publish_artifact, store, "models/tampered", small, {})
    store.put_bytes(file_key("models/tampered", "config.json"), b'{"model_type": "llama"}')
    error = await rpc_error(inference.stub.LoadModel(inference_pb2.LoadModelRequest(artifact="models/tampered")))
    assert error.code() == grpc.StatusCode.DATA_LOSS and isinstance(to_domain_error(error), CorruptArtifact)

    garbage = {**small, "model.safetensors": b"not a safetensors file"}
    await asyncio.to_thread(publish_artifact, store, "models/garbage", garbage, {})
    error = await rpc_error(inference.stub.LoadModel(inference_pb2.LoadModelRequest(artifact="models/garbage")))
    assert error.code() == grpc.StatusCode.DATA_LOSS and "cannot load a model" in error.details()

    error = await rpc_error(inference.stub.LoadModel(inference_pb2.LoadModelRequest(model_id="a:b", base_model=MODEL)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_details(error)["field"] == "model_id"

    after = await inference.stub.ListModels(inference_pb2.ListModelsRequest())
    assert [m.id for m in after.models] == [m.id for m in before.models]
    assert not list((inference.settings.served_dir).glob("models_*"))  # failed downloads are cleaned up
    assert (await reply(inference.stub, chat_request(MODEL)))[1].finish_reason == "stop"
