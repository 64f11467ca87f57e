"""The real stack on loopback: the inference service (gRPC, SmolLM2 + example styles) and the gateway (uvicorn),
called with the official ``openai`` client."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import openai
import pytest_asyncio
import uvicorn
from pydantic import SecretStr

from emotune.services.gateway.app import create_app
from emotune.services.gateway.config import GatewaySettings
from emotune.v1 import inference_pb2
from tests.emotune.services.inference.stack import MODEL, start_inference

API_KEYS = ("sk-emotune-test-one", "sk-emotune-test-two")


@dataclass
class RunningGateway:
    server: uvicorn.Server
    task: asyncio.Task
    settings: GatewaySettings

    @property
    def url(self) -> str:
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def client(self, api_key: str = API_KEYS[0], timeout: float = 120) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=timeout)

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task


async def start_gateway(inference_address: str, **overrides: object) -> RunningGateway:
    values: dict[str, object] = {"inference_addr": inference_address, "gateway_api_keys": SecretStr(",".join(API_KEYS))}
    settings = GatewaySettings(**{**values, **overrides})
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return RunningGateway(server, task, settings)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def inference(tmp_path_factory):
    running = await start_inference(tmp_path_factory.mktemp("inference"))
    yield running
    await running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(inference):
    running = await start_gateway(inference.address, gateway_cors_origins="http://ui.example")
    yield running
    await running.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def client(gateway):
    async with gateway.client() as client:
        yield client


REFERENCE_MODEL = f"{MODEL}-transformers"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reference_model(inference) -> str:
    """The same SmolLM2 on the transformers engine (the stack's default engine is llamacpp)."""
    await inference.stub.LoadModel(inference_pb2.LoadModelRequest(model_id=REFERENCE_MODEL, base_model=MODEL,
                                                                   engine="transformers"))
    return REFERENCE_MODEL
