"""The CPU engine: transformers ``generate`` in worker threads, streamed token by token.

- Prompt = the model's own chat template through :class:`emotune.models.chat_template.ChatFormat`, the same
  formatter the trainer trained with (content normalisation, default system prompt, token ids).
- Stops on the template's end token and every eos id of ``generation_config.json``, on request stop strings (cut before the match) and when
  the reader cancels (a ``StoppingCriteria`` polls a flag between tokens, so a dropped client frees the CPU
  after at most one more token).
- Sampling draws from a per-request ``torch.Generator``: the same seed gives the same reply even while other
  generations run in parallel (``torch.manual_seed`` would be shared by every thread).
- Presence / frequency penalties follow OpenAI's definition over the reply's own tokens; the model's own
  ``repetition_penalty`` (generation_config.json, which ``generate`` would apply anyway) is passed explicitly, so
  every engine reads the same number. Log probabilities and JSON-constrained replies are not served here.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.generation.streamers import BaseStreamer

from emotune.errors import CorruptArtifact
from emotune.logging import get_logger
from emotune.models.chat_template import ChatFormat
from emotune.services.inference.engines.base import (
    ChatParams,
    Chunk,
    Engine,
    Generation,
    ModelSource,
    PreparedChat,
    QueuedGeneration,
    TemplatedModel,
)
from emotune.services.inference.textstream import IncrementalDecoder, StopMatcher

log = get_logger(__name__)


class SeededSampler(LogitsProcessor):
    """Temperature + top-k + top-p sampling with its own generator; leaves only the drawn token finite, so the
    greedy step of ``generate`` picks exactly it."""

    def __init__(self, temperature: float, top_p: float, seed: int | None, top_k: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(secrets.randbits(63) if seed is None else seed)
        self.warpers: list[LogitsProcessor] = [TemperatureLogitsWarper(temperature)]
        if top_k > 0:
            self.warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1)
        drawn = torch.multinomial(probs, num_samples=1, generator=self.generator)
        return torch.full_like(scores, float("-inf")).scatter_(1, drawn, 0.0)


class OpenAIPenalties(LogitsProcessor):
    """OpenAI's penalties: a token's logit drops by ``presence`` once it occurs in the reply and by
    ``frequency`` per occurrence (tokens of the prompt do not count)."""

    def __init__(self, prompt_length: int, presence: float, frequency: float) -> None:
        self.prompt_length, self.presence, self.frequency = prompt_length, presence, frequency

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length:]
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence


class _StopWhenSet(StoppingCriteria):
    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        stop = any(event.is_set() for event in self.events)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool)


class _CpuGeneration(QueuedGeneration):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        self.cancelled = threading.Event()
        self._loop = asyncio.get_running_loop()

    def emit(self, item: Chunk | BaseException) -> None:
        """Called from the worker thread."""
        try:
            self._loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (shutdown): nobody is reading any more
            self.cancelled.set()

    def cancel(self) -> None:
        self.cancelled.set()


class _TokenSink(BaseStreamer):
    """Receives token ids from ``generate`` (the prompt first, which is skipped) and emits clean text."""

    def __init__(self, generation: _CpuGeneration, tokenizer: PreTrainedTokenizerBase, stops: tuple[str, ...]):
        self.generation = generation
        self.decoder = IncrementalDecoder(lambda ids: tokenizer.decode(ids, skip_special_tokens=True))
        self.matcher = StopMatcher(stops)
        self.stop_hit = threading.Event()
        self.count = 0
        self.last_token: int | None = None
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        ids = value.reshape(-1).tolist()
        self.count += len(ids)
        self.last_token = ids[-1]
        text = self.matcher.feed(self.decoder.push(ids))
        if self.matcher.stopped:
            self.stop_hit.set()
        if text:
            self.generation.emit(Chunk(text))

    def end(self) -> None:
        """Nothing to flush here: the worker sends the final chunk with counts and finish reason."""


@dataclass
class TransformersModel(TemplatedModel):
    model: PreTrainedModel = field(default=None, repr=False)  # type: ignore[assignment]
    executor: ThreadPoolExecutor = field(default=None, repr=False)  # type: ignore[assignment]
    features: ClassVar[frozenset[str]] = frozenset({"penalties"})

    def start(self, chat: PreparedChat, on_finished: Callable[[], None]) -> Generation:
        generation = _CpuGeneration()
        future = self.executor.submit(self._generate, generation, list(chat.prompt_ids), chat.params)
        future.add_done_callback(lambda _: on_finished())
        return generation

    def _generate(self, generation: _CpuGeneration, input_ids: list[int], params: ChatParams) -> None:
        max_new_tokens = params.max_tokens
        sink = _TokenSink(generation, self.tokenizer, params.stop)
        try:
            temperature = params.temperature if params.temperature is not None else self.defaults["temperature"]
            top_p = params.top_p if params.top_p is not None else self.defaults["top_p"]
            processors = LogitsProcessorList()
            if params.presence_penalty or params.frequency_penalty:
                processors.append(OpenAIPenalties(len(input_ids), params.presence_penalty, params.frequency_penalty))
            if temperature > 0:
                processors.append(SeededSampler(temperature, top_p, params.seed, int(self.defaults.get("top_k", 0))))
            config = GenerationConfig(
                max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                repetition_penalty=self.defaults["repetition_penalty"],
                eos_token_id=list(self.eos_token_ids),
                pad_token_id=self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                else self.eos_token_ids[0],
            )
            inputs = torch.tensor([input_ids], dtype=torch.long)
            with torch.inference_mode():
                self.model.generate(
                    input_ids=inputs, attention_mask=torch.ones_like(inputs), generation_config=config,
                    logits_processor=processors, streamer=sink,
                    stopping_criteria=StoppingCriteriaList([_StopWhenSet(generation.cancelled, sink.stop_hit)]),
                )
            if generation.cancelled.is_set():
                finish = "cancelled"
            elif sink.matcher.stopped or sink.last_token in self.eos_token_ids:
                finish = "stop"
            else:
                finish = "length" if sink.count >= max_new_tokens else "stop"
            generation.emit(Chunk(sink.matcher.flush(), finish, prompt_tokens=len(input_ids),
                                  completion_tokens=sink.count))
        except Exception as exc:
            log.error("generation failed", exc_info=exc)
            generation.emit(exc)


class TransformersEngine(Engine):
    name = "transformers"

    def __init__(self, max_workers: int = 2, torch_threads: int = 0) -> None:
        # Parallel generations must not oversubscribe the cores (an overloaded OpenMP pool is several times
        # slower); the thread count is set per worker thread, so nothing else in the process is affected.
        threads = torch_threads or max(1, (os.cpu_count() or 1) // max_workers)
        self.executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="generate",
                                           initializer=torch.set_num_threads, initargs=(threads,))

    def load(self, source: ModelSource) -> TransformersModel:
        try:
            model = AutoModelForCausalLM.from_pretrained(source.model_dir, dtype=torch.float32)
            if source.adapter_dir is not None:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, source.adapter_dir).merge_and_unload()
        except Exception as exc:  # noqa: BLE001 - any failure to read the files means an unusable artifact
            raise CorruptArtifact(f"cannot load a model from {source.model_dir}"
                                  f"{f' + adapter {source.adapter_dir}' if source.adapter_dir else ''}: {exc}")
        # The template's end token + the eos ids the export declares (raises if there is no chat template).
        chat_format = ChatFormat.from_pretrained(source.template_dir)
        model.eval()
        return TransformersModel(
            engine=self.name, memory_bytes=model.get_memory_footprint(),
            eos_token_ids=tuple(chat_format.stop_token_ids),
            max_context=int(getattr(model.config, "max_position_embeddings", 0) or 2048),
            defaults=source.sampling(),
            model=model, chat_format=chat_format, executor=self.executor,
        )

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
