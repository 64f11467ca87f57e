"""``/v1/files`` routes (thin: the work is in :mod:`emotune.store.files`). A file belongs to the caller's project: other
projects' files are not listed and answer 404, as OpenAI does; an admin key sees every project's."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from emotune.fine_tuning.protocol import ListPage
from emotune.services.gateway.auth import CallerDep
from emotune.store.files import FileObject, FileService

router = APIRouter(prefix="/v1/files", tags=["files"])


def _serving(request: Request) -> FileService:
    """Built once by this feature's lifespan (``files/__init__.py``)."""
    return request.app.state.files


Serving = Annotated[FileService, Depends(_serving)]


@router.post("", response_model=FileObject)
async def upload(serving: Serving, caller: CallerDep, file: Annotated[UploadFile, File()],
                 purpose: Annotated[str, Form()]) -> FileObject:
    """The multipart parser spooled the file to a temporary file (on disk beyond 1 MiB); it is checked and streamed
    to the store from there, never read into the request's memory as a whole body."""
    return await asyncio.to_thread(serving.upload, file.filename or "upload", purpose, file.file, caller.project)


@router.get("", response_model=ListPage)
async def list_files(serving: Serving, caller: CallerDep, purpose: str | None = None, after: str | None = None,
                     limit: int = Query(10000, ge=1, le=10000)) -> ListPage:
    """OpenAI's listing, newest first: ``after`` a file id, ``limit`` files a page (OpenAI's default and maximum,
    10000); only that page is read from the store."""
    files, more = await asyncio.to_thread(serving.page, purpose, after, limit, caller.scope)
    return ListPage(data=files, has_more=more)


@router.get("/{file_id}", response_model=FileObject)
async def retrieve(serving: Serving, caller: CallerDep, file_id: str) -> FileObject:
    return await asyncio.to_thread(serving.get, file_id, caller.scope)


@router.get("/{file_id}/content")
async def content(serving: Serving, caller: CallerDep, file_id: str) -> Response:
    return Response(await asyncio.to_thread(serving.content, file_id, caller.scope),
                    media_type="application/octet-stream")


@router.delete("/{file_id}")
async def delete(serving: Serving, caller: CallerDep, file_id: str) -> dict:
    await asyncio.to_thread(serving.delete, file_id, caller.scope)
    return {"id": file_id, "object": "file", "deleted": True}
