"""Issue 29, low: the file limit and the gateway's body limit agree. An upload up to EMOTUNE_GATEWAY_MAX_UPLOAD_BYTES
(64 MiB by default) goes through the gateway, spooled and streamed to the store (local directory and the real S3
server), while every other route keeps the 1 MB body limit; before, any upload over 1 MB was refused with 413.
Called with the official ``openai`` client."""

from __future__ import annotations

import openai
import pytest
import pytest_asyncio

from tests.emotune.services.gateway.conftest import start_gateway
from tests.support import free_port

MIB = 1024 * 1024
QUESTIONS = "".join(f"第{i}个问题：今天过得怎么样，有没有什么开心的事？\n" for i in range(60_000)).encode()  # ~4.6 MB


@pytest_asyncio.fixture
async def gateways(any_store, store_env, monkeypatch):
    """Two gateways on one store: the default limits, and uploads capped at 2 MiB."""
    for name, value in store_env.items():
        monkeypatch.setenv(name, value)
    dead = f"127.0.0.1:{free_port()}"
    default = await start_gateway(dead)
    small = await start_gateway(dead, gateway_max_upload_bytes=2 * MIB)
    yield default, small
    await small.stop()
    await default.stop()


async def test_uploads_reach_the_file_limit_and_other_bodies_keep_theirs(gateways) -> None:
    default, small = gateways
    assert 4 * MIB < len(QUESTIONS) < 64 * MIB
    async with default.client() as client:
        uploaded = await client.files.create(file=("questions.txt", QUESTIONS), purpose="emotune-questions")
        assert uploaded.bytes == len(QUESTIONS)
        assert await (await client.files.content(uploaded.id)).aread() == QUESTIONS
        with pytest.raises(openai.APIStatusError) as chat:
            await client.chat.completions.create(model="any", messages=[{"role": "user", "content": "x" * 1_100_000}])
        assert chat.value.status_code == 413, chat.value
    async with small.client() as client:
        with pytest.raises(openai.APIStatusError) as refused:
            await client.files.create(file=("questions.txt", QUESTIONS), purpose="emotune-questions")
        assert refused.value.status_code == 413
        assert f"larger than the {2 * MIB} byte limit" in refused.value.message, refused.value.message
        assert (await client.files.list()).data == [uploaded]  # the refused one left nothing behind
