"""Which models are served: loads them from the artifact store (merged model, or base + LoRA adapter) or from
the packaged offline base models, and resolves request names ``<model>`` / ``<model>:<style>``.

A load that fails (missing artifact, checksum mismatch, unloadable weights) raises a clear error and leaves the
registry exactly as it was: the service keeps serving what it had.

Published fine-tunes (``emotune.services.inference.published``) are the deployment's, not this process's: a request that
names one loads it here on first use (concurrent requests wait for the same load), at most ``max_fine_tunes`` stay
loaded (least recently used evicted), and each is rechecked against its record every ``recheck_seconds`` so a
model forgotten through any replica stops answering on all of them.
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from emotune.errors import CorruptArtifact, InvalidInput, NotFound, PermissionDenied
from emotune.logging import get_logger
from emotune.models.basemodels import packaged_gguf, resolve_base_model
from emotune.services.inference import metrics, published
from emotune.services.inference.engines.base import Engine, ModelSource, ServingModel
from emotune.services.inference.published import PublishedModel
from emotune.store.artifacts import delete_artifact
from emotune.store.base import ArtifactStore

log = get_logger(__name__)

# No ':' (it separates the style) and nothing a URL or a shell would trip over.
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,127}$")
STYLE_NAME = re.compile(r"^[^\s:/]{1,64}$")


@dataclass(frozen=True)
class LoadSpec:
    """What to serve. ``artifact`` (merged or base model) wins over ``base_model`` (packaged name or local dir);
    ``adapter_artifact`` is a PEFT adapter applied on top; ``style_adapters`` (style -> adapter artifact) serve a
    style named ``<model>:<style>`` with its own adapter (a fine-tune with one adapter per style)."""

    model_id: str = ""
    artifact: str = ""
    adapter_artifact: str = ""
    base_model: str = ""
    engine: str = ""
    styles: tuple[tuple[str, str], ...] = ()
    style_adapters: tuple[tuple[str, str], ...] = ()

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
        for i, (style, _adapter) in enumerate(self.style_adapters):
            if style not in seen:
                raise InvalidInput(f"style {style!r} has an adapter but no system prompt (styles: "
                                   f"{', '.join(seen) or 'none'})", field=f"styles[{i}].adapter_artifact")
        return LoadSpec(model_id, self.artifact, self.adapter_artifact, self.base_model, self.engine, self.styles,
                        self.style_adapters)

    @classmethod
    def of(cls, record: PublishedModel) -> LoadSpec:
        return cls(record.id, record.artifact, record.adapter_artifact, record.base_model, record.engine,
                   tuple((style, prompt) for style, prompt in record.styles), tuple(record.style_adapters.items()))

    def record(self, digests: dict[str, str]) -> PublishedModel:
        return PublishedModel(id=self.model_id, base_model=self.base_model, artifact=self.artifact,
                              adapter_artifact=self.adapter_artifact, engine=self.engine,
                              styles=list(self.styles), style_adapters=dict(self.style_adapters),
                              digests=digests)


@dataclass
class ServedModel:
    id: str
    spec: LoadSpec
    model: ServingModel
    created_at: int = field(default_factory=lambda: int(time.time()))
    # Directories downloaded for this model (removed when it is unloaded or replaced).
    owned_dirs: tuple[Path, ...] = ()
    published: bool = False
    # style -> the model serving it, where the style has its own adapter.
    style_models: dict[str, ServingModel] = field(default_factory=dict)

    @property
    def styles(self) -> dict[str, str]:
        return dict(self.spec.styles)

    def serving(self, style: str | None) -> ServingModel:
        return self.style_models.get(style, self.model) if style else self.model


def apply_style(messages: list[dict[str, str]], style_prompt: str) -> list[dict[str, str]]:
    """The style's serving prompt becomes the system message; a caller's own system message follows it."""
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{style_prompt}\n\n{messages[0]['content']}"}, *messages[1:]]
    return [{"role": "system", "content": style_prompt}, *messages]


class ModelRegistry:
    def __init__(self, store: ArtifactStore, engines: dict[str, Engine], default_engine: str,
                 served_dir: Path, cache_dir: Path, max_fine_tunes: int = 8, recheck_seconds: float = 2.0) -> None:
        self.store, self.engines, self.default_engine = store, engines, default_engine
        self.served_dir, self.cache_dir = served_dir, cache_dir
        self.max_fine_tunes, self.recheck_seconds = max_fine_tunes, recheck_seconds
        self._models: dict[str, ServedModel] = {}
        self._load_lock = asyncio.Lock()
        # Published models loaded here: id -> when its record was last checked, least recently used first.
        self._checked: OrderedDict[str, float] = OrderedDict()
        # Ids found to have no record, and when (so unknown names do not read the store on every request).
        self._absent: dict[str, float] = {}
        self._loading: dict[str, asyncio.Task[ServedModel]] = {}

    def list(self) -> list[ServedModel]:
        return sorted(self._models.values(), key=lambda m: m.id)

    async def listing(self) -> tuple[list[ServedModel], list[PublishedModel]]:
        """What this deployment serves: the models loaded here, and the published ones not loaded here."""
        records = {r.id: r for r in await asyncio.to_thread(published.list_published, self.store)}
        loaded = [m for m in self.list() if not m.published or m.id in records]
        return loaded, [r for r in records.values() if r.id not in self._models]

    async def resolve(self, name: str) -> tuple[ServedModel, str | None, ServingModel]:
        """``<model>`` or ``<model>:<style>`` -> the served model, the style's system prompt (if any) and what
        generates (the style's own adapter where it has one)."""
        model_id, _, style = name.partition(":")
        served = await self._served(model_id, name)
        if not style:
            return served, None, served.model
        prompt = served.styles.get(style)
        if prompt is None:
            raise NotFound(f"model {model_id!r} has no style {style!r} (styles: "
                           f"{', '.join(served.styles) or 'none'})", model=name)
        return served, prompt, served.serving(style)

    async def _served(self, model_id: str, name: str) -> ServedModel:
        served = self._models.get(model_id)
        if served is not None and not served.published:
            return served
        now = time.monotonic()
        if served is not None and now - self._checked[model_id] < self.recheck_seconds:
            self._checked.move_to_end(model_id)
            return served
        if served is None and now - self._absent.get(model_id, -math.inf) < self.recheck_seconds:
            raise self._not_served(model_id, name)
        record = await asyncio.to_thread(published.read, self.store, model_id)
        if record is None:
            self._absent[model_id] = now
            if served is not None:  # forgotten through another replica
                await self.unload(model_id)
            raise self._not_served(model_id, name)
        self._absent.pop(model_id, None)
        if served is not None and LoadSpec.of(record) == served.spec and record.created_at == served.created_at:
            self._checked[model_id] = now
            self._checked.move_to_end(model_id)
            return served
        return await self._load_published(record)

    def _not_served(self, model_id: str, name: str) -> NotFound:
        known = ", ".join(self._models) or "none"
        return NotFound(f"model {model_id!r} is not served (loaded here: {known}; published: none by that "
                        "name)", model=name)

    async def _load_published(self, record: PublishedModel) -> ServedModel:
        """One load per record however many requests wait for it; a waiting request that goes away does not
        cancel the load the others wait for."""
        task = self._loading.get(record.id)
        if task is None:
            task = asyncio.create_task(self._load_record(record))
            self._loading[record.id] = task
            task.add_done_callback(lambda _: self._loading.pop(record.id, None))
        return await asyncio.shield(task)

    async def _load_record(self, record: PublishedModel) -> ServedModel:
        started = time.monotonic()
        try:
            await asyncio.to_thread(published.check_digests, self.store, record)
            served = await self.load(LoadSpec.of(record), published_at=record.created_at)
        except NotFound as exc:
            raise CorruptArtifact(f"published model {record.id!r} cannot be loaded: {exc.message}") from None
        metrics.ON_DEMAND_LOADS.observe(time.monotonic() - started)
        while len(self._checked) > self.max_fine_tunes:
            evicted = next(iter(self._checked))
            log.info("published model evicted (least recently used)", model=evicted, limit=self.max_fine_tunes)
            await self.unload(evicted)
        return served

    async def load(self, spec: LoadSpec, *, publish: bool = False, published_at: int | None = None) -> ServedModel:
        """Load (or replace) ``spec``. ``publish``: record it in the store's served set once it loaded, so every
        replica serves it; ``published_at``: it is being loaded from its record."""
        spec = spec.validated()
        engine_name = spec.engine or self.default_engine
        engine = self.engines.get(engine_name)
        if engine is None:
            raise InvalidInput(f"engine {engine_name!r} is not available here (available: "
                               f"{', '.join(self.engines)})", field="engine")
        async with self._load_lock:
            owned: list[Path] = []
            loaded: list[ServingModel] = []
            try:
                source = await asyncio.to_thread(self._materialize, spec, owned)
                started = time.monotonic()
                model = await asyncio.to_thread(engine.load, source)
                loaded.append(model)
                style_models: dict[str, ServingModel] = {}
                for style, key in spec.style_adapters:
                    if key == spec.adapter_artifact:
                        style_models[style] = model
                        continue
                    adapter = await asyncio.to_thread(self._download, key, owned)
                    style_models[style] = await asyncio.to_thread(
                        engine.load, ModelSource(source.model_dir, adapter, source.gguf_file))
                    loaded.append(style_models[style])
            except BaseException:
                for each in loaded:
                    each.close()
                for path in owned:
                    shutil.rmtree(path, ignore_errors=True)
                raise
            served = ServedModel(spec.model_id, spec, model, owned_dirs=tuple(owned),
                                 published=publish or published_at is not None, style_models=style_models)
            if publish:
                try:
                    record = await asyncio.to_thread(self._publish, spec)
                except BaseException:
                    self._dispose(served)
                    raise
                served.created_at = record.created_at
            elif published_at is not None:
                served.created_at = published_at
            previous = self._models.get(spec.model_id)
            self._models[spec.model_id] = served
            self._checked.pop(spec.model_id, None)
            if served.published:
                self._checked[spec.model_id] = time.monotonic()
            self._absent.pop(spec.model_id, None)
            if previous is not None:
                self._dispose(previous)
            metrics.LOADED_MODELS.set(len(self._models))
            metrics.MODEL_MEMORY.labels(spec.model_id).set(model.memory_bytes)
            log.info("model loaded", model=spec.model_id, engine=engine_name, artifact=spec.artifact,
                     base_model=spec.base_model, adapter=spec.adapter_artifact, styles=len(spec.styles),
                     style_adapters=len(spec.style_adapters),
                     published=served.published, seconds=round(time.monotonic() - started, 2),
                     memory_mb=model.memory_bytes // 2**20)
            return served

    def _publish(self, spec: LoadSpec) -> PublishedModel:
        record = spec.record({})
        record.digests = published.artifact_digests(self.store, record.artifacts)
        published.publish(self.store, record)
        return record

    async def unload(self, model_id: str, *, forget: bool = False, delete_artifacts: bool = False) -> bool:
        """Stop serving ``model_id`` here; ``forget``: also remove it from the served set (every replica stops
        serving it) and, with ``delete_artifacts``, delete the artifacts it was loaded from."""
        if delete_artifacts and not forget:
            raise InvalidInput("deleting the artifacts needs forget: a model still published must keep them",
                               field="delete_artifacts")
        if forget:
            record = await asyncio.to_thread(published.read, self.store, model_id)
            if record is None:
                if model_id in self._models:
                    raise PermissionDenied(f"model {model_id!r} is not a published fine-tune: base models and "
                                           "models loaded by an operator are unloaded, not deleted",
                                           model=model_id)
                return False
            await asyncio.to_thread(published.forget, self.store, model_id)
            if delete_artifacts:
                for key in record.artifacts:
                    await asyncio.to_thread(delete_artifact, self.store, key)
            self._absent[model_id] = time.monotonic()
            log.info("published model forgotten", model=model_id, artifacts_deleted=delete_artifacts)
        async with self._load_lock:
            served = self._models.pop(model_id, None)
            self._checked.pop(model_id, None)
            if served is None:
                return forget
            self._dispose(served)
            metrics.LOADED_MODELS.set(len(self._models))
            metrics.MODEL_MEMORY.remove(model_id)
            log.info("model unloaded", model=model_id)
            return True

    def _dispose(self, served: ServedModel) -> None:
        """Running generations keep their own reference to the weights; new requests no longer see them."""
        for model in {id(m): m for m in (served.model, *served.style_models.values())}.values():
            model.close()
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
