"""Both CPU engines (transformers, llama.cpp) on SmolLM2-135M: the training formatter's prompt, eos/length/stop/
cancel endings, seeds."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from emotune.errors import InvalidInput
from emotune.models.chat_template import ChatFormat
from emotune.services.inference.engines.base import ChatParams, Chunk, ModelSource, PreparedChat

QUESTION = [{"role": "user", "content": "What is 2+2?"}]
STORY = [{"role": "user", "content": "Tell me a long story about a brave little cat."}]


class Finished:
    def __init__(self) -> None:
        self.calls = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.event.set()


async def run_generation(model, chat: PreparedChat, cancel_after: int | None = None) -> tuple[list[Chunk], Chunk]:
    """Every chunk of a prepared generation and the final one (checking that it finished exactly once)."""
    finished = Finished()
    generation = model.start(chat, finished)
    chunks: list[Chunk] = []
    final: Chunk | None = None
    async for chunk in generation:
        chunks.append(chunk)
        if cancel_after is not None and len(chunks) == cancel_after:
            generation.cancel()
        if chunk.finish_reason:
            final = chunk
    assert await asyncio.to_thread(finished.event.wait, 10)
    await asyncio.sleep(0.05)
    assert finished.calls == 1
    return chunks, final


async def generate(model, messages, params: ChatParams, cancel_after: int | None = None):
    chunks, final = await run_generation(model, model.prepare(messages, params), cancel_after)
    return "".join(chunk.text for chunk in chunks), final


def test_prompt_is_the_trainers_prompt(smollm, smollm_dir):
    messages = [{"role": "system", "content": "  Be kind. "}, *QUESTION]
    expected = ChatFormat.from_pretrained(smollm_dir).prompt_ids(messages)
    assert smollm.prompt_ids(messages) == expected
    text = smollm.tokenizer.decode(expected)
    assert text.endswith("<|im_start|>assistant\n") and "<|im_start|>system\nBe kind.<|im_end|>" in text
    assert smollm.eos_token_ids[0] == smollm.tokenizer.convert_tokens_to_ids("<|im_end|>")


async def test_greedy_reply_stops_on_eos_and_is_reproducible(smollm):
    params = ChatParams(max_tokens=48, temperature=0)
    text, final = await generate(smollm, QUESTION, params)
    again, _ = await generate(smollm, QUESTION, params)
    assert text == again and "4" in text
    assert final.finish_reason == "stop"
    assert final.prompt_tokens == len(smollm.prompt_ids(QUESTION))
    # The eos token is counted but never shown.
    assert final.completion_tokens == len(smollm.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
    assert "<|im_end|>" not in text


async def test_max_tokens_ends_with_length(smollm):
    text, final = await generate(smollm, STORY, ChatParams(max_tokens=5, temperature=0))
    assert final.finish_reason == "length" and final.completion_tokens == 5 and text


async def test_stop_string_cuts_before_the_match(smollm):
    full, _ = await generate(smollm, STORY, ChatParams(max_tokens=16, temperature=0))
    words = full.split()
    stop = " ".join(words[3:5])
    cut, final = await generate(smollm, STORY, ChatParams(max_tokens=16, temperature=0, stop=(stop,)))
    assert cut == full[:full.index(stop)]
    assert final.finish_reason == "stop" and final.completion_tokens < 16


async def test_same_seed_same_reply_other_seeds_differ(smollm):
    def params(seed: int) -> ChatParams:
        return ChatParams(max_tokens=12, temperature=1.5, seed=seed)

    first, _ = await generate(smollm, STORY, params(1))
    assert (await generate(smollm, STORY, params(1)))[0] == first
    others = {(await generate(smollm, STORY, params(seed)))[0] for seed in (2, 3)}
    assert others - {first}


async def test_cancel_stops_generation_and_reports_cancelled(smollm):
    _text, final = await generate(smollm, STORY, ChatParams(max_tokens=200, temperature=0), cancel_after=2)
    assert final.finish_reason == "cancelled"
    assert final.completion_tokens <= 6  # stopped within a token or two of the request


def test_prompt_longer_than_the_context_is_refused(smollm):
    huge = [{"role": "user", "content": "hello " * (smollm.max_context + 10)}]

    with pytest.raises(InvalidInput) as info:
        smollm.prepare(huge, ChatParams(max_tokens=4))
    assert info.value.field == "messages" and str(smollm.max_context) in info.value.message


def test_a_later_system_message_stays_a_system_turn_where_chatml_has_one(smollm):
    messages = [*QUESTION, {"role": "assistant", "content": "4"}, {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": "And 3+3?"}]
    text = smollm.tokenizer.decode(smollm.prompt_ids(messages))
    assert "<|im_end|>\n<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\nAnd 3+3?" in text


@pytest.fixture(scope="module")
def penalised(request, smollm_dir, smollm_source, tmp_path_factory):
    """SmolLM2 on each CPU engine, from a folder whose generation_config.json publishes a repetition penalty."""
    folder = tmp_path_factory.mktemp("penalised")
    for item in smollm_dir.iterdir():
        if item.name != "generation_config.json":
            (folder / item.name).symlink_to(item)
    config = json.loads((smollm_dir / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, "repetition_penalty": 1.5}))
    return {name: request.getfixturevalue(engine).load(ModelSource(folder, gguf_file=smollm_source.gguf_file))
            for name, engine in (("transformers", "cpu_engine"), ("llamacpp", "llamacpp_engine"))}


@pytest.mark.parametrize("engine", ["transformers", "llamacpp"])
async def test_the_models_published_repetition_penalty_is_applied(request, penalised, engine):
    plain = request.getfixturevalue("cpu_engine" if engine == "transformers" else "llamacpp_engine").load(
        request.getfixturevalue("smollm_source"))
    params = ChatParams(max_tokens=80, temperature=0)
    free, _ = await generate(plain, STORY, params)
    held, _ = await generate(penalised[engine], STORY, params)

    def distinct(text: str) -> float:
        ids = plain.tokenizer(text, add_special_tokens=False)["input_ids"]
        return len(set(ids)) / len(ids)

    assert penalised[engine].defaults["repetition_penalty"] == 1.5 and plain.defaults["repetition_penalty"] == 1.0
    assert held != free and distinct(held) > distinct(free) + 0.1, (free, held)
