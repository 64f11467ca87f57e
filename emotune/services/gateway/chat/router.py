"""``POST /v1/chat/completions`` (thin: the work is in ``serving.py``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from emotune.services.gateway.auth import CallerDep
from emotune.services.gateway.chat.protocol import ChatCompletionRequest
from emotune.services.gateway.chat.serving import ChatServing
from emotune.services.gateway.context import Context

router = APIRouter(prefix="/v1/chat", tags=["chat"])


@router.post("/completions", response_model=None)
async def create_chat_completion(body: ChatCompletionRequest, request: Request, context: Context,
                                 caller: CallerDep) -> Response:
    return await ChatServing(context).create(body, request, caller)
