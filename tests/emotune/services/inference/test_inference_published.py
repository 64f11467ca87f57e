"""Published fine-tunes belong to the deployment, not to a process: real ``python -m emotune.services.inference``
processes on one store serve a fine-tune after a ``kill -9`` and restart, and two of them behind one address (as
two replicas behind a Service) both answer its style ids; deleting it stops it on both. In-process: on-demand
loading (one load for many waiting requests), least-recently-used eviction, a changed artifact refused, and what
may not be deleted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from emotune.errors import CorruptArtifact, InvalidInput, NotFound, PermissionDenied
from emotune.services.inference import published
from emotune.services.inference.registry import LoadSpec
from emotune.store.artifacts import publish_artifact, read_manifest
from emotune.store.local import LocalStore
from emotune.v1 import inference_pb2, inference_pb2_grpc
from tests.emotune.services.inference.stack import MODEL, start_inference
from tests.support.service_process import ServiceProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]
ADAPTER = "models/ftjob-published/adapter"
BLUNT_ADAPTER = "models/ftjob-published/style2/adapter"  # a second style's own adapter
STYLES = [inference_pb2.StyleTrigger(style="gentle", system_prompt="Answer gently."),
          inference_pb2.StyleTrigger(style="blunt", system_prompt="Answer bluntly, in few words.")]
GREEDY = inference_pb2.SamplingParams(max_tokens=8, temperature=0)


def chat_request(model: str) -> inference_pb2.ChatRequest:
    return inference_pb2.ChatRequest(model=model, sampling=GREEDY,
                                     messages=[inference_pb2.ChatMessage(role="user", content="How are you?")])


async def reply(stub: inference_pb2_grpc.InferenceStub, model: str) -> str:
    chunks = [chunk async for chunk in stub.Chat(chat_request(model), timeout=300)]
    assert chunks[-1].finish_reason in ("stop", "length")
    return "".join(c.text for c in chunks)


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, smollm_dir: Path) -> Path:
    """A local store holding two random LoRA adapters of SmolLM2, published as a training job would publish them."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("published-store")
    for seed, key in enumerate((ADAPTER, BLUNT_ADAPTER)):
        torch.manual_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(smollm_dir)
        config = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        out = root.parent / f"adapter{seed}"
        get_peft_model(base, config).save_pretrained(out)
        publish_artifact(LocalStore(root), key, {p.name: p for p in out.iterdir()}, {"kind": "adapter"})
    return root


def inference_process(store_dir: Path, log: Path) -> ServiceProcess:
    return ServiceProcess("inference", log, {
        "EMOTUNE_STORE_BACKEND": "local", "EMOTUNE_STORE_PATH": str(store_dir), "EMOTUNE_INFERENCE_PRELOAD": MODEL,
        "EMOTUNE_INFERENCE_MODEL_DIR": str(log.parent / log.stem), "EMOTUNE_LOG_LEVEL": "WARNING",
        "EMOTUNE_INFERENCE_PUBLISHED_RECHECK_SECONDS": "0.5"})


def connect(process: ServiceProcess) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(process.address)


async def listing(process: ServiceProcess) -> dict[str, inference_pb2.ModelInfo]:
    async with connect(process) as channel:
        response = await inference_pb2_grpc.InferenceStub(channel).ListModels(inference_pb2.ListModelsRequest())
    return {m.id: m for m in response.models}


async def test_a_published_fine_tune_survives_a_restart_and_reaches_every_replica(store_dir: Path, tmp_path: Path):
    first = inference_process(store_dir, tmp_path / "first.log").start()
    second = inference_process(store_dir, tmp_path / "second.log")
    try:
        async with connect(first) as channel:
            info = await inference_pb2_grpc.InferenceStub(channel).LoadModel(inference_pb2.LoadModelRequest(
                model_id="ft-demo", base_model=MODEL, adapter_artifact=ADAPTER, styles=STYLES, publish=True),
                timeout=600)
            assert info.published and info.loaded
            before = await reply(inference_pb2_grpc.InferenceStub(channel), "ft-demo:gentle")

        first.kill9()  # as a crash or a reboot: no goodbye
        first.start()
        shown = (await listing(first))["ft-demo"]
        assert shown.published and not shown.loaded and [s.style for s in shown.styles] == ["gentle", "blunt"]
        async with connect(first) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            started = time.monotonic()
            after = await reply(stub, "ft-demo:gentle")  # loads it here, on demand
            cold = time.monotonic() - started
            started = time.monotonic()
            await reply(stub, "ft-demo:gentle")
            warm = time.monotonic() - started
        assert after == before  # the same adapter, the same greedy reply
        print(f"\nfirst request after a restart {cold:.2f} s (on-demand load), warm {warm:.2f} s")

        # Two replicas behind one address: round robin spreads the requests over both processes.
        second.start()
        target = f"ipv4:{first.address},{second.address}"
        async with grpc.aio.insecure_channel(target, options=[("grpc.lb_policy_name", "round_robin")]) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            # Ten rounds of two: round robin picks among the connections already up, and the second one comes up
            # a moment after the first (20 requests sent at once could all go to the first).
            replies = []
            for _ in range(10):
                replies += await asyncio.gather(*(reply(stub, f"ft-demo:{style.style}") for style in STYLES))
            assert len(replies) == 20 and all(replies)
            assert (await listing(first))["ft-demo"].loaded and (await listing(second))["ft-demo"].loaded

            deleted = await stub.UnloadModel(inference_pb2.UnloadModelRequest(model_id="ft-demo", forget=True))
            assert deleted.unloaded
        await asyncio.sleep(0.6)  # the other replica rechecks the record after EMOTUNE_..._RECHECK_SECONDS
        for process in (first, second):
            async with connect(process) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await reply(inference_pb2_grpc.InferenceStub(channel), "ft-demo:blunt")
            assert error.value.code() == grpc.StatusCode.NOT_FOUND
            assert "ft-demo" not in await listing(process)
        assert read_manifest(LocalStore(store_dir), ADAPTER)  # the artifacts are kept unless asked
    finally:
        first.kill9()
        second.kill9()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def inference(store_dir: Path, tmp_path_factory):
    running = await start_inference(tmp_path_factory.mktemp("in-process"), store_path=store_dir,
                                    inference_max_fine_tunes=1, inference_published_recheck_seconds=0)
    yield running
    await running.stop()


def publish_record(store: LocalStore, model_id: str) -> None:
    spec = LoadSpec(model_id, adapter_artifact=ADAPTER, base_model=MODEL, styles=(("gentle", "Answer gently."),))
    published.publish(store, spec.record(published.artifact_digests(store, [ADAPTER])))


async def test_on_demand_loading_one_load_for_many_waiters_and_lru_eviction(inference):
    registry = inference.service.registry
    for model_id in ("ft-a", "ft-b"):
        publish_record(registry.store, model_id)
    loads = 0
    original = registry.load

    async def counting(spec, **kwargs):
        nonlocal loads
        loads += 1
        return await original(spec, **kwargs)

    registry.load = counting
    try:
        # (reply() checks each one finished; batched greedy replies of llama.cpp may differ in a token)
        await asyncio.gather(*(reply(inference.stub, "ft-a:gentle") for _ in range(4)))
        assert loads == 1
        await reply(inference.stub, "ft-b")  # the limit is one fine-tune: ft-a is evicted
        assert {m.id for m in registry.list()} == {MODEL, "ft-b"}
        await reply(inference.stub, "ft-a:gentle")  # and loads again when asked for
        assert loads == 3 and {m.id for m in registry.list()} == {MODEL, "ft-a"}
    finally:
        registry.load = original
        for model_id in ("ft-a", "ft-b"):
            await registry.unload(model_id, forget=True)


async def test_a_changed_artifact_is_refused_and_only_published_models_can_be_deleted(inference, tmp_path):
    registry = inference.service.registry
    publish_record(registry.store, "ft-changed")
    record = published.read(registry.store, "ft-changed")
    published.publish(registry.store, record.model_copy(update={"digests": {ADAPTER: "0" * 64}}))
    with pytest.raises(CorruptArtifact, match="changed since it was published"):
        await registry.resolve("ft-changed")
    await registry.unload("ft-changed", forget=True)

    with pytest.raises(PermissionDenied, match="not a published fine-tune"):
        await registry.unload(MODEL, forget=True)
    assert not await registry.unload("never-published", forget=True)
    with pytest.raises(NotFound, match="is not served"):
        await registry.resolve("never-published:gentle")


async def test_a_style_with_its_own_adapter_is_served_with_it(inference):
    """One adapter per style: ``<model>:blunt`` answers as the blunt adapter does, ``<model>:gentle`` as the
    model's; the record lists both artifacts with their digests, so a replica loads the same."""
    registry = inference.service.registry
    styles = [STYLES[0], inference_pb2.StyleTrigger(style="blunt", system_prompt=STYLES[1].system_prompt,
                                                    adapter_artifact=BLUNT_ADAPTER)]
    try:
        for model_id, adapter in (("ft-gentle-only", ADAPTER), ("ft-blunt-only", BLUNT_ADAPTER)):
            await inference.stub.LoadModel(inference_pb2.LoadModelRequest(
                model_id=model_id, base_model=MODEL, adapter_artifact=adapter, styles=STYLES), timeout=600)
        info = await inference.stub.LoadModel(inference_pb2.LoadModelRequest(
            model_id="ft-styled", base_model=MODEL, adapter_artifact=ADAPTER, styles=styles, publish=True),
            timeout=600)
        assert [(s.style, s.adapter_artifact) for s in info.styles] == [("gentle", ""), ("blunt", BLUNT_ADAPTER)]
        gentle, blunt = await reply(inference.stub, "ft-styled:gentle"), await reply(inference.stub, "ft-styled:blunt")
        assert gentle == await reply(inference.stub, "ft-gentle-only:gentle")
        assert blunt == await reply(inference.stub, "ft-blunt-only:blunt")
        assert blunt != await reply(inference.stub, "ft-gentle-only:blunt")  # the adapter, not only the prompt
        record = published.read(registry.store, "ft-styled")
        assert record.style_adapters == {"blunt": BLUNT_ADAPTER} and set(record.digests) == {ADAPTER, BLUNT_ADAPTER}
        assert LoadSpec.of(record).style_adapters == (("blunt", BLUNT_ADAPTER),)
    finally:
        for model_id in ("ft-gentle-only", "ft-blunt-only"):
            await registry.unload(model_id)
        await registry.unload("ft-styled", forget=True)


async def test_a_style_adapter_needs_the_styles_prompt():
    spec = LoadSpec("ft-x", base_model=MODEL, styles=(("gentle", "Be gentle."),),
                    style_adapters=(("blunt", BLUNT_ADAPTER),))
    with pytest.raises(InvalidInput, match="'blunt' has an adapter but no system prompt") as error:
        spec.validated()
    assert error.value.field == "styles[0].adapter_artifact"
