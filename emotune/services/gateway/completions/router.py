"""``POST /v1/completions`` (thin: the work is in ``serving.py``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from emotune.services.gateway.auth import CallerDep
from emotune.services.gateway.completions.protocol import CompletionRequest
from emotune.services.gateway.completions.serving import CompletionServing
from emotune.services.gateway.context import Context

router = APIRouter(prefix="/v1", tags=["completions"])


@router.post("/completions", response_model=None)
async def create_completion(body: CompletionRequest, request: Request, context: Context,
                            caller: CallerDep) -> Response:
    return await CompletionServing(context).create(body, request, caller)
