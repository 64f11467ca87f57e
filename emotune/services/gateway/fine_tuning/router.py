"""``/v1/fine_tuning/jobs`` routes (thin: each is one call to the pipeline service, in ``serving.py``, which keeps
every project to its own jobs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response

from emotune.fine_tuning.protocol import CreateFineTuningJob, FineTuningJob, ListPage
from emotune.services.gateway.auth import CallerDep
from emotune.services.gateway.fine_tuning.serving import FineTuningClient

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


def _service(request: Request) -> FineTuningClient:
    return request.app.state.fine_tuning


@router.post("", response_model=FineTuningJob)
async def create(request: Request, caller: CallerDep, body: CreateFineTuningJob,
                 idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None) -> FineTuningJob:
    return await _service(request).create(caller, body, idempotency_key)


@router.get("", response_model=ListPage)
async def list_jobs(request: Request, caller: CallerDep, after: str | None = None,
                    limit: int = Query(20, ge=1, le=100)) -> ListPage:
    return await _service(request).list(caller, after, limit)


@router.get("/{job_id}", response_model=FineTuningJob)
async def retrieve(request: Request, caller: CallerDep, job_id: str) -> FineTuningJob:
    return await _service(request).retrieve(caller, job_id)


@router.post("/{job_id}/cancel", response_model=FineTuningJob)
async def cancel(request: Request, caller: CallerDep, job_id: str) -> FineTuningJob:
    return await _service(request).cancel(caller, job_id)


@router.get("/{job_id}/events", response_model=ListPage)
async def events(request: Request, caller: CallerDep, job_id: str, after: str | None = None,
                 limit: int = Query(20, ge=1, le=1000)) -> ListPage:
    return await _service(request).events(caller, job_id, after, limit)


@router.get("/{job_id}/checkpoints", response_model=ListPage)
async def checkpoints(request: Request, caller: CallerDep, job_id: str,
                      limit: int = Query(10, ge=1, le=100)) -> ListPage:
    return await _service(request).checkpoints(caller, job_id, limit)


@router.get("/{job_id}/report")
async def report(request: Request, caller: CallerDep, job_id: str) -> dict:
    return await _service(request).report(caller, job_id)


@router.get("/{job_id}/plots/{name}.png")
async def plot(request: Request, caller: CallerDep, job_id: str, name: str) -> Response:
    return Response(await _service(request).plot(caller, job_id, name), media_type="image/png")
