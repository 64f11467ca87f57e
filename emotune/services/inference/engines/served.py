"""What the out-of-process engines (llama.cpp, vLLM) share: one server process per base model, serving that
base and every adapter of it, and generations streamed from it over loopback HTTP.

- :class:`BaseProcesses` keeps the current server of each base. A model (the base, or one of its adapters)
  ``acquire``\\ s it; an adapter the server lacks starts a new server with the longer list (appended, so the
  adapters already served keep their ids/names), and the old one is retired once its running generations end.
  ``release`` by the last user stops it; ``revive`` restarts a server that died, with the same adapters.
- :class:`ProcessModel` starts a generation as an asyncio task reading the server's stream (engines supply
  :meth:`ProcessModel.chunks`); cancelling it closes the HTTP stream, which makes the server stop that request.
- The engines read the servers' event streams with httpx-sse, which splits lines only at CR/LF as SSE defines
  them: httpx's ``aiter_lines`` also splits at U+2028, U+0085 and the other Unicode line breaks, which JSON leaves
  unescaped, so a generated token holding one would cut an event in two.
"""

from __future__ import annotations

import asyncio
import json
import threading
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import httpx

from emotune.errors import InvalidInput, Unavailable
from emotune.logging import get_logger
from emotune.models.server_process import LocalServer
from emotune.services.inference.engines.base import (
    Chunk,
    Generation,
    PreparedChat,
    QueuedGeneration,
    TemplatedModel,
)

log = get_logger(__name__)

Adapter = TypeVar("Adapter")


@dataclass
class BaseProcess:
    """The current server of one base model, the template it was given, and how many served models use it."""

    server: LocalServer
    template: str
    users: int = 0


class BaseProcesses(Generic[Adapter]):
    """One server per base model. ``spawn(base, adapters, template)`` starts a server and waits until it is
    ready (raising when it cannot load); ``key`` tells which adapter is which."""

    def __init__(self, spawn: Callable[[Path, list[Adapter], str], LocalServer],
                 key: Callable[[Adapter], Hashable] = lambda adapter: adapter) -> None:
        self.spawn, self.key = spawn, key
        self._bases: dict[Path, BaseProcess] = {}
        self._lock = threading.Lock()

    def acquire(self, base: Path, template: str, adapter_key: Hashable | None = None,
                new_adapter: Callable[[int], Adapter] | None = None) -> tuple[BaseProcess, Adapter | None]:
        """The base's process, serving the adapter ``adapter_key`` (made by ``new_adapter(index)`` if new)."""
        with self._lock:
            process = self._bases.get(base)
            adapters = list(process.server.adapters) if process is not None else []
            adapter = next((a for a in adapters if self.key(a) == adapter_key), None)
            if adapter_key is not None and adapter is None:
                adapter = new_adapter(len(adapters))
                adapters.append(adapter)
            if process is None or not process.server.alive or len(adapters) != len(process.server.adapters):
                server = self.spawn(base, adapters, template)  # raises: nothing changed, the old one serves on
                if process is None:
                    process = self._bases[base] = BaseProcess(server, template)
                else:
                    process.server.retire()
                    process.server = server
            process.users += 1
            return process, adapter

    def revive(self, base: Path) -> None:
        """Start a new server (same adapters, same ids) for a base whose process died."""
        with self._lock:
            process = self._bases.get(base)
            if process is None or process.server.alive:
                return
            try:
                process.server = self.spawn(base, process.server.adapters, process.template)
            except Exception as exc:  # noqa: BLE001 - logged; the next request tries again
                log.error("server restart failed", base=base.name, error=str(exc))

    def release(self, base: Path) -> None:
        with self._lock:
            process = self._bases.get(base)
            if process is None:
                return
            process.users -= 1
            if process.users <= 0:
                del self._bases[base]
                process.server.retire()

    def servers(self) -> list[LocalServer]:
        with self._lock:
            return [process.server for process in self._bases.values()]

    def shutdown(self) -> None:
        with self._lock:
            for process in self._bases.values():
                process.server.stop()
            self._bases.clear()


class StreamedGeneration(QueuedGeneration):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self._loop = asyncio.get_running_loop()

    def cancel(self) -> None:
        if self.task is not None:
            self._loop.call_soon_threadsafe(self.task.cancel)


@dataclass
class Counts:
    """What a stream reports besides text: token counts and how it ended."""

    prompt_tokens: int
    completion_tokens: int = 0
    finish: str = "stop"


@dataclass
class ProcessModel(TemplatedModel):
    """A served model whose generations run in its base's server process."""

    base: BaseProcess = field(default=None, repr=False)  # type: ignore[assignment]
    release: Callable[[], None] = field(default=lambda: None, repr=False)
    revive: Callable[[], None] = field(default=lambda: None, repr=False)

    @abstractmethod
    def chunks(self, client: httpx.AsyncClient, server: LocalServer, chat: PreparedChat,
               counts: Counts) -> AsyncIterator[Chunk]:
        """The text chunks of one generation (the engine's request and stream format); sets ``counts``."""

    def start(self, chat: PreparedChat, on_finished: Callable[[], None]) -> Generation:
        server = self.base.server
        if not server.alive:
            threading.Thread(target=self.revive, name="server-revive", daemon=True).start()
            raise Unavailable(f"{server.program} for {server.model.name} had exited ({server.log_tail()}); it is "
                              "being restarted, retry shortly")
        generation = StreamedGeneration()
        server.begin()

        def finished(_: asyncio.Task) -> None:
            server.end()
            on_finished()

        generation.task = asyncio.get_running_loop().create_task(self._stream(generation, server, chat))
        generation.task.add_done_callback(finished)
        return generation

    async def _stream(self, generation: StreamedGeneration, server: LocalServer, chat: PreparedChat) -> None:
        counts = Counts(prompt_tokens=len(chat.prompt_ids))
        try:
            # A client per generation: a served model outlives event loops (tests, restarts); loopback is cheap.
            # Plain http on loopback: verify=False only skips loading the CA bundle (~33 ms of TTFT otherwise).
            async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5), verify=False) as client:
                async for chunk in self.chunks(client, server, chat, counts):
                    generation.queue.put_nowait(chunk)
            generation.queue.put_nowait(Chunk("", counts.finish, prompt_tokens=counts.prompt_tokens,
                                              completion_tokens=counts.completion_tokens))
        except asyncio.CancelledError:
            # Leaving the stream closed the connection: the server stops this request.
            generation.queue.put_nowait(Chunk("", "cancelled", prompt_tokens=counts.prompt_tokens,
                                              completion_tokens=counts.completion_tokens))
        except httpx.HTTPError as exc:
            generation.queue.put_nowait(Unavailable(f"{server.program} stream failed: {exc!r}; {server.log_tail()}"))
        except Exception as exc:  # the reader gets the error instead of a hang
            if not isinstance(exc, InvalidInput | Unavailable):
                log.error("generation failed", program=server.program, exc_info=exc)
            generation.queue.put_nowait(exc)

    def close(self) -> None:
        self.release()


async def refuse_unless_ok(response: httpx.Response, program: str, field: str | None = None) -> None:
    """A non-200 answer as an error: 400 is the caller's (InvalidInput, about ``field`` when the caller knows
    which part of the request a server can refuse), anything else the server's."""
    if response.status_code != 200:
        body = (await response.aread()).decode(errors="replace")[:300]
        if response.status_code == 400:
            raise InvalidInput(f"{program} answered 400: {body}", field=field)
        raise Unavailable(f"{program} answered {response.status_code}: {body}")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def trained_context(model_dir: Path) -> int:
    return int(_read_json(model_dir / "config.json").get("max_position_embeddings") or 2048)
