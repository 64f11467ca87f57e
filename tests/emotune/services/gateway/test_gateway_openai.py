"""The gateway through the official ``openai`` client, against the real inference service on loopback."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest
from prometheus_client import generate_latest

from emotune.services.inference.admission import Admission
from emotune.services.inference.server import add_servicers
from emotune.services.inference.service import InferenceService, Limits
from emotune.v1 import inference_pb2
from tests.emotune.services.gateway.conftest import API_KEYS, start_gateway
from tests.emotune.services.inference.stack import MODEL

pytestmark = pytest.mark.asyncio(loop_scope="module")
QUESTION = [{"role": "user", "content": "What is 2+2?"}]
STORY = [{"role": "user", "content": "Tell me a very long story about a brave little cat."}]


async def direct_reply(inference, model: str, max_tokens: int = 12) -> str:
    """The same greedy request straight to the inference service."""
    request = inference_pb2.ChatRequest(
        model=model, messages=[inference_pb2.ChatMessage(role="user", content=QUESTION[0]["content"])],
        sampling=inference_pb2.SamplingParams(max_tokens=max_tokens, temperature=0))
    return "".join([chunk.text async for chunk in inference.stub.Chat(request)])


async def test_models_list_has_one_id_per_style(client):
    ids = [model.id for model in (await client.models.list()).data]
    assert ids[0] == MODEL
    assert {f"{MODEL}:{style}" for style in ("温柔", "毒舌", "傲娇", "慵懒")} <= set(ids)
    styled = await client.models.retrieve(f"{MODEL}:毒舌")
    assert styled.id == f"{MODEL}:毒舌" and styled.object == "model" and styled.owned_by == "emotune"
    with pytest.raises(openai.NotFoundError) as info:
        await client.models.retrieve("nope")
    assert info.value.body["code"] == "model_not_found"


async def test_chat_completion_matches_the_direct_call(client, inference):
    completion = await client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=12, temperature=0)
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content == await direct_reply(inference, MODEL) and "4" in choice.message.content
    usage = completion.usage
    assert usage.prompt_tokens > 10 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert completion.id.startswith("chatcmpl-") and completion.model == MODEL


async def test_style_model_id_applies_the_style(client, inference):
    styled = await client.chat.completions.create(model=f"{MODEL}:毒舌", messages=QUESTION, max_tokens=12,
                                                  temperature=0)
    assert styled.choices[0].message.content == await direct_reply(inference, f"{MODEL}:毒舌")
    plain = await client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=12, temperature=0)
    assert styled.usage.prompt_tokens > plain.usage.prompt_tokens  # the style's system prompt is in the prompt


async def test_stream_is_well_formed_and_equals_the_completion(client):
    whole = await client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=12, temperature=0)
    stream = await client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=12, temperature=0,
                                                  stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len({c.id for c in chunks}) == 1


async def test_raw_sse_ends_with_done(gateway):
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 4, "stream": True}
    headers = {"Authorization": f"Bearer {API_KEYS[1]}"}
    async with (httpx.AsyncClient(base_url=gateway.url, headers=headers) as http,
                http.stream("POST", "/v1/chat/completions", json=body) as response):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line async for line in response.aiter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]" and events.count("data: [DONE]") == 1


async def test_sampling_parameters_reach_the_model(client):
    async def text(**params):
        completion = await client.chat.completions.create(model=MODEL, messages=STORY, **params)
        return completion.choices[0].message.content, completion.choices[0].finish_reason

    seeded = await text(max_tokens=10, temperature=1.2, seed=11)
    assert seeded == await text(max_tokens=10, temperature=1.2, seed=11)
    full, reason = await text(max_tokens=6, temperature=0)
    assert reason == "length"
    stop = full.split()[2]
    cut, reason = await text(max_tokens=6, temperature=0, stop=[stop, "never-appears"])
    assert cut == full[:full.index(stop)] and reason == "stop"


async def test_api_keys(gateway):
    async with gateway.client(api_key=API_KEYS[1]) as second:
        assert (await second.models.list()).data
    async with gateway.client(api_key="sk-wrong") as wrong:
        with pytest.raises(openai.AuthenticationError) as info:
            await wrong.models.list()
    assert info.value.status_code == 401 and info.value.body["code"] == "invalid_api_key"
    assert set(info.value.body) == {"message", "type", "param", "code"}
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        missing = await http.post("/v1/chat/completions", json={"model": MODEL, "messages": QUESTION})
    assert missing.status_code == 401 and "API key" in missing.json()["error"]["message"]


async def test_unknown_model_or_style_is_404_model_not_found(client):
    for model in ("nope", f"{MODEL}:nope"):
        with pytest.raises(openai.NotFoundError) as info:
            await client.chat.completions.create(model=model, messages=QUESTION, max_tokens=4)
        assert info.value.body["code"] == "model_not_found" and info.value.body["param"] == "model"
        assert model in info.value.message


@pytest.mark.parametrize(("params", "param"), [
    ({"temperature": 5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"n": 2}, "n"),
    ({"max_tokens": 100_000}, "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}] * 300}, "messages"),
])
async def test_bad_parameters_are_400_naming_the_parameter(client, params, param):
    request = {"model": MODEL, "messages": QUESTION, "max_tokens": 4, **params}
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(**request)
    assert info.value.status_code == 400 and info.value.body["param"] == param
    assert info.value.body["type"] == "invalid_request_error" and info.value.body["message"]


async def test_oversized_body_is_413(client, gateway):
    huge = [{"role": "user", "content": "x" * (gateway.settings.gateway_max_body_bytes + 10)}]
    with pytest.raises(openai.APIStatusError) as info:
        await client.chat.completions.create(model=MODEL, messages=huge, max_tokens=4)
    assert info.value.status_code == 413 and info.value.body["code"] == "request_too_large"


async def _refused_while_a_stream_holds_the_slot(client: openai.AsyncOpenAI) -> openai.RateLimitError:
    """A long stream takes the only slot; a second request must get a 429, returned once the stream is closed."""
    holder = await client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=300, stream=True)
    try:
        await holder.__anext__()
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)
    finally:
        await holder.close()
    return info.value


async def test_full_gateway_answers_429_with_retry_after(inference):
    gateway = await start_gateway(inference.address, gateway_max_concurrent=1, gateway_retry_after_seconds=3)
    try:
        async with gateway.client() as client:
            refused = await _refused_while_a_stream_holds_the_slot(client)
            assert refused.response.headers["retry-after"] == "3"
            assert refused.body["code"] == "rate_limit_exceeded"
            for _ in range(100):  # the slot comes back once the gateway has seen the disconnect
                if gateway.server.config.app.state.gateway.limiter.in_flight == 0:
                    break
                await asyncio.sleep(0.05)
            assert (await client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)).choices
    finally:
        await gateway.stop()


async def test_full_inference_queue_answers_429_with_its_retry_after(inference):
    from emotune.grpc.server import start_server

    tight = InferenceService(inference.service.registry, Admission(1, 0), Limits())
    tight.admission._recent_durations.extend([7.0])  # 7 s per generation, 1 slot: come back in 7 s
    server = await start_server("inference", inference.settings, add_servicers(tight), port=0)
    gateway = await start_gateway(f"127.0.0.1:{server.port}")
    try:
        async with gateway.client() as client:
            refused = await _refused_while_a_stream_holds_the_slot(client)
            assert refused.response.headers["retry-after"] == "7"  # the inference service's own estimate
            assert refused.body["code"] == "rate_limit_exceeded"
    finally:
        await gateway.stop()
        await server.stop()


async def test_unreachable_inference_is_503_and_not_ready():
    gateway = await start_gateway("127.0.0.1:9", grpc_deadline_seconds=2)
    try:
        async with gateway.client() as client:
            with pytest.raises(openai.InternalServerError) as info:
                await client.models.list()
        assert info.value.status_code == 503 and info.value.body["code"] == "service_unavailable"
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
    finally:
        await gateway.stop()


async def test_dropped_non_streaming_request_stops_the_generation(gateway, inference):
    body = {"model": MODEL, "messages": STORY, "max_tokens": 400, "temperature": 0}
    async with httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {API_KEYS[0]}"}) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/chat/completions", json=body, timeout=1.5)
    for _ in range(100):
        if await inference.in_flight() == 0:
            break
        await asyncio.sleep(0.05)
    assert await inference.in_flight() == 0  # 400 tokens would take far longer than this


async def test_operations_endpoints_need_no_key(gateway, client):
    await client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2)
    async with httpx.AsyncClient(base_url=gateway.url) as http:
        ready = await http.get("/readyz")
        not_here = await http.get("/metrics")  # the metrics port is another (test_prometheus.py)
        allowed = await http.options("/v1/chat/completions", headers={
            "Origin": "http://ui.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        foreign = await http.options("/v1/chat/completions", headers={
            "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
    assert ready.status_code == 200 and ready.json()["status"] == "ready" and ready.json()["auth"] == "on"
    assert not_here.status_code == 404
    metrics = generate_latest().decode()  # this process's registry: what the gateway's metrics port serves
    assert 'emotune_gateway_requests_total{method="POST",route="/v1/chat/completions",status="200"}' in metrics
    assert "emotune_gateway_time_to_first_token_seconds" in metrics and "emotune_gateway_in_flight" in metrics
    assert allowed.headers["access-control-allow-origin"] == "http://ui.example"
    assert "access-control-allow-origin" not in foreign.headers


async def test_a_second_system_message_later_in_the_conversation_is_served(client):
    """Agents and LangChain send one; OpenAI accepts it, and so does emotune (placed as the template allows)."""
    reply = await client.chat.completions.create(model=MODEL, max_tokens=8, temperature=0, messages=[
        *QUESTION, {"role": "assistant", "content": "4"}, {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Answer with a number."}, {"role": "user", "content": "And 3+3?"}])
    assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.prompt_tokens > 20
