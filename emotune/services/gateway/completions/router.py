"""``POST /v1/completions`` (thin: the work is in ``serving.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from emotune.services.gateway.auth import CallerDep
from emotune.services.gateway.completions.protocol import CompletionRequest
from emotune.services.gateway.completions.serving import CompletionServing
from emotune.services.gateway.context import Context

router = APIRouter(prefix="/v1", tags=["completions"])


def _serving(context: Context) -> CompletionServing:
    return CompletionServing(context)


Serving = Annotated[CompletionServing, Depends(_serving)]


@router.post("/completions", response_model=None)
async def create_completion(body: CompletionRequest, request: Request, serving: Serving,
                            caller: CallerDep) -> Response:
    return await serving.create(body, request, caller)
