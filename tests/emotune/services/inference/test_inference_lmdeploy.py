"""LMDeploy engine. Here (no GPU): LMDeploy's own template and tokenizer code builds exactly the prompt tokens
the CPU engine (and so the trainer) builds, for base models and for emotune exports. With CUDA: real serving."""

from __future__ import annotations

import asyncio
import shutil
import threading

import pytest

from emotune.errors import InvalidInput
from emotune.models.chat_template import LMDEPLOY_FILE, ChatFormat, export_chat_files
from emotune.services.inference.config import InferenceSettings
from emotune.services.inference.engines.base import ChatParams, ModelSource
from emotune.services.inference.engines.transformers_cpu import TransformersModel

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "你是一个温柔体贴的聊天伙伴。"}, {"role": "user", "content": "  今天好累呀  "}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"},
     {"role": "assistant", "content": "Hello~"}, {"role": "user", "content": "下班了，去哪儿玩？"}],
]


def cpu_model_without_weights(chat_format: ChatFormat) -> TransformersModel:
    """The CPU engine's prompt building (``TransformersEngine.load`` binds ``ChatFormat.from_pretrained``)."""
    return TransformersModel(engine="transformers", memory_bytes=0, eos_token_ids=(), max_context=0,
                             chat_format=chat_format)


@pytest.fixture(params=["smollm_dir", "gemma_dir"])
def base_dir(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("exported", [False, True], ids=["base-hf-template", "emotune-export-json"])
def test_lmdeploy_builds_the_same_prompt_tokens(base_dir, exported, tmp_path):
    pytest.importorskip("lmdeploy.model", reason="LMDeploy's template code (pip install --no-deps lmdeploy ...)")
    from emotune.services.inference.engines.lmdeploy_gpu import LMDeployPrompts

    model_dir = base_dir
    if exported:
        model_dir = tmp_path / "export"  # what the trainer writes next to a merged model
        model_dir.mkdir()
        shutil.copy(base_dir / "config.json", model_dir / "config.json")
        export_chat_files(ChatFormat.from_pretrained(base_dir), model_dir)
        assert (model_dir / LMDEPLOY_FILE).is_file()
    lmdeploy = LMDeployPrompts(model_dir)
    cpu = cpu_model_without_weights(lmdeploy.chat_format)
    for messages in CONVERSATIONS:
        assert lmdeploy.ids(messages) == cpu.prompt_ids(messages), messages


@pytest.mark.filterwarnings("ignore::UserWarning:peft")  # tied embeddings in SmolLM2
def test_an_adapter_is_checked_before_lmdeploy_loads_anything(smollm_dir, tmp_path):
    """A directory that is no LoRA export fails at once naming why (the base path does not even exist: LMDeploy
    never started); a real adapter passes, with TurboMind's merged-only limit logged as a warning."""
    pytest.importorskip("lmdeploy", reason="LMDeploy (pip install --no-deps lmdeploy ...)")
    from structlog.testing import capture_logs

    from emotune.services.inference.engines.lmdeploy_gpu import LMDeployEngine
    from tests.emotune.services.inference.test_adapter_check import make_adapter

    engine = LMDeployEngine(InferenceSettings())
    (tmp_path / "not-an-adapter").mkdir()
    with pytest.raises(InvalidInput, match="adapter_config.json"):
        engine.load(ModelSource(tmp_path / "no-base", adapter_dir=tmp_path / "not-an-adapter"))
    adapter = make_adapter(smollm_dir, tmp_path / "r8", r=8)
    with capture_logs() as logs:
        engine.check(adapter)
    assert [(entry["log_level"], entry["problem"]) for entry in logs] == [("warning", "turbomind")]
    with capture_logs() as logs:
        LMDeployEngine(InferenceSettings(inference_lmdeploy_backend="pytorch")).check(adapter)
    assert logs == []


cuda = pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("backend", ["turbomind", "pytorch"])
async def test_lmdeploy_streams_stops_and_cancels_on_gpu(smollm_dir, backend):
    from emotune.services.inference.engines.lmdeploy_gpu import LMDeployEngine

    engine = LMDeployEngine(InferenceSettings(inference_lmdeploy_backend=backend))
    model = await asyncio.to_thread(engine.load, ModelSource(smollm_dir))
    try:
        finished = threading.Event()
        texts, final = [], None
        chat = model.prepare(CONVERSATIONS[0], ChatParams(max_tokens=32, temperature=0))
        async for chunk in model.start(chat, finished.set):
            texts.append(chunk.text)
            final = chunk if chunk.finish_reason else final
        assert "Paris" in "".join(texts) and final.finish_reason == "stop" and final.completion_tokens > 0
        assert await asyncio.to_thread(finished.wait, 10)

        cancelled = threading.Event()
        long = model.prepare([{"role": "user", "content": "Tell me a long story."}],
                             ChatParams(max_tokens=500, temperature=0))
        generation = model.start(long, cancelled.set)
        async for _chunk in generation:
            generation.cancel()
            break
        assert await asyncio.to_thread(cancelled.wait, 10)
    finally:
        model.close()
