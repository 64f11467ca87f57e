from __future__ import annotations

from pathlib import Path

import pytest

from emotune.models.basemodels import packaged_gguf, resolve_base_model
from emotune.services.inference.engines.base import ModelSource, TemplatedModel
from emotune.services.inference.engines.llamacpp import LlamaCppEngine
from emotune.services.inference.engines.transformers_cpu import TransformersEngine
from emotune.settings import Settings


@pytest.fixture(scope="session")
def smollm_dir() -> Path:
    return resolve_base_model("smollm2-135m", Settings().cache_dir)


@pytest.fixture(scope="session")
def gemma_dir() -> Path:
    return resolve_base_model("gemma3-270m", Settings().cache_dir)


@pytest.fixture(scope="module")
def cpu_engine():
    engine = TransformersEngine(max_workers=2)
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def llamacpp_engine():
    engine = LlamaCppEngine(Settings().cache_dir, slots=2, slot_context=2048)
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def smollm_source(smollm_dir: Path) -> ModelSource:
    return ModelSource(smollm_dir, gguf_file=packaged_gguf("smollm2-135m"))


@pytest.fixture(scope="module", params=["transformers", "llamacpp"])
def smollm(request, smollm_source: ModelSource) -> TemplatedModel:
    """SmolLM2 on each CPU engine: the engine tests hold for both."""
    engine = request.getfixturevalue("cpu_engine" if request.param == "transformers" else "llamacpp_engine")
    return engine.load(smollm_source)
