"""``/v1/fine_tuning/jobs`` routes (thin: each is one call to the pipeline service, in ``serving.py``, which keeps
every project to its own jobs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response

from emotune.fine_tuning.protocol import CreateFineTuningJob, FineTuningJob, ListPage
from emotune.services.gateway.auth import CallerDep
from emotune.services.gateway.fine_tuning.serving import FineTuningClient

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])


def _serving(request: Request) -> FineTuningClient:
    """Built once by this feature's lifespan (``fine_tuning/__init__.py``)."""
    return request.app.state.fine_tuning


Serving = Annotated[FineTuningClient, Depends(_serving)]


@router.post("", response_model=FineTuningJob)
async def create(serving: Serving, caller: CallerDep, body: CreateFineTuningJob,
                 idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None) -> FineTuningJob:
    return await serving.create(caller, body, idempotency_key)


@router.get("", response_model=ListPage)
async def list_jobs(serving: Serving, caller: CallerDep, after: str | None = None,
                    limit: int = Query(20, ge=1, le=100)) -> ListPage:
    return await serving.list(caller, after, limit)


@router.get("/{job_id}", response_model=FineTuningJob)
async def retrieve(serving: Serving, caller: CallerDep, job_id: str) -> FineTuningJob:
    return await serving.retrieve(caller, job_id)


@router.post("/{job_id}/cancel", response_model=FineTuningJob)
async def cancel(serving: Serving, caller: CallerDep, job_id: str) -> FineTuningJob:
    return await serving.cancel(caller, job_id)


@router.get("/{job_id}/events", response_model=ListPage)
async def events(serving: Serving, caller: CallerDep, job_id: str, after: str | None = None,
                 limit: int = Query(20, ge=1, le=1000)) -> ListPage:
    return await serving.events(caller, job_id, after, limit)


@router.get("/{job_id}/checkpoints", response_model=ListPage)
async def checkpoints(serving: Serving, caller: CallerDep, job_id: str,
                      limit: int = Query(10, ge=1, le=100)) -> ListPage:
    return await serving.checkpoints(caller, job_id, limit)


@router.get("/{job_id}/report")
async def report(serving: Serving, caller: CallerDep, job_id: str) -> dict:
    return await serving.report(caller, job_id)


@router.get("/{job_id}/plots/{name}.png")
async def plot(serving: Serving, caller: CallerDep, job_id: str, name: str) -> Response:
    return Response(await serving.plot(caller, job_id, name), media_type="image/png")
