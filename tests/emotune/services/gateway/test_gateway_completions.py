"""``/v1/completions`` through the official ``openai`` client, against the real inference service on loopback:
raw prompts continued as-is on the llamacpp engine (SmolLM2) and the transformers engine."""

from __future__ import annotations

import httpx
import openai
import pytest

from emotune.v1 import inference_pb2
from tests.emotune.services.gateway.conftest import API_KEYS
from tests.emotune.services.inference.stack import MODEL

pytestmark = pytest.mark.asyncio(loop_scope="module")
PROMPT = "The capital of France is Paris. The capital of Germany is"


async def direct_text(inference, model: str, max_tokens: int) -> str:
    """The same greedy raw-prompt request straight to the inference service."""
    request = inference_pb2.ChatRequest(model=model, prompt=PROMPT,
                                        sampling=inference_pb2.SamplingParams(max_tokens=max_tokens, temperature=0))
    return "".join([chunk.text async for chunk in inference.stub.Chat(request)])


async def test_completion_continues_the_raw_prompt(client, inference):
    completion = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
    choice = completion.choices[0]
    assert completion.object == "text_completion" and completion.id.startswith("cmpl-")
    assert choice.text == await direct_text(inference, MODEL, 6) and "Berlin" in choice.text
    assert choice.finish_reason == "length" and choice.logprobs is None
    usage = completion.usage
    assert usage.completion_tokens == 6 and usage.total_tokens == usage.prompt_tokens + 6
    chat = await client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPT}],
                                                max_tokens=6, temperature=0)
    assert chat.usage.prompt_tokens > usage.prompt_tokens  # the chat template adds turns; a raw prompt does not
    listed = await client.completions.create(model=MODEL, prompt=[PROMPT], max_tokens=6, temperature=0)
    assert listed.choices[0].text == choice.text


async def test_stream_equals_the_completion_and_ends_with_done(client, gateway):
    whole = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    stream = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, stream=True,
                                             stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert len({c.id for c in chunks}) == 1 and all(c.object == "text_completion" for c in chunks)
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 3, "stream": True}
    async with (httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {API_KEYS[0]}"}) as http,
                http.stream("POST", "/v1/completions", json=body) as response):
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line async for line in response.aiter_lines() if line]
    assert all(line.startswith("data: ") for line in events) and events[-1] == "data: [DONE]"


async def test_stop_seed_echo_and_penalties(client):
    async def text(**params) -> tuple[str, str]:
        choice = (await client.completions.create(model=MODEL, prompt=PROMPT, **params)).choices[0]
        return choice.text, choice.finish_reason

    full, _ = await text(max_tokens=8, temperature=0)
    cut, reason = await text(max_tokens=8, temperature=0, stop="Berlin")
    assert cut == full[:full.index("Berlin")] and reason == "stop"
    assert await text(max_tokens=8, temperature=1.3, seed=5) == await text(max_tokens=8, temperature=1.3, seed=5)
    echoed, _ = await text(max_tokens=8, temperature=0, echo=True)
    assert echoed == PROMPT + full
    stream = await openai_stream_text(client, max_tokens=8, temperature=0, echo=True)
    assert stream == echoed
    penalised, _ = await text(max_tokens=8, temperature=0, frequency_penalty=2, presence_penalty=2, user="u-1")
    assert penalised


async def openai_stream_text(client: openai.AsyncOpenAI, **params) -> str:
    stream = await client.completions.create(model=MODEL, prompt=PROMPT, stream=True, **params)
    return "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])


async def test_logprobs_on_llamacpp(client):
    completion = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0,
                                                 logprobs=2)
    choice = completion.choices[0]
    logprobs = choice.logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 5
    assert "".join(logprobs.tokens) == choice.text and all(p <= 0 for p in logprobs.token_logprobs)
    assert all(len(top) == 2 and top[token] == max(top.values())
               for token, top in zip(logprobs.tokens, logprobs.top_logprobs, strict=True))
    assert logprobs.text_offset[0] == 0 and logprobs.text_offset[1] == len(logprobs.tokens[0])
    stream = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=2,
                                             stream=True)
    streamed = [token async for chunk in stream if chunk.choices and chunk.choices[0].logprobs
                for token in chunk.choices[0].logprobs.tokens]
    assert streamed == logprobs.tokens


async def test_the_transformers_engine_continues_raw_prompts_and_refuses_logprobs(client, reference_model):
    completion = await client.completions.create(model=reference_model, prompt=PROMPT, max_tokens=4,
                                                 temperature=0)
    assert "Berlin" in completion.choices[0].text
    with pytest.raises(openai.BadRequestError) as info:
        await client.completions.create(model=reference_model, prompt=PROMPT, max_tokens=4, logprobs=1)
    assert info.value.body["param"] == "logprobs" and "transformers engine" in info.value.body["message"]


@pytest.mark.parametrize(("params", "param"), [
    ({"prompt": ["one", "two"]}, "prompt"),
    ({"prompt": [1, 2, 3]}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"model": f"{MODEL}:温柔"}, "model"),
    ({"suffix": "end"}, "suffix"),
    ({"best_of": 2}, "best_of"),
    ({"n": 2}, "n"),
    ({"echo": True, "logprobs": 1}, "echo"),
    ({"logprobs": 50}, "logprobs"),
    ({"logit_bias": {"42": 5}}, "logit_bias"),
    ({"max_tokens": 100_000}, "max_tokens"),
    ({"presence_penalty": 3}, "presence_penalty"),
])
async def test_bad_parameters_are_400_naming_the_parameter(client, params, param):
    request = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4, **params}
    with pytest.raises(openai.BadRequestError) as info:
        await client.completions.create(**request)
    assert info.value.body["param"] == param and info.value.body["type"] == "invalid_request_error"
    assert info.value.body["message"]


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/completions", '{"model": "%s", "prompt": "hi \\ud800"}', "prompt"),
    ("/v1/completions", '{"model": "%s", "prompt": "hi", "stop": ["\\udc00"]}', "stop[0]"),
    ("/v1/chat/completions", '{"model": "%s", "messages": [{"role": "user", "content": "hi \\ud800"}]}',
     "messages[0].content"),
    ("/v1/chat/completions", '{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "response_format": '
     '{"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}}', "response_format"),
])
async def test_text_no_encoder_takes_and_schemas_llama_cpp_refuses_are_400s(gateway, path, body, param):
    """JSON can carry lone surrogates, which gRPC cannot: a 400 naming the field, not a 500 (found by fuzzing)."""
    headers = {"Authorization": f"Bearer {API_KEYS[0]}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=60) as http:
        response = await http.post(path, content=(body % MODEL).encode())
    assert response.status_code == 400 and response.json()["error"]["param"] == param
