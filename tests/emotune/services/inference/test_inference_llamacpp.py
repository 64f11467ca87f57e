"""The llama.cpp engine against real llama-server processes on loopback: llama.cpp's own template rendering and
tokenizer agree with training (SmolLM2 and Gemma, from their packaged GGUFs), styles as LoRA adapters on one base
process, and broken adapters refused while the base keeps serving."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from emotune.errors import CorruptArtifact, Unavailable
from emotune.models.basemodels import packaged_gguf
from emotune.models.chat_template import ChatFormat, export_chat_files
from emotune.models.llamacpp import LlamaServer, adapter_cache_path
from emotune.services.inference.engines.base import ChatParams, ModelSource
from emotune.services.inference.engines.llamacpp import LlamaCppEngine
from tests.emotune.services.inference.test_inference_engine import QUESTION, generate, run_generation

CONVERSATION = [
    {"role": "system", "content": "You are a gentle friend. Keep it short."},
    {"role": "user", "content": "I failed my exam today."},
    {"role": "assistant", "content": "Oh no, that hurts. Do you want to talk about it?"},
    {"role": "user", "content": "Yes. 我很难过……"},
]
GREEDY = ChatParams(max_tokens=24, temperature=0)


@pytest.mark.parametrize("name, model_dir", [("smollm2-135m", "smollm_dir"), ("gemma3-270m", "gemma_dir")])
def test_llamacpp_builds_the_trainers_prompt_ids(llamacpp_engine: LlamaCppEngine, name, model_dir, request,
                                                  tmp_path):
    """Given emotune's template, llama-server's /apply-template + /tokenize give exactly the trained prompt."""
    folder: Path = request.getfixturevalue(model_dir)
    trained = ChatFormat.from_pretrained(folder)
    with LlamaServer(llamacpp_engine.tools, packaged_gguf(name), tmp_path, template=trained.template) as server:
        for history in (CONVERSATION[1:2], CONVERSATION[:2], CONVERSATION):  # no system, system, multi-turn
            assert server.prompt_ids(history) == trained.prompt_ids(history), (name, history)
        assert server.log_file.is_file()
    assert list(tmp_path.iterdir()) == []  # stopped on request: its log and template file are gone


def _random_adapter(base_dir: Path, out: Path, seed: int) -> Path:
    """A real PEFT LoRA adapter with non-zero weights (different seeds: different behaviour)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(smollm_dir, tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters")
    return [_random_adapter(smollm_dir, root / f"style-{seed}", seed) for seed in (1, 2)]


async def test_two_adapters_share_one_base_process_and_answer_differently(llamacpp_engine, smollm_dir, adapters,
                                                                          tmp_path):
    engine = LlamaCppEngine(tmp_path / "cache", slots=2, slot_context=1024, tools_dir=llamacpp_engine.tools.root)
    try:
        gguf = packaged_gguf("smollm2-135m")
        base = engine.load(ModelSource(smollm_dir, gguf_file=gguf))
        alone, _ = await generate(base, QUESTION, GREEDY)
        first = engine.load(ModelSource(smollm_dir, adapters[0], gguf))
        second = engine.load(ModelSource(smollm_dir, adapters[1], gguf))
        (server,) = engine.servers()  # one process for the base and both styles
        assert [first.adapter_id, second.adapter_id] == [0, 1] and len(server.adapters) == 2
        assert base.base is first.base is second.base
        replies = {}
        for label, model in (("base", base), ("first", first), ("second", second)):
            text, final = await generate(model, QUESTION, GREEDY)
            assert final.finish_reason in ("stop", "length") and text
            replies[label] = text
        assert len(set(replies.values())) == 3, replies
        assert replies["base"] == alone  # no adapter leaks into the base's replies (nor its prompt cache)
        # The per-request choice is exact: asking the first style again gives its reply, not the last one's.
        assert (await generate(first, QUESTION, GREEDY))[0] == replies["first"]
        assert (await generate(base, QUESTION, GREEDY))[0] == replies["base"]
        # Raw prompts (legacy completions) go through the same adapters: a fine-tune continues text its own way.
        continued = {}
        for label, model in (("base", base), ("first", first)):
            chunks, _ = await run_generation(model, model.prepare_prompt("Once upon a time", GREEDY))
            continued[label] = "".join(chunk.text for chunk in chunks)
        assert all(continued.values()) and continued["base"] != continued["first"]
        # Unloading every user of the base stops its process.
        for model in (base, first, second):
            model.close()
        assert not engine.servers() and not server.alive
    finally:
        engine.shutdown()


def test_an_adapter_is_sampled_as_its_base_says(llamacpp_engine, smollm_dir, adapters, tmp_path):
    """An adapter export whose generation_config.json carries only eos ids (every emotune export before the fix)
    is served with its base's repetition penalty and top-k: without them the tuned 0.5B looped on 6 of 16
    held-out 毒舌 questions where the base, served with them, looped on 1."""
    base = tmp_path / "base"
    base.mkdir()
    for item in smollm_dir.iterdir():
        if item.name != "generation_config.json":
            (base / item.name).symlink_to(item)
    config = json.loads((smollm_dir / "generation_config.json").read_text())
    (base / "generation_config.json").write_text(
        json.dumps({**config, "do_sample": True, "top_k": 20, "repetition_penalty": 1.3}))
    adapter = tmp_path / "adapter"
    shutil.copytree(adapters[0], adapter)
    export_chat_files(ChatFormat.from_pretrained(smollm_dir), adapter)  # the export's tokenizer, eos ids only
    assert set(json.loads((adapter / "generation_config.json").read_text())) == {"eos_token_id"}
    model = llamacpp_engine.load(ModelSource(base, adapter, packaged_gguf("smollm2-135m")))
    try:
        body = model.request_body(model.prepare(QUESTION, GREEDY), len(model.base.server.adapters))
        assert (body["repeat_penalty"], body["top_k"]) == (1.3, 20)
    finally:
        model.close()


async def test_corrupt_adapter_is_refused_and_the_base_keeps_serving(llamacpp_engine, smollm_dir, adapters, tmp_path):
    engine = LlamaCppEngine(tmp_path / "cache", slots=1, slot_context=1024, tools_dir=llamacpp_engine.tools.root)
    try:
        gguf = packaged_gguf("smollm2-135m")
        base = engine.load(ModelSource(smollm_dir, gguf_file=gguf))
        before, _ = await generate(base, QUESTION, GREEDY)
        (server,) = engine.servers()

        garbage = tmp_path / "garbage"
        garbage.mkdir()
        (garbage / "adapter_config.json").write_bytes((adapters[0] / "adapter_config.json").read_bytes())
        (garbage / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
        with pytest.raises(CorruptArtifact, match="cannot load a model"):
            engine.load(ModelSource(smollm_dir, garbage, gguf))

        # A GGUF adapter llama-server cannot load (a conversion cut short): the new process fails to start.
        good = engine.load(ModelSource(smollm_dir, adapters[0], gguf))
        (serving,) = engine.servers()
        assert serving is not server and not server.alive  # restarted with the adapter, the old one retired
        converted = serving.adapters[0]
        cache_file = adapter_cache_path(engine.cache_dir, adapters[1])
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_bytes(converted.read_bytes()[: converted.stat().st_size // 2])
        with pytest.raises(CorruptArtifact, match="llama-server could not load"):
            engine.load(ModelSource(smollm_dir, adapters[1], gguf))
        assert engine.servers() == [serving] and serving.alive
        assert (await generate(base, QUESTION, GREEDY))[0] == before
        assert (await generate(good, QUESTION, GREEDY))[1].finish_reason in ("stop", "length")
    finally:
        engine.shutdown()



async def test_a_dead_server_is_restarted_with_its_adapters(llamacpp_engine, smollm_dir, adapters, tmp_path):
    engine = LlamaCppEngine(tmp_path / "cache", slots=1, slot_context=1024, tools_dir=llamacpp_engine.tools.root)
    try:
        styled = engine.load(ModelSource(smollm_dir, adapters[0], packaged_gguf("smollm2-135m")))
        before, _ = await generate(styled, QUESTION, GREEDY)
        (server,) = engine.servers()
        server.process.kill()
        server.process.wait()
        with pytest.raises(Unavailable, match="being restarted"):
            await generate(styled, QUESTION, GREEDY)
        assert server.log_file.is_file()  # it died by itself: its log stays for inspection
        for _ in range(200):
            if engine.servers()[0].alive:
                break
            await asyncio.sleep(0.05)
        (revived,) = engine.servers()
        assert revived is not server and revived.adapters == server.adapters
        assert (await generate(styled, QUESTION, GREEDY))[0] == before
        engine.shutdown()
        assert not revived.log_file.exists() and server.log_file.is_file()
    finally:
        engine.shutdown()
