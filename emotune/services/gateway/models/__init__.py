"""``/v1/models``: every served model and, for models with styles, one ``<model>:<style>`` id per style; and the
GGUF export of a fine-tuned model (``/v1/models/{model}/gguf/{file}``: model.gguf, adapter.gguf, Modelfile)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from emotune.services.gateway.feature import Feature
from emotune.services.gateway.models.router import router
from emotune.store import open_store


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.model_store = open_store(app.state.gateway.settings)
    yield


feature = Feature(router, lifespan=_lifespan)
