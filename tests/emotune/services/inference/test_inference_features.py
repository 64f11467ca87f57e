"""Raw prompts (legacy completions), OpenAI's penalties, log probabilities and JSON-constrained replies on both CPU
engines (SmolLM2-135M): served where the engine can, refused naming the engine where it cannot."""

from __future__ import annotations

import json
import math

import httpx
import jsonschema
import pytest

from emotune.errors import InvalidInput
from emotune.models.basemodels import packaged_gguf
from emotune.services.inference.engines.base import ChatParams, ModelSource
from tests.emotune.services.inference.test_inference_engine import STORY, generate, run_generation

PROMPT = "The capital of France is Paris. The capital of Germany is"
MOOD_SCHEMA = {"type": "object", "properties": {"mood": {"type": "string", "enum": ["happy", "sad"]},
                                                "score": {"type": "integer", "minimum": 0, "maximum": 9}},
               "required": ["mood", "score"], "additionalProperties": False}


def _is_llamacpp(model) -> bool:
    return model.engine == "llamacpp"


async def test_a_raw_prompt_is_tokenized_as_is_and_continued(smollm):
    chat = smollm.prepare_prompt(PROMPT, ChatParams(max_tokens=4, temperature=0))
    # No template, no system prompt, no BOS (SmolLM2's template writes none): the text itself.
    assert list(chat.prompt_ids) == smollm.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    assert smollm.tokenizer.decode(chat.prompt_ids) == PROMPT
    if _is_llamacpp(smollm):  # llama.cpp tokenizes the same text to the same ids
        async with httpx.AsyncClient() as http:
            tokenized = await http.post(f"{smollm.base.server.url}/tokenize",
                                        json={"content": PROMPT, "add_special": True})
        assert tokenized.json()["tokens"] == list(chat.prompt_ids)
    chunks, final = await run_generation(smollm, chat)
    text = "".join(chunk.text for chunk in chunks)
    assert "Berlin" in text and final.finish_reason == "length" and final.prompt_tokens == len(chat.prompt_ids)


async def test_raw_prompt_ids_are_llama_cpps_for_gemma_too(llamacpp_engine, gemma_dir):
    """Gemma's sequences start with <bos> (its template writes one); llama.cpp tokenizes its GGUF the same way."""
    gemma = llamacpp_engine.load(ModelSource(gemma_dir, gguf_file=packaged_gguf("gemma3-270m")))
    try:
        ids = list(gemma.prepare_prompt("朋友：今天好累啊\n我：", ChatParams(max_tokens=4)).prompt_ids)
        async with httpx.AsyncClient() as http:
            tokenized = await http.post(f"{gemma.base.server.url}/tokenize",
                                        json={"content": "朋友：今天好累啊\n我：", "add_special": True})
    finally:
        gemma.close()
    assert ids[0] == gemma.tokenizer.bos_token_id and tokenized.json()["tokens"] == ids


def test_an_empty_or_oversized_raw_prompt_is_refused(smollm):
    for prompt in ("", "word " * 10_000):
        with pytest.raises(InvalidInput) as info:
            smollm.prepare_prompt(prompt, ChatParams(max_tokens=4))
        assert info.value.details["field"] == "prompt"


async def test_penalties_steer_the_greedy_reply_away_from_repeats(smollm):
    """A story of 60 greedy tokens repeats words; a strong frequency penalty makes it repeat fewer of them."""
    plain, _ = await generate(smollm, STORY, ChatParams(max_tokens=60, temperature=0))
    penalised, _ = await generate(smollm, STORY, ChatParams(max_tokens=60, temperature=0, frequency_penalty=2.0,
                                                            presence_penalty=1.0))
    assert penalised != plain

    def repeats(text: str) -> int:
        ids = smollm.tokenizer(text)["input_ids"]
        return len(ids) - len(set(ids))

    assert repeats(penalised) < repeats(plain)


async def test_logprobs_follow_the_tokens_of_the_reply(smollm):
    params = ChatParams(max_tokens=12, temperature=0, logprobs=True, top_logprobs=3)
    if not _is_llamacpp(smollm):
        with pytest.raises(InvalidInput, match="transformers engine") as info:
            smollm.refuse_unsupported(params)
        assert info.value.details["field"] == "sampling.logprobs"
        return
    smollm.refuse_unsupported(params)
    chunks, final = await run_generation(smollm, smollm.prepare(STORY, params))
    logprobs = [p for chunk in chunks for p in chunk.logprobs]
    assert len(logprobs) == final.completion_tokens == 12
    assert "".join(p.token for p in logprobs) == "".join(chunk.text for chunk in chunks)
    for p in logprobs:  # greedy: the chosen token is the likeliest one
        assert p.logprob <= 0 and len(p.top) == 3 and p.top[0].token == p.token
        assert math.isclose(p.top[0].logprob, p.logprob, abs_tol=1e-4) and p.bytes == p.token.encode()
        assert p.top[0].logprob >= p.top[1].logprob >= p.top[2].logprob


async def test_json_schema_constrains_the_reply(smollm):
    params = ChatParams(max_tokens=60, temperature=0, json_schema=MOOD_SCHEMA)
    if not _is_llamacpp(smollm):
        with pytest.raises(InvalidInput, match="transformers engine") as info:
            smollm.refuse_unsupported(params)
        assert info.value.details["field"] == "sampling.json_schema"
        return
    messages = [{"role": "user", "content": "I lost my keys today. How do I feel?"}]
    text, final = await generate(smollm, messages, params)
    jsonschema.validate(json.loads(text), MOOD_SCHEMA)
    assert final.finish_reason == "stop"
