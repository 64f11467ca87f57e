"""The gateway's gRPC side: channels to the internal services (opened lazily, with deadlines) and a small
client for the inference service that turns gRPC failures into OpenAI errors."""

from __future__ import annotations

import grpc

from emotune.grpc.client import open_channel
from emotune.services.gateway.config import GatewaySettings
from emotune.services.gateway.errors import from_rpc
from emotune.v1 import inference_pb2, inference_pb2_grpc


class Channels:
    """One channel per internal service (``<service>_addr`` in settings), created on first use inside the
    event loop and closed at shutdown: inference for chat, the pipeline for fine-tuning jobs."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._open: dict[str, grpc.aio.Channel] = {}

    def get(self, service: str) -> grpc.aio.Channel:
        if service not in self._open:
            address = getattr(self.settings, f"{service}_addr")
            self._open[service] = open_channel(address, self.settings,
                                               stream_deadline=self.settings.gateway_request_timeout_seconds)
        return self._open[service]

    async def close(self) -> None:
        for channel in self._open.values():
            await channel.close()
        self._open.clear()


class ChatCall:
    """One upstream token stream; ``cancel`` stops the generation on the inference side."""

    def __init__(self, call: grpc.aio.UnaryStreamCall) -> None:
        self._call = call

    async def next(self) -> inference_pb2.ChatChunk | None:
        """The next chunk, or None at the end of the stream."""
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise from_rpc(exc) from None
        return None if message is grpc.aio.EOF else message

    def cancel(self) -> None:
        self._call.cancel()


class InferenceClient:
    def __init__(self, channels: Channels) -> None:
        self._channels = channels
        self._stub_on: tuple[grpc.aio.Channel, inference_pb2_grpc.InferenceStub] | None = None

    @property
    def _stub(self) -> inference_pb2_grpc.InferenceStub:
        channel = self._channels.get("inference")
        if self._stub_on is None or self._stub_on[0] is not channel:
            self._stub_on = (channel, inference_pb2_grpc.InferenceStub(channel))
        return self._stub_on[1]

    async def list_models(self, timeout: float | None = None) -> inference_pb2.ListModelsResponse:
        try:
            return await self._stub.ListModels(inference_pb2.ListModelsRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc(exc) from None

    async def forget(self, model_id: str, delete_artifacts: bool) -> bool:
        """Unpublish a fine-tune: every replica stops serving it."""
        request = inference_pb2.UnloadModelRequest(model_id=model_id, forget=True, delete_artifacts=delete_artifacts)
        try:
            return (await self._stub.UnloadModel(request)).unloaded
        except grpc.aio.AioRpcError as exc:
            raise from_rpc(exc) from None

    def chat(self, request: inference_pb2.ChatRequest) -> ChatCall:
        return ChatCall(self._stub.Chat(request))
