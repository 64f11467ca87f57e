"""Chat completions' optional features through the official ``openai`` client: a JSON ``response_format``
and ``logprobs`` honoured on the llamacpp engine and refused (400 naming the engine) on the transformers engine;
penalties, ``seed`` and ``user`` accepted on both."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.emotune.services.inference.stack import MODEL

pytestmark = pytest.mark.asyncio(loop_scope="module")
FEELING = [{"role": "user", "content": "I lost my keys today. Describe my mood as JSON."}]
# Any JSON object is allowed, so a 135M model needs an example to write a small one (else it nests until cut).
JSON_FEW_SHOT = [
    {"role": "system", "content": 'Answer with one JSON object like {"mood": "happy"}.'},
    {"role": "user", "content": "I won the lottery!"}, {"role": "assistant", "content": '{"mood": "happy"}'},
    {"role": "user", "content": "I lost my keys today."},
]
MOOD_SCHEMA = {"type": "object", "properties": {"mood": {"type": "string", "enum": ["happy", "sad", "angry"]},
                                                "intensity": {"type": "integer", "minimum": 1, "maximum": 5}},
               "required": ["mood", "intensity"], "additionalProperties": False}


async def test_json_object_is_honoured_on_llamacpp(client):
    reply = await client.chat.completions.create(model=MODEL, messages=JSON_FEW_SHOT, max_tokens=120,
                                                 temperature=0, response_format={"type": "json_object"})
    assert isinstance(json.loads(reply.choices[0].message.content), dict)
    assert reply.choices[0].finish_reason == "stop"


async def test_json_schema_is_honoured_on_llamacpp_streamed_too(client):
    response_format = {"type": "json_schema", "json_schema": {"name": "mood", "schema": MOOD_SCHEMA, "strict": True}}
    reply = await client.chat.completions.create(model=f"{MODEL}:毒舌", messages=FEELING, max_tokens=60,
                                                 temperature=0.8, seed=3, response_format=response_format)
    jsonschema.validate(json.loads(reply.choices[0].message.content), MOOD_SCHEMA)
    stream = await client.chat.completions.create(model=f"{MODEL}:毒舌", messages=FEELING, max_tokens=60,
                                                  temperature=0.8, seed=3, response_format=response_format,
                                                  stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == reply.choices[0].message.content


async def test_logprobs_and_top_logprobs_on_llamacpp(client):
    reply = await client.chat.completions.create(model=MODEL, messages=FEELING, max_tokens=8, temperature=0,
                                                 logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens == 8
    assert "".join(p.token for p in content) == reply.choices[0].message.content
    for p in content:
        assert p.logprob <= 0 and bytes(p.bytes) == p.token.encode() and len(p.top_logprobs) == 3
        assert p.top_logprobs[0].token == p.token  # greedy
    plain = await client.chat.completions.create(model=MODEL, messages=FEELING, max_tokens=8, temperature=0)
    assert plain.choices[0].logprobs is None and plain.choices[0].message.content == reply.choices[0].message.content
    stream = await client.chat.completions.create(model=MODEL, messages=FEELING, max_tokens=8, temperature=0,
                                                  logprobs=True, stream=True)
    streamed = [p.token async for c in stream if c.choices and c.choices[0].logprobs
                for p in c.choices[0].logprobs.content]
    assert streamed == [p.token for p in content]


@pytest.mark.parametrize(("params", "param", "words"), [
    ({"response_format": {"type": "json_object"}}, "response_format", "JSON-constrained"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "m", "schema": MOOD_SCHEMA}}},
     "response_format", "JSON-constrained"),
    ({"logprobs": True}, "logprobs", "logprobs"),
])
async def test_the_transformers_engine_refuses_what_it_cannot_do(client, reference_model, params, param, words):
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=reference_model, messages=FEELING, max_tokens=4, **params)
    body = info.value.body
    assert body["param"] == param and "transformers engine" in body["message"] and words in body["message"]


@pytest.mark.parametrize("engine", ["llamacpp", "transformers"])
async def test_penalties_seed_and_user_are_applied_on_both_engines(client, reference_model, engine):
    model = MODEL if engine == "llamacpp" else reference_model

    async def text(**params) -> str:
        reply = await client.chat.completions.create(model=model, messages=FEELING, max_tokens=40, **params)
        return reply.choices[0].message.content

    plain = await text(temperature=0, user="end-user-1")
    assert await text(temperature=0, frequency_penalty=2.0, presence_penalty=2.0) != plain
    assert await text(temperature=1.0, seed=7) == await text(temperature=1.0, seed=7)


@pytest.mark.parametrize(("params", "param"), [
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"frequency_penalty": -2.5}, "frequency_penalty"),
    ({"logit_bias": {"50256": -100}}, "logit_bias"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
])
async def test_bad_feature_parameters_are_400_naming_the_parameter(client, params, param):
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model=MODEL, messages=FEELING, max_tokens=4, **params)
    assert info.value.body["param"] == param and info.value.body["message"]
