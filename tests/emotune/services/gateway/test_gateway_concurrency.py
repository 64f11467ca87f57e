"""64 concurrent streams through the gateway, a quarter of the clients hanging up early: every completed
stream is well-formed and identical (greedy), and no generation leaks (in-flight returns to zero)."""

from __future__ import annotations

import asyncio

import pytest

from emotune.v1 import inference_pb2
from tests.emotune.services.inference.stack import MODEL

pytestmark = pytest.mark.asyncio(loop_scope="module")
STREAMS, EARLY_LEAVERS = 64, 16
MESSAGES = [{"role": "user", "content": "Give me one tip for a calm evening."}]


@pytest.mark.slow
async def test_64_streams_with_early_disconnects_leak_nothing(gateway, inference):
    async with gateway.client(timeout=600) as client:
        async def one(index: int) -> dict | None:
            stream = await client.chat.completions.create(
                model=MODEL, messages=MESSAGES, max_tokens=8, temperature=0, stream=True,
                stream_options={"include_usage": True})
            if index % (STREAMS // EARLY_LEAVERS) == 0:
                await stream.__anext__()  # read the first chunk, then hang up
                await stream.close()
                return None
            chunks = [chunk async for chunk in stream]
            return {
                "role_first": chunks[0].choices[0].delta.role == "assistant",
                "finishes": [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason],
                "text": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
                "usage": chunks[-1].usage,
                "ids": {c.id for c in chunks},
            }

        results = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(STREAMS))), timeout=600)

    completed = [r for r in results if r is not None]
    assert len(completed) == STREAMS - EARLY_LEAVERS
    reference = completed[0]["text"]
    assert reference
    for result in completed:
        assert result["role_first"] and len(result["ids"]) == 1
        assert len(result["finishes"]) == 1 and result["finishes"][0] in ("stop", "length")
        assert result["text"] == reference  # greedy: every stream says the same thing
        assert result["usage"].completion_tokens == completed[0]["usage"].completion_tokens

    for _ in range(200):
        listing = await inference.stub.ListModels(inference_pb2.ListModelsRequest())
        if listing.in_flight == 0 and listing.queued == 0:
            break
        await asyncio.sleep(0.05)
    assert (listing.in_flight, listing.queued) == (0, 0)
    assert gateway.server.config.app.state.gateway.limiter.in_flight == 0
