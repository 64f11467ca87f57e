"""LMDeploy engine (GPU image only): TurboMind for merged models, the PyTorch engine for base + LoRA adapter.

Kept thin on purpose. LMDeploy is imported lazily: it pins its own torch and needs CUDA, so it lives in its
own image (the ``inference-gpu`` target of docker/Dockerfile). The chat template is always passed explicitly,
never guessed from the model's name (seed 000's ``'NoneType' object is not subscriptable`` and seed 004's
run-on replies came from that): the exported ``lmdeploy_chat_template.json`` (written by
``emotune.models.chat_template.export_chat_files``) when there is one, else LMDeploy's ``hf`` template bound to the
model's own ``tokenizer_config.json``. Stop ids are the template's end token and the declared eos ids, as in
the CPU engine. An adapter is checked (:func:`emotune.models.adapter_check.check_adapter`) before LMDeploy starts: one it
cannot serve fails the load naming what to change, and TurboMind's merged-only limit is logged as a warning.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotune.errors import CorruptArtifact, FailedPrecondition
from emotune.logging import get_logger
from emotune.models.adapter_check import check_adapter, raise_for_problems
from emotune.models.chat_template import LMDEPLOY_FILE, ChatFormat
from emotune.services.inference.config import InferenceSettings
from emotune.services.inference.engines.base import (
    ChatParams,
    Chunk,
    Engine,
    Generation,
    ModelSource,
    PreparedChat,
    QueuedGeneration,
    ServingModel,
)

log = get_logger(__name__)

ADAPTER_NAME = "emotune"
_FINISH = {"stop": "stop", "length": "length", "abort": "cancelled"}
_session_ids = itertools.count(1)


def chat_template_config(template_dir: Path) -> Any:
    """The explicit LMDeploy ``ChatTemplateConfig`` for an exported model directory."""
    from lmdeploy import ChatTemplateConfig

    exported = template_dir / LMDEPLOY_FILE
    if exported.is_file():
        return ChatTemplateConfig.from_json(str(exported))
    return ChatTemplateConfig(model_name="hf", model_path=str(template_dir))


def lmdeploy_messages(chat_format: ChatFormat, template_dir: Path,
                      messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Messages as LMDeploy must receive them: normalised like training, and a system message folded into the
    first turn for templates without a system turn (Gemma), which the JSON form cannot express."""
    normalized = chat_format.normalize(messages)
    return chat_format.fold_system(normalized) if (template_dir / LMDEPLOY_FILE).is_file() else normalized


class LMDeployPrompts:
    """The prompt tokens LMDeploy builds for a conversation (its own template and tokenizer code), to check
    them against the CPU engine's and the trainer's."""

    def __init__(self, template_dir: Path) -> None:
        from lmdeploy.tokenizer import Tokenizer

        self.template_dir = template_dir
        self.template = chat_template_config(template_dir).chat_template()
        self.tokenizer = Tokenizer(str(template_dir))
        self.chat_format = ChatFormat.from_pretrained(template_dir)

    def ids(self, messages: list[dict[str, str]]) -> list[int]:
        prepared = lmdeploy_messages(self.chat_format, self.template_dir, messages)
        return self.tokenizer.encode(self.template.messages2prompt(prepared), add_bos=True)


class _TaskGeneration(QueuedGeneration):
    def __init__(self, produce: Callable[[asyncio.Queue[Chunk | BaseException]], Any],
                 on_finished: Callable[[], None]) -> None:
        self.queue: asyncio.Queue[Chunk | BaseException] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(produce(self.queue))
        self._task.add_done_callback(lambda _: on_finished())

    def cancel(self) -> None:
        self._task.get_loop().call_soon_threadsafe(self._task.cancel)


@dataclass
class LMDeployModel(ServingModel):
    async_engine: Any = field(default=None, repr=False)
    chat_format: ChatFormat = field(default=None, repr=False)  # type: ignore[assignment]
    template_dir: Path = Path()
    adapter_name: str | None = None

    def prepare(self, messages: list[dict[str, str]], params: ChatParams) -> PreparedChat:
        return PreparedChat(lmdeploy_messages(self.chat_format, self.template_dir, messages), params)

    def start(self, chat: PreparedChat, on_finished: Callable[[], None]) -> Generation:
        from lmdeploy import GenerationConfig

        messages, params = chat.messages, chat.params
        temperature = params.temperature if params.temperature is not None else self.defaults["temperature"]
        config = GenerationConfig(
            max_new_tokens=params.max_tokens, do_sample=temperature > 0, temperature=temperature or 1.0,
            top_p=params.top_p if params.top_p is not None else self.defaults["top_p"],
            top_k=int(self.defaults.get("top_k", 0)),
            repetition_penalty=self.defaults.get("repetition_penalty", 1.0),
            random_seed=params.seed, stop_words=list(params.stop) or None,
            stop_token_ids=list(self.eos_token_ids), skip_special_tokens=True,
        )

        async def produce(queue: asyncio.Queue[Chunk | BaseException]) -> None:
            try:
                request = await self.async_engine.preprocess(messages, next(_session_ids), gen_config=config,
                                                             adapter_name=self.adapter_name)
                async with aclosing(self.async_engine.generate(request, stream_response=True)) as outputs:
                    async for out in outputs:
                        if out.finish_reason:
                            queue.put_nowait(Chunk(out.response, _FINISH.get(out.finish_reason, "stop"),
                                                   out.input_token_len, out.generate_token_len))
                            return
                        if out.response:
                            queue.put_nowait(Chunk(out.response))
            except Exception as exc:  # noqa: BLE001 - re-raised by the reader
                queue.put_nowait(exc)

        return _TaskGeneration(produce, on_finished)

    def close(self) -> None:
        self.async_engine.close()


class LMDeployEngine(Engine):
    name = "lmdeploy"

    def __init__(self, settings: InferenceSettings | None = None) -> None:
        try:
            import lmdeploy  # noqa: F401
        except ImportError as exc:
            raise FailedPrecondition("the lmdeploy engine runs only in the inference-gpu image "
                                     f"(docker/Dockerfile): {exc}") from None
        self.settings = settings or InferenceSettings()
        self.backend = self.settings.inference_lmdeploy_backend

    def check(self, adapter_dir: Path) -> None:
        """Refuse an adapter LMDeploy cannot serve before it loads the base (naming what to change); log what it
        serves otherwise than asked (TurboMind: merged models only)."""
        problems = check_adapter(adapter_dir, self.name, self.settings)
        raise_for_problems(problems, adapter_dir, self.name)
        for problem in problems:
            log.warning("adapter check", adapter=str(adapter_dir), problem=problem.code, detail=problem.message)

    def load(self, source: ModelSource) -> LMDeployModel:
        if source.adapter_dir is not None:
            self.check(source.adapter_dir)
        import torch
        from lmdeploy import PytorchEngineConfig, TurbomindEngineConfig
        from lmdeploy.serve.core import AsyncEngine

        if source.adapter_dir is not None:  # TurboMind has no LoRA: adapters need the PyTorch engine
            backend, config = "pytorch", PytorchEngineConfig(adapters={ADAPTER_NAME: str(source.adapter_dir)})
        else:
            backend = self.backend
            config = TurbomindEngineConfig() if backend == "turbomind" else PytorchEngineConfig()
        before = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
        try:
            engine = AsyncEngine(model_path=str(source.model_dir), backend=backend, backend_config=config,
                                 chat_template_config=chat_template_config(source.template_dir))
        except Exception as exc:
            raise CorruptArtifact(f"LMDeploy cannot load {source.model_dir}: {exc}") from exc
        chat_format = ChatFormat.from_pretrained(source.template_dir)
        memory = (torch.cuda.memory_allocated() - before) if torch.cuda.is_available() else 0
        return LMDeployModel(
            engine=self.name, memory_bytes=max(memory, 0), eos_token_ids=tuple(chat_format.stop_token_ids),
            max_context=engine.session_len, defaults=source.sampling(), async_engine=engine,
            chat_format=chat_format, template_dir=source.template_dir,
            adapter_name=ADAPTER_NAME if source.adapter_dir is not None else None,
        )
