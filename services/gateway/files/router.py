"""``/v1/files`` routes (thin: the work is in ``service.py``)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from emotune.files import FileObject, FileService
from emotune.fine_tuning.protocol import ListPage

router = APIRouter(prefix="/v1/files", tags=["files"])


def _files(request: Request) -> FileService:
    return request.app.state.files


@router.post("", response_model=FileObject)
async def upload(request: Request, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]) -> FileObject:
    """The multipart parser spooled the file to a temporary file (on disk beyond 1 MiB); it is checked and streamed
    to the store from there, never read into the request's memory as a whole body."""
    return await asyncio.to_thread(_files(request).upload, file.filename or "upload", purpose, file.file)


@router.get("", response_model=ListPage)
async def list_files(request: Request, purpose: str | None = None, after: str | None = None,
                     limit: int = Query(10000, ge=1, le=10000)) -> ListPage:
    """OpenAI's listing, newest first: ``after`` a file id, ``limit`` files a page (OpenAI's default and maximum,
    10000); only that page is read from the store."""
    files, more = await asyncio.to_thread(_files(request).page, purpose, after, limit)
    return ListPage(data=files, has_more=more)


@router.get("/{file_id}", response_model=FileObject)
async def retrieve(request: Request, file_id: str) -> FileObject:
    return await asyncio.to_thread(_files(request).get, file_id)


@router.get("/{file_id}/content")
async def content(request: Request, file_id: str) -> Response:
    return Response(await asyncio.to_thread(_files(request).content, file_id), media_type="application/octet-stream")


@router.delete("/{file_id}")
async def delete(request: Request, file_id: str) -> dict:
    await asyncio.to_thread(_files(request).delete, file_id)
    return {"id": file_id, "object": "file", "deleted": True}
