from __future__ import annotations

from pathlib import Path

import pytest

from emotune.basemodels import resolve_base_model
from emotune.settings import Settings
from services.inference.engines.base import ModelSource
from services.inference.engines.transformers_cpu import TransformersEngine, TransformersModel


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
def smollm(cpu_engine: TransformersEngine, smollm_dir: Path) -> TransformersModel:
    return cpu_engine.load(ModelSource(smollm_dir))
