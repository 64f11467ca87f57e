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
- Optional features, all llama-server's own: log probabilities (``n_probs``), JSON-constrained replies
  (``json_schema``, turned into a grammar by the server) and OpenAI's presence / frequency penalties.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
from httpx_sse import EventSource

from emotune.errors import CorruptArtifact
from emotune.logging import get_logger
from emotune.models.chat_template import ChatFormat
from emotune.models.llamacpp import LlamaCpp, LlamaServer, adapter_gguf, base_gguf
from emotune.services.inference.engines.base import Chunk, Engine, ModelSource, PreparedChat, TokenLogprob
from emotune.services.inference.engines.served import (
    BaseProcesses,
    Counts,
    ProcessModel,
    refuse_unless_ok,
    trained_context,
)

log = get_logger(__name__)

_FINISH = {"eos": "stop", "word": "stop", "limit": "length"}


def token_logprob(probability: dict[str, Any], top: int) -> TokenLogprob:
    """One entry of llama-server's ``completion_probabilities`` (pre-sampling log probabilities), with at most
    ``top`` alternatives (llama-server sends at least one)."""
    logprob = probability.get("logprob")
    if logprob is None:  # a server started with post-sampling probabilities reports "prob"
        logprob = math.log(probability["prob"]) if probability.get("prob") else -math.inf
    return TokenLogprob(token=probability.get("token", ""), logprob=float(logprob),
                        bytes=bytes(probability.get("bytes") or probability.get("token", "").encode()),
                        top=tuple(token_logprob(alt, 0) for alt in (probability.get("top_logprobs") or ())[:top]))


@dataclass
class LlamaCppModel(ProcessModel):
    adapter_id: int | None = None
    prompt_cache: bool = False
    features: ClassVar[frozenset[str]] = frozenset({"logprobs", "json_schema", "penalties"})

    def request_body(self, chat: PreparedChat, adapters: int) -> dict[str, Any]:
        params = chat.params
        temperature = params.temperature if params.temperature is not None else self.defaults["temperature"]
        top_p = params.top_p if params.top_p is not None else self.defaults["top_p"]
        # Temperature, top-p, the model's top-k and repetition penalty (over the whole context, prompt included, as
        # transformers counts it), as the reference engine samples: llama.cpp's other samplers off.
        body: dict[str, Any] = {
            "prompt": list(chat.prompt_ids), "n_predict": params.max_tokens, "stream": True,
            "temperature": temperature, "top_p": top_p, "top_k": int(self.defaults.get("top_k", 0)), "min_p": 0.0,
            "typical_p": 1.0,
            "repeat_penalty": self.defaults.get("repetition_penalty", 1.0), "repeat_last_n": self.max_context,
            "seed": -1 if params.seed is None else params.seed,
            "stop": list(params.stop), "cache_prompt": self.prompt_cache, "return_tokens": True,
            # Every adapter's scale, explicitly: the slot then knows which adapters its cached prompt was built with.
            "lora": [{"id": i, "scale": 1.0 if i == self.adapter_id else 0.0} for i in range(adapters)],
        }
        if params.presence_penalty or params.frequency_penalty:
            # llama.cpp counts the whole context (repeat_last_n, prompt included), not only the reply.
            body.update(presence_penalty=params.presence_penalty, frequency_penalty=params.frequency_penalty)
        if params.logprobs:  # the chosen token's log probability comes with at least one alternative
            body["n_probs"] = max(1, params.top_logprobs)
        if params.json_schema is not None:
            body["json_schema"] = params.json_schema
        return body

    async def chunks(self, client: httpx.AsyncClient, server: LlamaServer, chat: PreparedChat,
                     counts: Counts) -> AsyncIterator[Chunk]:
        end_ids = set(self.eos_token_ids)
        body = self.request_body(chat, len(server.adapters))
        top = chat.params.top_logprobs
        # Log probabilities ride with the next text (llama-server holds back text that may start a stop string).
        pending: list[TokenLogprob] = []
        async with client.stream("POST", f"{server.url}/completion", json=body) as response:
            # The request is emotune's own but for a JSON schema, which llama-server may not be able to convert.
            await refuse_unless_ok(response, server.program,
                                   "sampling.json_schema" if chat.params.json_schema is not None else None)
            async for sse in EventSource(response).aiter_sse():
                if not sse.data:
                    continue
                event = json.loads(sse.data)
                tokens = event.get("tokens") or []
                ended = next((i for i, token in enumerate(tokens) if token in end_ids), None)
                if ended is not None:  # an eos id the vocabulary does not mark as end of generation
                    counts.completion_tokens += ended + 1
                    return
                counts.completion_tokens += len(tokens)
                pending += [token_logprob(p, top) for p in event.get("completion_probabilities") or ()]
                if event.get("content"):
                    yield Chunk(event["content"], logprobs=pending)
                    pending = []
                if event.get("stop"):
                    if pending:
                        yield Chunk("", logprobs=pending)
                    counts.finish = _FINISH.get(event.get("stop_type"), "stop")
                    counts.prompt_tokens = event.get("tokens_evaluated", counts.prompt_tokens)
                    counts.completion_tokens = event.get("tokens_predicted", counts.completion_tokens)
                    return


class LlamaCppEngine(Engine):
    name = "llamacpp"

    def __init__(self, cache_dir: Path, slots: int = 2, slot_context: int = 4096, threads: int = 0,
                 tools_dir: Path | None = None, prompt_cache: bool = False) -> None:
        self.tools = LlamaCpp.locate(cache_dir, tools_dir)
        self.cache_dir = Path(cache_dir)
        self.slots, self.slot_context = slots, slot_context
        self.threads, self.prompt_cache = threads, prompt_cache
        self.processes: BaseProcesses[Path] = BaseProcesses(self._spawn)

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
        process, _ = self.processes.acquire(base, chat_format.template, adapter, lambda _index: adapter)
        adapter_id = process.server.adapters.index(adapter) if adapter is not None else None
        memory = base.stat().st_size + (adapter.stat().st_size if adapter is not None else 0)
        return LlamaCppModel(
            engine=self.name, memory_bytes=memory, eos_token_ids=tuple(chat_format.stop_token_ids),
            max_context=min(self.slot_context, trained_context(source.model_dir)),
            defaults=source.sampling(), chat_format=chat_format, base=process,
            release=lambda: self.processes.release(base), revive=lambda: self.processes.revive(base),
            adapter_id=adapter_id, prompt_cache=self.prompt_cache,
        )

    def _spawn(self, base: Path, adapters: list[Path], template: str) -> LlamaServer:
        server = LlamaServer(self.tools, base, self.cache_dir / "llama-server", adapters, template,
                             self.slots, self.slot_context, self.threads)
        started = time.monotonic()
        server.wait_ready()
        log.info("llama-server ready", base=base.name, adapters=len(adapters), port=server.port,
                 seconds=round(time.monotonic() - started, 2))
        return server

    def servers(self) -> list[LlamaServer]:
        return self.processes.servers()  # type: ignore[return-value]

    def shutdown(self) -> None:
        self.processes.shutdown()
