"""A real gRPC service on loopback, served from a background event loop, for tests whose client side is
synchronous (the typer CLIs run ``asyncio.run`` themselves, so the server cannot share their loop)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager

import grpc

from emotune.grpc.server import start_server
from emotune.settings import Settings


@contextmanager
def grpc_service_in_thread(name: str, settings: Settings, add_servicers: Callable[[grpc.aio.Server], Iterable[str]],
                           on_stop: Callable[[], Awaitable[object]] | None = None) -> Iterator[str]:
    """Yield ``127.0.0.1:<port>`` of the started server; stop it (``on_stop`` first) and the loop on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(start_server(name, settings, add_servicers, port=0), loop).result(30)
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        if on_stop is not None:
            asyncio.run_coroutine_threadsafe(on_stop(), loop).result(30)
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
