"""The real inference service on a loopback port, as the inference and gateway tests start it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from emotune.grpc.client import open_channel
from emotune.grpc.server import GrpcServer, start_server
from emotune.services.inference.bootstrap import build_service, preload, shutdown
from emotune.services.inference.config import InferenceSettings
from emotune.services.inference.server import add_servicers
from emotune.services.inference.service import InferenceService
from emotune.store.local import LocalStore
from emotune.v1 import inference_pb2, inference_pb2_grpc

REPO = Path(__file__).resolve().parents[4]
EMOTION_STYLES = REPO / "examples" / "styles" / "emotions.yaml"
MODEL = "smollm2-135m"


@dataclass
class RunningInference:
    settings: InferenceSettings
    service: InferenceService
    server: GrpcServer
    channel: grpc.aio.Channel

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def stub(self) -> inference_pb2_grpc.InferenceStub:
        return inference_pb2_grpc.InferenceStub(self.channel)

    async def in_flight(self) -> int:
        return (await self.stub.ListModels(inference_pb2.ListModelsRequest())).in_flight

    async def stop(self) -> None:
        await self.channel.close()
        await self.server.stop()
        shutdown(self.service)


async def start_inference(root: Path, **overrides: object) -> RunningInference:
    """SmolLM2 preloaded with the example emotion styles; artifacts in a local store under ``root``."""
    values: dict[str, object] = {
        "store_path": root / "store", "inference_model_dir": root / "served", "inference_preload": MODEL,
        "inference_preload_styles": EMOTION_STYLES, "grpc_bind": "127.0.0.1", "grpc_shutdown_grace_seconds": 1.0,
    }
    settings = InferenceSettings(**{**values, **overrides})
    service = build_service(settings, LocalStore(settings.store_path))
    await preload(service, settings)
    server = await start_server("inference", settings, add_servicers(service), port=0)
    channel = open_channel(f"127.0.0.1:{server.port}", settings)
    return RunningInference(settings, service, server, channel)
