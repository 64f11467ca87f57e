"""Operational endpoints without an API key: liveness and readiness. Prometheus ``/metrics`` is not on the API
port: ``python -m emotune.services.gateway`` serves it on its own (``EMOTUNE_METRICS_PORT``, default 9106)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from emotune.services.gateway.context import Context
from emotune.services.gateway.errors import OpenAIError
from emotune.services.gateway.feature import Feature

router = APIRouter(tags=["operations"])
READY_TIMEOUT_SECONDS = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers (liveness): nothing upstream is checked."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(context: Context) -> JSONResponse:
    """Ready when the inference service answers and serves at least one model."""
    try:
        listing = await context.inference.list_models(timeout=READY_TIMEOUT_SECONDS)
    except OpenAIError as exc:
        return JSONResponse({"status": "not_ready", "reason": exc.message}, status_code=503)
    if not listing.models:
        return JSONResponse({"status": "not_ready", "reason": "the inference service serves no model"},
                            status_code=503)
    return JSONResponse({"status": "ready", "models": len(listing.models), "in_flight": listing.in_flight,
                         "auth": "on" if context.api_keys.enabled else "off"})


feature = Feature(router, public=True)
