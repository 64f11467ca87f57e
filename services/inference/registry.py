"""Which models are served: loads them from the artifact store (merged model, or base + LoRA adapter) or from
the packaged offline base models, and resolves request names ``<model>`` / ``<model>:<style>``.

A load that fails (missing artifact, checksum mismatch, unloadable weights) raises a clear error and leaves the
registry exactly as it was: the service keeps serving what it had.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from emotune.basemodels import packaged_gguf, resolve_base_model
from emotune.errors import InvalidInput, NotFound
from emotune.logging import get_logger
from emotune.store.base import ArtifactStore
from services.inference import metrics
from services.inference.engines.base import Engine, ModelSource, ServingModel

log = get_logger(__name__)

# No ':' (it separates the style) and nothing a URL or a shell would trip over.
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,127}$")
STYLE_NAME = re.compile(r"^[^\s:/]{1,64}$")


@dataclass(frozen=True)
class LoadSpec:
    """What to serve. ``artifact`` (merged or base model) wins over ``base_model`` (packaged name or local dir);
    ``adapter_artifact`` is a PEFT adapter applied on top."""

    model_id: str = ""
    artifact: str = ""
    adapter_artifact: str = ""
    base_model: str = ""
    engine: str = ""
    styles: tuple[tuple[str, str], ...] = ()

    def validated(self) -> LoadSpec:
        if not self.artifact and not self.base_model:
            raise InvalidInput("give an artifact key or a base_model name", field="artifact")
        model_id = self.model_id or (self.base_model if not self.artifact else self.artifact.rstrip("/").rsplit("/", 1)[-1])
        if not MODEL_ID.match(model_id):
            raise InvalidInput(f"model id {model_id!r} must match {MODEL_ID.pattern} (no ':', it selects a style)",
                               field="model_id")
        seen: set[str] = set()
        for i, (style, prompt) in enumerate(self.styles):
            if not STYLE_NAME.match(style) or style in seen:
                raise InvalidInput(f"style name {style!r} is empty, repeated or contains ':', '/' or spaces",
                                   field=f"styles[{i}].style")
            if not prompt.strip():
                raise InvalidInput(f"style {style!r} has an empty system prompt", field=f"styles[{i}].system_prompt")
            seen.add(style)
        return LoadSpec(model_id, self.artifact, self.adapter_artifact, self.base_model, self.engine, self.styles)


@dataclass
class ServedModel:
    id: str
    spec: LoadSpec
    model: ServingModel
    created_at: int = field(default_factory=lambda: int(time.time()))
    # Directories downloaded for this model (removed when it is unloaded or replaced).
    owned_dirs: tuple[Path, ...] = ()

    @property
    def styles(self) -> dict[str, str]:
        return dict(self.spec.styles)


def apply_style(messages: list[dict[str, str]], style_prompt: str) -> list[dict[str, str]]:
    """The style's serving prompt becomes the system message; a caller's own system message follows it."""
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{style_prompt}\n\n{messages[0]['content']}"}, *messages[1:]]
    return [{"role": "system", "content": style_prompt}, *messages]


class ModelRegistry:
    def __init__(self, store: ArtifactStore, engines: dict[str, Engine], default_engine: str,
                 served_dir: Path, cache_dir: Path) -> None:
        self.store, self.engines, self.default_engine = store, engines, default_engine
        self.served_dir, self.cache_dir = served_dir, cache_dir
        self._models: dict[str, ServedModel] = {}
        self._load_lock = asyncio.Lock()

    def list(self) -> list[ServedModel]:
        return sorted(self._models.values(), key=lambda m: m.id)

    def resolve(self, name: str) -> tuple[ServedModel, str | None]:
        """``<model>`` or ``<model>:<style>`` -> the served model and the style's system prompt (if any)."""
        model_id, _, style = name.partition(":")
        served = self._models.get(model_id)
        if served is None:
            known = ", ".join(self._models) or "none"
            raise NotFound(f"model {model_id!r} is not served (served: {known})", model=name)
        if not style:
            return served, None
        prompt = served.styles.get(style)
        if prompt is None:
            raise NotFound(f"model {model_id!r} has no style {style!r} (styles: "
                           f"{', '.join(served.styles) or 'none'})", model=name)
        return served, prompt

    async def load(self, spec: LoadSpec) -> ServedModel:
        spec = spec.validated()
        engine_name = spec.engine or self.default_engine
        engine = self.engines.get(engine_name)
        if engine is None:
            raise InvalidInput(f"engine {engine_name!r} is not available here (available: "
                               f"{', '.join(self.engines)})", field="engine")
        async with self._load_lock:
            owned: list[Path] = []
            try:
                source = await asyncio.to_thread(self._materialize, spec, owned)
                started = time.monotonic()
                model = await asyncio.to_thread(engine.load, source)
            except BaseException:
                for path in owned:
                    shutil.rmtree(path, ignore_errors=True)
                raise
            served = ServedModel(spec.model_id, spec, model, owned_dirs=tuple(owned))
            previous = self._models.get(spec.model_id)
            self._models[spec.model_id] = served
            if previous is not None:
                self._dispose(previous)
            metrics.LOADED_MODELS.set(len(self._models))
            metrics.MODEL_MEMORY.labels(spec.model_id).set(model.memory_bytes)
            log.info("model loaded", model=spec.model_id, engine=engine_name, artifact=spec.artifact,
                     base_model=spec.base_model, adapter=spec.adapter_artifact, styles=len(spec.styles),
                     seconds=round(time.monotonic() - started, 2), memory_mb=model.memory_bytes // 2**20)
            return served

    async def unload(self, model_id: str) -> bool:
        async with self._load_lock:
            served = self._models.pop(model_id, None)
            if served is None:
                return False
            self._dispose(served)
            metrics.LOADED_MODELS.set(len(self._models))
            metrics.MODEL_MEMORY.remove(model_id)
            log.info("model unloaded", model=model_id)
            return True

    def _dispose(self, served: ServedModel) -> None:
        """Running generations keep their own reference to the weights; new requests no longer see them."""
        served.model.close()
        for path in served.owned_dirs:
            shutil.rmtree(path, ignore_errors=True)

    def _materialize(self, spec: LoadSpec, owned: list[Path]) -> ModelSource:
        """Local directories for the spec: artifacts are downloaded (sha256-verified) into fresh folders."""
        model_dir = self._download(spec.artifact, owned) if spec.artifact else \
            resolve_base_model(spec.base_model, self.cache_dir)
        adapter_dir = self._download(spec.adapter_artifact, owned) if spec.adapter_artifact else None
        gguf = packaged_gguf(spec.base_model, self.cache_dir) if not spec.artifact else None
        return ModelSource(model_dir, adapter_dir, gguf)

    def _download(self, key: str, owned: list[Path]) -> Path:
        from emotune.store.artifacts import download_artifact

        dest = self.served_dir / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', key.strip('/'))}-{uuid.uuid4().hex[:8]}"
        owned.append(dest)
        return download_artifact(self.store, key, dest)

    def close(self) -> None:
        for served in self._models.values():
            self._dispose(served)
        self._models.clear()
