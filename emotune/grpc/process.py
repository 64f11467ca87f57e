"""One start-up for every gRPC service process: logging, store, /metrics, server, resume, graceful stop.

Each ``emotune/services/<name>/__main__.py`` only says how to build its service (:class:`ServiceParts`); the order of
start-up and shutdown is the same everywhere, so a fix to it (e.g. health turning SERVING only once the service
can answer) reaches every service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from emotune.grpc.server import serve_forever, start_server
from emotune.logging import configure_logging, get_logger
from emotune.metrics import start_metrics_server
from emotune.settings import Settings
from emotune.store import open_store
from emotune.store.base import ArtifactStore

SettingsT = TypeVar("SettingsT", bound=Settings)


@dataclass
class ServiceParts:
    """What a service contributes to its process; every hook is optional."""

    add_servicers: Callable[[grpc.aio.Server], Iterable[str]]
    before_serving: Callable[[], Awaitable[Any]] | None = None  # e.g. preload models: health turns SERVING after
    after_serving: Callable[[], Awaitable[Any]] | None = None  # e.g. resume the jobs a previous process left
    on_stop: Callable[[], Any] | None = None  # before the server drains, e.g. leave running jobs resumable
    after_stop: Callable[[], Any] | None = None  # once in-flight calls are drained, e.g. free engines
    describe: Callable[[], dict[str, Any]] = field(default=dict)  # extra fields of the "ready" log line


async def serve_service(name: str, settings: SettingsT,
                        build: Callable[[SettingsT, ArtifactStore], ServiceParts],
                        default_metrics_port: int) -> None:
    configure_logging(settings.log_level, settings.log_json)
    log = get_logger(f"emotune.services.{name}")
    store = open_store(settings)
    parts = build(settings, store)
    metrics_port = start_metrics_server(settings.metrics_port or default_metrics_port, addr=settings.grpc_bind)
    if parts.before_serving is not None:
        await parts.before_serving()
    running = await start_server(name, settings, parts.add_servicers)
    resumed = await parts.after_serving() if parts.after_serving is not None else None
    log.info(f"{name} ready", grpc_port=running.port, metrics_port=metrics_port, store=store.backend,
             **({"resumed_jobs": resumed} if resumed is not None else {}), **parts.describe())
    await serve_forever(running, on_stop=parts.on_stop)
    if parts.after_stop is not None:
        parts.after_stop()


def run_service(name: str, settings_cls: Callable[[], SettingsT],
                build: Callable[[SettingsT, ArtifactStore], ServiceParts], default_metrics_port: int) -> None:
    """``python -m emotune.services.<name>``: serve until SIGTERM/SIGINT."""
    asyncio.run(serve_service(name, settings_cls(), build, default_metrics_port))
