"""``grpc.aio`` server factory: error interceptor, standard health service, optional TLS, graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from emotune.grpc.interceptors import ErrorMappingInterceptor
from emotune.logging import get_logger
from emotune.settings import Settings

log = get_logger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


class GrpcServer:
    """A started server; ``port`` is the bound port (useful when asked for port 0 in tests)."""

    def __init__(self, server: grpc.aio.Server, health_servicer: health.aio.HealthServicer, port: int,
                 service_names: list[str], grace: float) -> None:
        self.server, self.health, self.port = server, health_servicer, port
        self.service_names, self.grace = service_names, grace

    async def stop(self) -> None:
        """Report NOT_SERVING first (load balancers drain), then let in-flight calls finish within the grace."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.grace)

    async def wait(self) -> None:
        await self.server.wait_for_termination()


async def start_server(
    service: str,
    settings: Settings,
    add_servicers: Callable[[grpc.aio.Server], Iterable[str]],
    *,
    port: int | None = None,
) -> GrpcServer:
    """Build, bind and start a server. ``add_servicers`` registers servicers and returns their full names."""
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor(service)], options=SERVER_OPTIONS)
    names = list(add_servicers(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = settings.grpc_port(service) if port is None else port
    address = f"{settings.grpc_bind}:{port}"
    if settings.grpc_tls_cert and settings.grpc_tls_key:
        creds = grpc.ssl_server_credentials(
            [(settings.grpc_tls_key.read_bytes(), settings.grpc_tls_cert.read_bytes())]
        )
        bound = server.add_secure_port(address, creds)
    else:
        bound = server.add_insecure_port(address)
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("grpc server started", service=service, address=f"{settings.grpc_bind}:{bound}", services=names)
    return GrpcServer(server, health_servicer, bound, names, settings.grpc_shutdown_grace_seconds)


async def serve_forever(running: GrpcServer, on_stop: Callable[[], object] | None = None) -> None:
    """Run until SIGTERM/SIGINT, then shut down gracefully (what containers and Kubernetes send)."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    await stop_requested.wait()
    log.info("shutting down", services=running.service_names)
    if on_stop is not None:
        result = on_stop()
        if asyncio.iscoroutine(result):
            await result
    await running.stop()
