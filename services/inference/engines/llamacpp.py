"""The llama.cpp engine: ``llama-server`` processes, one per base GGUF, each serving its LoRA adapters.

- One process per base model: every style / fine-tune of that base is a GGUF LoRA adapter of the same process
  (``--lora ... --lora-init-without-apply``), chosen per request (``"lora": [{"id": n, "scale": 1}]``), so they
  share the base's weights in memory. llama-server loads adapters only at start: adding one starts a new process
  with the longer list and retires the old one once its running generations end. A missing or corrupt adapter
  makes the *new* process fail to start, so the old one goes on serving and the load fails with the server's
  own words.
- The prompt is emotune's: the trainer's formatter renders the conversation to token ids and ``/completion``
  gets those ids, so serving reads exactly what training wrote. The server is also given emotune's template
  (``--chat-template-file``) so its own ``/apply-template`` agrees (checked by the parity tests).
- Generation ends on the vocabulary's end-of-generation tokens (llama.cpp), on any other eos id of the model's
  export (seen in the streamed token ids), on stop strings (server-side) and when the caller goes away (the
  HTTP stream is closed, which llama-server takes as cancellation).
- ``--parallel`` is the service's concurrency, so the admission control's slots are the server's slots.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from emotune.chat_template import ChatFormat
from emotune.errors import CorruptArtifact, Unavailable
from emotune.llamacpp import LlamaCpp, LlamaServer, adapter_gguf, base_gguf
from emotune.logging import get_logger
from services.inference.engines.base import (
    Chunk,
    Engine,
    Generation,
    ModelSource,
    PreparedChat,
    QueuedGeneration,
    TemplatedModel,
)

log = get_logger(__name__)

_FINISH = {"eos": "stop", "word": "stop", "limit": "length"}


@dataclass
class BaseProcess:
    """The current server of one base GGUF, the template it was given, and how many served models use it."""

    server: LlamaServer
    template: str
    users: int = 0


class _StreamedGeneration(QueuedGeneration):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self._loop = asyncio.get_running_loop()
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        if self.task is not None:
            self._loop.call_soon_threadsafe(self.task.cancel)


@dataclass
class LlamaCppModel(TemplatedModel):
    base: BaseProcess = field(default=None, repr=False)  # type: ignore[assignment]
    adapter_id: int | None = None
    release: Callable[[], None] = field(default=lambda: None, repr=False)
    revive: Callable[[], None] = field(default=lambda: None, repr=False)
    prompt_cache: bool = False

    def request_body(self, chat: PreparedChat, adapters: int) -> dict[str, Any]:
        params = chat.params
        temperature = params.temperature if params.temperature is not None else self.defaults["temperature"]
        top_p = params.top_p if params.top_p is not None else self.defaults["top_p"]
        # Plain temperature + top-p, as the reference engine samples: llama.cpp's other samplers off.
        return {
            "prompt": list(chat.prompt_ids), "n_predict": params.max_tokens, "stream": True,
            "temperature": temperature, "top_p": top_p, "top_k": 0, "min_p": 0.0, "typical_p": 1.0,
            "repeat_penalty": 1.0, "seed": -1 if params.seed is None else params.seed,
            "stop": list(params.stop), "cache_prompt": self.prompt_cache, "return_tokens": True,
            # Every adapter's scale, explicitly: the slot then knows which adapters its cached prompt was built with.
            "lora": [{"id": i, "scale": 1.0 if i == self.adapter_id else 0.0} for i in range(adapters)],
        }

    def start(self, chat: PreparedChat, on_finished: Callable[[], None]) -> Generation:
        server = self.base.server
        if not server.alive:
            threading.Thread(target=self.revive, name="llama-server-revive", daemon=True).start()
            raise Unavailable(f"llama-server for {server.base_gguf.name} had exited ({server.log_tail()}); it is "
                              "being restarted, retry shortly")
        generation = _StreamedGeneration()
        server.begin()

        def finished(_: asyncio.Task) -> None:
            server.end()
            on_finished()

        generation.task = asyncio.get_running_loop().create_task(self._stream(generation, server, chat))
        generation.task.add_done_callback(finished)
        return generation

    async def _stream(self, generation: _StreamedGeneration, server: LlamaServer, chat: PreparedChat) -> None:
        prompt_tokens, count, finish = len(chat.prompt_ids), 0, "stop"
        end_ids = set(self.eos_token_ids)
        try:
            # A client per generation: a served model outlives event loops (tests, restarts); loopback is cheap.
            # Plain http on loopback: verify=False only skips loading the CA bundle (~33 ms of TTFT otherwise).
            async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5), verify=False) as client, \
                    client.stream("POST", f"{server.url}/completion", json=self.request_body(chat, len(server.adapters))) as response:
                if response.status_code != 200:
                    body = (await response.aread()).decode(errors="replace")
                    raise Unavailable(f"llama-server answered {response.status_code}: {body[:300]}")
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    event = json.loads(line[6:])
                    tokens = event.get("tokens") or []
                    ended = next((i for i, token in enumerate(tokens) if token in end_ids), None)
                    if ended is not None:  # an eos id the vocabulary does not mark as end of generation
                        count += ended + 1
                        break
                    count += len(tokens)
                    if event.get("content"):
                        generation.queue.put_nowait(Chunk(event["content"]))
                    if event.get("stop"):
                        finish = _FINISH.get(event.get("stop_type"), "stop")
                        prompt_tokens = event.get("tokens_evaluated", prompt_tokens)
                        count = event.get("tokens_predicted", count)
                        break
            generation.queue.put_nowait(Chunk("", finish, prompt_tokens=prompt_tokens, completion_tokens=count))
        except asyncio.CancelledError:
            # Leaving the ``stream`` block closed the connection: llama-server stops this slot.
            generation.queue.put_nowait(Chunk("", "cancelled", prompt_tokens=prompt_tokens,
                                              completion_tokens=count))
        except httpx.HTTPError as exc:
            generation.queue.put_nowait(Unavailable(f"llama-server stream failed: {exc!r}; {server.log_tail()}"))
        except Exception as exc:  # the reader gets the error instead of a hang
            log.error("llama.cpp generation failed", exc_info=exc)
            generation.queue.put_nowait(exc)

    def close(self) -> None:
        self.release()


class LlamaCppEngine(Engine):
    name = "llamacpp"

    def __init__(self, cache_dir: Path, slots: int = 2, slot_context: int = 4096, threads: int = 0,
                 tools_dir: Path | None = None, prompt_cache: bool = False) -> None:
        self.tools = LlamaCpp.locate(cache_dir, tools_dir)
        self.cache_dir = Path(cache_dir)
        self.slots, self.slot_context = slots, slot_context
        self.threads, self.prompt_cache = threads, prompt_cache
        self._bases: dict[Path, BaseProcess] = {}
        self._lock = threading.Lock()

    # Loading -------------------------------------------------------------------------------------------
    def load(self, source: ModelSource) -> LlamaCppModel:
        try:
            base = base_gguf(self.tools, self.cache_dir, source.model_dir, source.gguf_file)
            adapter = adapter_gguf(self.tools, self.cache_dir, source.adapter_dir, source.model_dir) \
                if source.adapter_dir is not None else None
        except CorruptArtifact as exc:
            raise CorruptArtifact(f"cannot load a model from {source.model_dir}"
                                  f"{f' + adapter {source.adapter_dir}' if source.adapter_dir else ''}: "
                                  f"{exc.message}") from None
        chat_format = ChatFormat.from_pretrained(source.template_dir)
        with self._lock:
            process = self._bases.get(base)
            if process is None or not process.server.alive or (adapter and adapter not in process.server.adapters):
                adapters = list(process.server.adapters) if process is not None else []
                if adapter is not None and adapter not in adapters:
                    adapters.append(adapter)  # appended: the ids of adapters already served stay the same
                server = self._spawn(base, adapters, chat_format.template)
                if process is None:
                    process = self._bases[base] = BaseProcess(server, chat_format.template)
                else:
                    process.server.retire()
                    process.server = server
            process.users += 1
            adapter_id = process.server.adapters.index(adapter) if adapter is not None else None
        memory = base.stat().st_size + (adapter.stat().st_size if adapter is not None else 0)
        defaults = _sampling_defaults(source.template_dir)
        return LlamaCppModel(
            engine=self.name, memory_bytes=memory, eos_token_ids=tuple(chat_format.stop_token_ids),
            max_context=min(self.slot_context, _trained_context(source.model_dir)), defaults=defaults,
            chat_format=chat_format, base=process, adapter_id=adapter_id,
            release=lambda: self._release(base), revive=lambda: self._revive(base), prompt_cache=self.prompt_cache,
        )

    def _spawn(self, base: Path, adapters: list[Path], template: str) -> LlamaServer:
        server = LlamaServer(self.tools, base, self.cache_dir / "llama-server", adapters, template,
                             self.slots, self.slot_context, self.threads)
        started = time.monotonic()
        server.wait_ready()
        log.info("llama-server ready", base=base.name, adapters=len(adapters), port=server.port,
                 seconds=round(time.monotonic() - started, 2))
        return server

    def _revive(self, base: Path) -> None:
        """Start a new server (same adapters, same ids) for a base whose process died."""
        with self._lock:
            process = self._bases.get(base)
            if process is None or process.server.alive:
                return
            try:
                process.server = self._spawn(base, process.server.adapters, process.template)
            except Exception as exc:  # noqa: BLE001 - logged; the next request tries again
                log.error("llama-server restart failed", base=base.name, error=str(exc))

    def _release(self, base: Path) -> None:
        with self._lock:
            process = self._bases.get(base)
            if process is None:
                return
            process.users -= 1
            if process.users <= 0:
                del self._bases[base]
                process.server.retire()

    def servers(self) -> list[LlamaServer]:
        with self._lock:
            return [process.server for process in self._bases.values()]

    def shutdown(self) -> None:
        with self._lock:
            for process in self._bases.values():
                process.server.stop()
            self._bases.clear()


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _trained_context(model_dir: Path) -> int:
    return int(_read_json(model_dir / "config.json").get("max_position_embeddings") or 2048)


def _sampling_defaults(template_dir: Path) -> dict[str, float]:
    """The export's generation_config.json sampling, as the reference engine reads it (greedy-free: 1.0)."""
    config = _read_json(template_dir / "generation_config.json")
    sampled = bool(config.get("do_sample"))
    return {"temperature": float(config.get("temperature", 1.0) if sampled else 1.0),
            "top_p": float(config.get("top_p", 1.0) if sampled else 1.0)}
