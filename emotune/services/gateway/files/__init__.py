"""``/v1/files``: uploads for fine-tuning (chat JSONL, checked like OpenAI's checker) and styles documents."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from emotune.services.gateway.feature import Feature
from emotune.services.gateway.files.router import router
from emotune.store import open_store
from emotune.store.files import FileService


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = app.state.gateway.settings
    app.state.files = FileService(open_store(settings), max_bytes=settings.gateway_max_upload_bytes)
    yield


feature = Feature(router, lifespan=_lifespan)
