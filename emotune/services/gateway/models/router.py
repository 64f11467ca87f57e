"""``GET /v1/models``, ``GET`` / ``DELETE /v1/models/{model}`` and the GGUF download (thin: the work is in
``serving.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from emotune.services.gateway.auth import CallerDep
from emotune.services.gateway.context import Context
from emotune.services.gateway.models.protocol import ModelCard, ModelDeleted, ModelList
from emotune.services.gateway.models.serving import ModelsServing

router = APIRouter(prefix="/v1/models", tags=["models"])


def _serving(context: Context, request: Request, caller: CallerDep) -> ModelsServing:
    """Base models are everyone's; a fine-tune is only its project's (another project's answers 404)."""
    return ModelsServing(context.inference, getattr(request.app.state, "model_store", None), context.models, caller)


Serving = Annotated[ModelsServing, Depends(_serving)]


@router.get("", response_model=ModelList, response_model_exclude_none=True)
async def list_models(serving: Serving) -> ModelList:
    return await serving.list()


@router.get("/{model_id:path}/gguf/{name}", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
async def download_gguf(model_id: str, name: str, serving: Serving) -> StreamingResponse:
    """A file of the model's GGUF export (``model.gguf``, ``adapter.gguf``, ``Modelfile``), streamed."""
    size, chunks = await serving.gguf_file(model_id, name)
    return StreamingResponse(chunks, media_type="application/octet-stream", headers={
        "Content-Length": str(size), "Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/{model_id:path}", response_model=ModelCard, response_model_exclude_none=True)
async def retrieve_model(model_id: str, serving: Serving) -> ModelCard:
    return await serving.retrieve(model_id)


@router.delete("/{model_id:path}", response_model=ModelDeleted)
async def delete_model(model_id: str, serving: Serving, delete_artifacts: bool = False) -> ModelDeleted:
    """Stop serving a fine-tune on every replica (OpenAI's delete); its artifacts are kept unless
    ``delete_artifacts=true``."""
    return await serving.delete(model_id, delete_artifacts)
