"""``POST /v1/chat/completions`` (thin: the work is in ``serving.py``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from emotune.services.gateway.auth import CallerDep
from emotune.services.gateway.chat.protocol import ChatCompletionRequest
from emotune.services.gateway.chat.serving import ChatServing
from emotune.services.gateway.context import Context

router = APIRouter(prefix="/v1/chat", tags=["chat"])


def _serving(context: Context) -> ChatServing:
    return ChatServing(context)


Serving = Annotated[ChatServing, Depends(_serving)]


@router.post("/completions", response_model=None)
async def create_chat_completion(body: ChatCompletionRequest, request: Request, serving: Serving,
                                 caller: CallerDep) -> Response:
    return await serving.create(body, request, caller)
