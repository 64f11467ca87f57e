"""Assemble the inference service from settings, preload its models, free its engines (used by ``__main__``, the
tests and the benchmark); its gRPC transport is ``server.add_servicers``."""

from __future__ import annotations

from emotune.data.styles import load_styles
from emotune.logging import get_logger
from emotune.services.inference.admission import Admission
from emotune.services.inference.config import InferenceSettings
from emotune.services.inference.engines import create_engine
from emotune.services.inference.registry import LoadSpec, ModelRegistry
from emotune.services.inference.service import InferenceService, Limits
from emotune.store.base import ArtifactStore

log = get_logger(__name__)


def build_service(settings: InferenceSettings, store: ArtifactStore) -> InferenceService:
    """The CPU engine is always available; the configured default engine (e.g. LMDeploy on GPU) is added."""
    names = dict.fromkeys([settings.inference_engine, "transformers"])
    engines = {name: create_engine(name, settings) for name in names}
    registry = ModelRegistry(store, engines, settings.inference_engine, settings.served_dir, settings.cache_dir,
                             max_fine_tunes=settings.inference_max_fine_tunes,
                             recheck_seconds=settings.inference_published_recheck_seconds)
    admission = Admission(settings.inference_max_concurrency, settings.inference_max_queue)
    limits = Limits(settings.inference_default_max_tokens, settings.inference_max_tokens_limit)
    return InferenceService(registry, admission, limits)


async def preload(service: InferenceService, settings: InferenceSettings) -> None:
    """Load the configured base models, with the styles file's serving triggers attached."""
    styles: tuple[tuple[str, str], ...] = ()
    if settings.inference_preload_styles:
        document = load_styles(settings.inference_preload_styles)
        styles = tuple((style.name, style.serving_prompt) for style in document.styles)
    for name in settings.preload_models:
        await service.registry.load(LoadSpec(base_model=name, styles=styles))


def shutdown(service: InferenceService) -> None:
    service.registry.close()
    for engine in service.registry.engines.values():
        engine.shutdown()
