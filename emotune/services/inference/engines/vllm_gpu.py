"""The vLLM engine (GPU image only): ``vllm serve`` processes, one per base model, each serving its LoRA adapters.

Kept out of process like the llama.cpp engine, and for the same reasons: vLLM pins its own torch and CUDA
stack, so it lives in its own image and is never imported here; this module only needs the ``vllm``
executable on PATH (``load`` raises FailedPrecondition naming it otherwise).

- One process per base model on loopback (vLLM's OpenAI server): every fine-tune of that base is a LoRA module
  of it (``--enable-lora --lora-modules name=path ...``), chosen per request by ``model=<adapter name>``, so
  they share the base weights on the GPU. ``--max-loras`` is the number of adapters and ``--max-lora-rank``
  their largest ``r`` rounded up to a rank vLLM accepts. Adding an adapter starts a new process with the
  longer list and retires the old one once its running generations end (so two processes share the GPU for
  a while: ``EMOTUNE_INFERENCE_VLLM_GPU_MEMORY_UTILIZATION``, default 0.45 each).
- Before anything starts, :func:`emotune.models.adapter_check.check_adapter` reads the adapter's PEFT
  config: a rank above ``EMOTUNE_INFERENCE_VLLM_MAX_LORA_RANK``, ``modules_to_save``, other targets than the
  seven projections or DoRA fail the load with a sentence naming what to change, not after a minute of start-up.
- The prompt is emotune's: the trainer's formatter renders the conversation to token ids and
  ``/v1/completions`` gets those ids as ``prompt``, so vLLM reads exactly what training wrote. The server is
  also given emotune's template (``--chat-template``) so its own ``/v1/chat/completions`` agrees.
- Stops: ``stop_token_ids`` = the template's end token and every eos id of the export, stop strings
  (server-side, never in the output) and cancellation: closing the HTTP stream makes vLLM abort the request.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import EventSource

from emotune.errors import FailedPrecondition, Unavailable
from emotune.logging import get_logger
from emotune.models.adapter_check import adapter_rank, check_adapter, raise_for_problems, vllm_lora_rank
from emotune.models.chat_template import ChatFormat
from emotune.models.server_process import LocalServer
from emotune.services.inference.config import InferenceSettings
from emotune.services.inference.engines.base import Chunk, Engine, ModelSource, PreparedChat
from emotune.services.inference.engines.served import (
    BaseProcesses,
    Counts,
    ProcessModel,
    refuse_unless_ok,
    trained_context,
)

log = get_logger(__name__)

EXECUTABLE = "vllm"
BASE_NAME = "base"  # --served-model-name: requests for the base model itself
_FINISH = {"stop": "stop", "length": "length", "abort": "cancelled"}


@dataclass(frozen=True)
class LoraModule:
    """One adapter of a server: its request name, directory and LoRA rank."""

    name: str
    path: Path
    rank: int


def serve_command(executable: str, model_dir: Path, adapters: Sequence[LoraModule], template_file: Path,
                  port: int, settings: InferenceSettings, served_name: str = BASE_NAME) -> list[str]:
    """The ``vllm serve`` command line for a base model and its adapters (LoRA flags only with adapters)."""
    args = [executable, "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
            "--served-model-name", served_name, "--chat-template", str(template_file),
            "--gpu-memory-utilization", str(settings.inference_vllm_gpu_memory_utilization),
            "--max-num-seqs", str(settings.inference_max_concurrency)]
    if settings.inference_vllm_max_model_len:
        args += ["--max-model-len", str(settings.inference_vllm_max_model_len)]
    if adapters:
        args += ["--enable-lora", "--max-loras", str(len(adapters)),
                 "--max-lora-rank", str(vllm_lora_rank(max(a.rank for a in adapters))),
                 # One flag, every module after it: vLLM's parser keeps only the last --lora-modules given.
                 "--lora-modules", *(f"{a.name}={a.path}" for a in adapters)]
    return args + shlex.split(settings.inference_vllm_extra_args)


def completion_body(model: str, chat: PreparedChat, defaults: dict[str, float],
                    stop_token_ids: Sequence[int]) -> dict[str, Any]:
    """The streamed ``/v1/completions`` request: emotune's prompt ids, plain temperature + top-p sampling."""
    params = chat.params
    temperature = params.temperature if params.temperature is not None else defaults.get("temperature", 1.0)
    top_p = params.top_p if params.top_p is not None else defaults.get("top_p", 1.0)
    body: dict[str, Any] = {
        "model": model, "prompt": list(chat.prompt_ids), "max_tokens": params.max_tokens, "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        # As the reference engine samples: the model's top-k (-1 = off) and repetition penalty, min-p off.
        "temperature": temperature, "top_p": top_p, "top_k": int(defaults.get("top_k") or -1), "min_p": 0.0,
        "repetition_penalty": defaults.get("repetition_penalty", 1.0),
        "stop": list(params.stop), "stop_token_ids": list(stop_token_ids), "include_stop_str_in_output": False,
        "skip_special_tokens": True,
    }
    if params.seed is not None:
        body["seed"] = params.seed
    return body


class CompletionStream:
    """vLLM's server-sent events of a streamed completion, as emotune chunks.

    :meth:`feed` takes one event's data and returns the text chunks in it; :meth:`final` is the closing chunk
    (finish reason and token counts). An error event raises Unavailable with vLLM's message.
    """

    def __init__(self, prompt_tokens: int = 0) -> None:
        self.prompt_tokens, self.completion_tokens = prompt_tokens, 0
        self.finish_reason: str | None = None
        self.done = False

    def feed(self, data: str) -> list[Chunk]:
        if not data:
            return []  # an event without data
        if data == "[DONE]":
            self.done = True
            return []
        event = json.loads(data)
        if "error" in event or event.get("object") == "error":
            error = event.get("error", event)
            message = error.get("message", error) if isinstance(error, dict) else error
            raise Unavailable(f"vLLM stream failed: {message}")
        usage = event.get("usage") or {}
        self.prompt_tokens = int(usage.get("prompt_tokens") or self.prompt_tokens)
        self.completion_tokens = int(usage.get("completion_tokens") or self.completion_tokens)
        chunks = []
        for choice in event.get("choices") or []:
            if choice.get("text"):
                chunks.append(Chunk(choice["text"]))
            if choice.get("finish_reason"):
                self.finish_reason = _FINISH.get(choice["finish_reason"], "stop")
        return chunks

    def final(self) -> Chunk:
        return Chunk("", self.finish_reason or "stop", prompt_tokens=self.prompt_tokens,
                     completion_tokens=self.completion_tokens)


class VllmServer(LocalServer):
    """One ``vllm serve`` process on loopback (see :class:`emotune.models.server_process.LocalServer`)."""

    program = "vllm"
    stop_timeout = 30.0  # vLLM shuts its engine-core processes down on SIGTERM

    def __init__(self, executable: str, model_dir: Path, adapters: Sequence[LoraModule], template: str,
                 work_dir: Path, settings: InferenceSettings) -> None:
        super().__init__(model_dir, adapters)
        work_dir.mkdir(parents=True, exist_ok=True)
        template_file = work_dir / f"chat_template-{self.port}.jinja"
        template_file.write_text(template, encoding="utf-8")
        self._cleanup.append(template_file)
        self.args = serve_command(executable, model_dir, self.adapters, template_file, self.port, settings)
        self.launch(self.args, work_dir / f"vllm-{self.port}.log")


@dataclass
class VllmModel(ProcessModel):
    lora_name: str | None = None

    @property
    def request_model(self) -> str:
        return self.lora_name or BASE_NAME

    def request_body(self, chat: PreparedChat) -> dict[str, Any]:
        return completion_body(self.request_model, chat, self.defaults, self.eos_token_ids)

    async def chunks(self, client: httpx.AsyncClient, server: VllmServer, chat: PreparedChat,
                     counts: Counts) -> AsyncIterator[Chunk]:
        events = CompletionStream(prompt_tokens=counts.prompt_tokens)
        try:
            async with client.stream("POST", f"{server.url}/v1/completions", json=self.request_body(chat)) as response:
                await refuse_unless_ok(response, server.program)
                async for sse in EventSource(response).aiter_sse():
                    for chunk in events.feed(sse.data):
                        yield chunk
                    if events.done:
                        break
            counts.finish = events.final().finish_reason
        finally:
            counts.prompt_tokens, counts.completion_tokens = events.prompt_tokens, events.completion_tokens


class VllmEngine(Engine):
    name = "vllm"

    def __init__(self, settings: InferenceSettings | None = None, executable: str = EXECUTABLE) -> None:
        self.settings = settings or InferenceSettings()
        self.executable = executable
        self.work_dir = self.settings.cache_dir / "vllm-server"
        self.processes: BaseProcesses[LoraModule] = BaseProcesses(self._spawn, key=lambda lora: lora.path)

    def locate(self) -> str:
        found = shutil.which(self.executable)
        if found is None:
            raise FailedPrecondition(f"the vllm engine needs the `{self.executable}` executable (vLLM's OpenAI "
                                     "server), and none is on PATH: it runs only in an image with vLLM installed "
                                     "(pip install vllm)")
        return found

    def load(self, source: ModelSource) -> VllmModel:
        adapter_dir = source.adapter_dir.resolve() if source.adapter_dir is not None else None
        rank = 0
        if adapter_dir is not None:  # before anything starts: vLLM would fail only after loading the base
            raise_for_problems(check_adapter(adapter_dir, self.name, self.settings), adapter_dir, self.name)
            rank = adapter_rank(adapter_dir)
        self.locate()
        chat_format = ChatFormat.from_pretrained(source.template_dir)
        base = source.model_dir.resolve()
        # Appended with the next free name: the names of adapters already served stay the same.
        process, lora = self.processes.acquire(
            base, chat_format.template, adapter_dir,
            lambda index: LoraModule(f"adapter-{index + 1}", adapter_dir, rank))
        return VllmModel(
            engine=self.name, memory_bytes=_weights_bytes(base) + (_weights_bytes(adapter_dir) if adapter_dir else 0),
            eos_token_ids=tuple(chat_format.stop_token_ids),
            max_context=self.settings.inference_vllm_max_model_len or trained_context(base),
            defaults=source.sampling(), chat_format=chat_format, base=process,
            lora_name=lora.name if lora is not None else None,
            release=lambda: self.processes.release(base), revive=lambda: self.processes.revive(base),
        )

    def _spawn(self, base: Path, adapters: list[LoraModule], template: str) -> VllmServer:
        server = VllmServer(self.locate(), base, adapters, template, self.work_dir, self.settings)
        started = time.monotonic()
        server.wait_ready(self.settings.inference_vllm_start_timeout, poll=0.5)
        log.info("vllm ready", base=base.name, adapters=len(adapters), port=server.port,
                 seconds=round(time.monotonic() - started, 2))
        return server

    def servers(self) -> list[VllmServer]:
        return self.processes.servers()  # type: ignore[return-value]

    def shutdown(self) -> None:
        self.processes.shutdown()


def _weights_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for pattern in ("*.safetensors", "*.bin") for path in directory.glob(pattern))
