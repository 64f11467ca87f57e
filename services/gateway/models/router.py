"""``GET /v1/models`` and ``GET /v1/models/{model}`` (thin: the work is in ``serving.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from services.gateway.context import Context
from services.gateway.models.protocol import ModelCard, ModelList
from services.gateway.models.serving import ModelsServing

router = APIRouter(prefix="/v1/models", tags=["models"])


def _serving(context: Context) -> ModelsServing:
    return ModelsServing(context.inference)


Serving = Annotated[ModelsServing, Depends(_serving)]


@router.get("", response_model=ModelList, response_model_exclude_none=True)
async def list_models(serving: Serving) -> ModelList:
    return await serving.list()


@router.get("/{model_id:path}", response_model=ModelCard, response_model_exclude_none=True)
async def retrieve_model(model_id: str, serving: Serving) -> ModelCard:
    return await serving.retrieve(model_id)
