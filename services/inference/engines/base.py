"""The engine interface: load a model directory (plus an optional LoRA adapter), then stream chat replies.

An engine turns chat messages into prompt tokens with the model's *own* exported chat template and stops on
every eos id of the model's ``generation_config.json``. A started generation is a :class:`Generation`: an async
iterator of :class:`Chunk` whose ``on_finished`` callback fires exactly once, when the generation has really
stopped (not merely when its reader went away), so capacity accounting never leaks.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2

from emotune.chat_template import ChatFormat
from emotune.errors import InvalidInput

FinishReason = str  # "stop" | "length" | "cancelled"


@dataclass(frozen=True)
class ChatParams:
    """Validated sampling parameters; ``None`` means the model's default."""

    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Chunk:
    """A text delta; the last chunk of a generation has ``finish_reason`` and the token counts."""

    text: str = ""
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class PreparedChat:
    """A validated request in the engine's own form (e.g. prompt token ids), ready to start."""

    messages: list[dict[str, str]]
    params: ChatParams
    prompt_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ModelSource:
    """Local directories to load: a full model (base or merged) and optionally a PEFT adapter on top of it."""

    model_dir: Path
    adapter_dir: Path | None = None
    gguf_file: Path | None = None  # the base's own GGUF when it ships as one (packaged models)

    @property
    def template_dir(self) -> Path:
        """Where the chat template used in training lives: the adapter export when it carries a tokenizer."""
        if self.adapter_dir is not None and (self.adapter_dir / "tokenizer_config.json").is_file():
            return self.adapter_dir
        return self.model_dir


class Generation(ABC):
    """A running generation: iterate it for chunks; ``cancel`` asks it to stop (idempotent, any thread)."""

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[Chunk]: ...

    @abstractmethod
    def cancel(self) -> None: ...


class QueuedGeneration(Generation):
    """A generation whose producer puts chunks on ``self.queue`` (an exception ends it with that error)."""

    queue: asyncio.Queue

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Chunk]:
        while True:
            item = await self.queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
            if item.finish_reason:
                return


@dataclass
class ServingModel(ABC):
    engine: str
    memory_bytes: int
    eos_token_ids: tuple[int, ...]
    max_context: int
    defaults: dict[str, float] = field(default_factory=dict)

    @abstractmethod
    def prepare(self, messages: list[dict[str, str]], params: ChatParams) -> PreparedChat:
        """Validate and render the conversation (InvalidInput names the field) before the request queues."""

    @abstractmethod
    def start(self, chat: PreparedChat, on_finished: Callable[[], None]) -> Generation:
        """Begin generating; ``on_finished`` is called once (from any thread) when generation has stopped."""

    def close(self) -> None:
        """Free what the model holds (weights are otherwise dropped with the last reference)."""


@dataclass
class TemplatedModel(ServingModel):
    """A model whose prompt is built by emotune's own formatter (the trainer's), as token ids."""

    chat_format: ChatFormat = field(default=None, repr=False)  # type: ignore[assignment]

    @property
    def tokenizer(self) -> Any:
        return self.chat_format.tokenizer

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """Exactly the ids the trainer's formatter builds for this conversation's generation prompt."""
        try:
            return list(self.chat_format.prompt_ids(messages))
        except jinja2.TemplateError as exc:
            raise InvalidInput(f"the model's chat template rejected the conversation: {exc}",
                               field="messages") from None

    def prepare(self, messages: list[dict[str, str]], params: ChatParams) -> PreparedChat:
        input_ids = self.prompt_ids(messages)
        room = self.max_context - len(input_ids)
        if room <= 0:
            raise InvalidInput(f"the prompt is {len(input_ids)} tokens; the model's context is "
                               f"{self.max_context}", field="messages")
        return PreparedChat(messages, replace(params, max_tokens=min(params.max_tokens, room)), tuple(input_ids))


class Engine(ABC):
    name: str

    @abstractmethod
    def load(self, source: ModelSource) -> ServingModel:
        """Load (blocking; run it in a thread). Raises CorruptArtifact when the files cannot be loaded."""

    def shutdown(self) -> None:
        """Release engine-wide resources (thread pools, GPU contexts)."""
