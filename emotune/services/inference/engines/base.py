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
from typing import Any, ClassVar

import jinja2

from emotune.errors import InvalidInput
from emotune.models.chat_template import ChatFormat
from emotune.models.sampling import sampling_defaults

FinishReason = str  # "stop" | "length" | "cancelled"


@dataclass(frozen=True)
class ChatParams:
    """Validated sampling parameters; ``None`` means the model's default."""

    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: bool = False
    top_logprobs: int = 0
    # A JSON Schema the reply must match (constrained decoding); None = free text.
    json_schema: dict[str, Any] | None = None

    def optional_features(self) -> dict[str, str]:
        """The optional engine features this request needs: feature -> the request field asking for it."""
        wanted: dict[str, str] = {}
        if self.logprobs:
            wanted["logprobs"] = "sampling.logprobs"
        if self.json_schema is not None:
            wanted["json_schema"] = "sampling.json_schema"
        if self.presence_penalty or self.frequency_penalty:
            wanted["penalties"] = "sampling.presence_penalty" if self.presence_penalty else \
                "sampling.frequency_penalty"
        return wanted


FEATURE_NAMES = {"logprobs": "logprobs", "json_schema": "JSON-constrained replies (response_format)",
                 "penalties": "presence/frequency penalties"}


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log probability (natural log) and, in ``top``, the likeliest alternatives."""

    token: str
    logprob: float
    bytes: bytes = b""
    top: tuple[TokenLogprob, ...] = ()


@dataclass
class Chunk:
    """A text delta; the last chunk of a generation has ``finish_reason`` and the token counts."""

    text: str = ""
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # With ``ChatParams.logprobs``: the tokens generated since the previous chunk.
    logprobs: list[TokenLogprob] = field(default_factory=list)


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

    def sampling(self) -> dict[str, float]:
        """How to sample it: the base's generation_config.json, then the adapter's on top."""
        return sampling_defaults(self.model_dir, self.adapter_dir)


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
    # Optional features (keys of ``ChatParams.optional_features``) this engine serves; others are refused.
    features: ClassVar[frozenset[str]] = frozenset()

    def refuse_unsupported(self, params: ChatParams) -> None:
        """A request asking for a feature this engine lacks is refused, never served without it."""
        for feature, field_name in params.optional_features().items():
            if feature not in self.features:
                raise InvalidInput(f"the {self.engine} engine serving this model does not support "
                                   f"{FEATURE_NAMES[feature]} (the llamacpp engine does)", field=field_name)

    @abstractmethod
    def prepare(self, messages: list[dict[str, str]], params: ChatParams) -> PreparedChat:
        """Validate and render the conversation (InvalidInput names the field) before the request queues."""

    def prepare_prompt(self, prompt: str, params: ChatParams) -> PreparedChat:
        """Validate a raw text prompt (continued as-is, no chat template) before the request queues."""
        raise InvalidInput(f"the {self.engine} engine serving this model cannot continue a raw prompt; use chat "
                           "messages", field="prompt")

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
        return self._fitted(self.prompt_ids(messages), params, "messages", messages)

    def prepare_prompt(self, prompt: str, params: ChatParams) -> PreparedChat:
        """The text tokenized as-is, after the BOS token where the chat template starts sequences with one
        (Gemma), as in training; not where the tokenizer's own flag says so (a converted GGUF tokenizer can
        claim a BOS the model never saw, e.g. SmolLM2's ``<|im_start|>``)."""
        if not prompt:
            raise InvalidInput("the prompt is empty", field="prompt")
        bos = [self.tokenizer.bos_token_id] if self.chat_format.segments.bos else []
        return self._fitted(bos + self.tokenizer(prompt, add_special_tokens=False)["input_ids"], params, "prompt", [])

    def _fitted(self, input_ids: list[int], params: ChatParams, field_name: str,
                messages: list[dict[str, str]]) -> PreparedChat:
        """Refuse a prompt that fills the context; cap max_tokens to the room left."""
        room = self.max_context - len(input_ids)
        if room <= 0:
            raise InvalidInput(f"the prompt is {len(input_ids)} tokens; the model's context is "
                               f"{self.max_context}", field=field_name)
        return PreparedChat(messages, replace(params, max_tokens=min(params.max_tokens, room)), tuple(input_ids))


class Engine(ABC):
    name: str

    @abstractmethod
    def load(self, source: ModelSource) -> ServingModel:
        """Load (blocking; run it in a thread). Raises CorruptArtifact when the files cannot be loaded."""

    def shutdown(self) -> None:
        """Release engine-wide resources (thread pools, GPU contexts)."""
