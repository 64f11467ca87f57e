"""Uploaded files, kept in the artifact store (``files/<id>/content`` then ``files/<id>/meta.json``, then the
newest-first index entries ``files/index/all/<inverted ms>-<id>`` and ``files/index/<purpose>/...`` that make a page
of the listing one ``list(start_after=...)`` plus that page's metadata reads, and the same two per owner project,
``files/index/projects/<project>/{all,<purpose>}/...``).

A file belongs to the project that uploaded it (``project`` in its metadata; none: uploaded before projects, the
default project's). Every read takes an optional ``project``: another project's file is "No such File object".

The metadata is written last, so a crash mid-upload leaves no file that looks complete. Content is checked by
purpose before anything is stored: a bad upload is refused with the line and field at fault. A ``fine-tune`` file
is chat JSONL (``{"messages": [...]}``) or OpenAI's preference JSONL (``{"input", "preferred_output",
"non_preferred_output"}``, for ``method: dpo``); the file object's ``emotune.format`` says which.
"""

from __future__ import annotations

import io
import time
import uuid
from datetime import UTC, datetime
from typing import BinaryIO, Literal

from pydantic import BaseModel

from emotune.data.chat_jsonl import check_chat_jsonl
from emotune.data.preference import check_preference_jsonl, looks_like_preference
from emotune.data.styles import parse_styles
from emotune.data.textio import decode_bytes
from emotune.errors import InvalidInput, NotFound
from emotune.projects import owner_of, validate_project
from emotune.store.base import ArtifactStore
from emotune.store.keys import named_by, newest_first

Purpose = Literal["fine-tune", "emotune-styles", "emotune-questions", "emotune-voice"]
PURPOSES: tuple[str, ...] = ("fine-tune", "emotune-styles", "emotune-questions", "emotune-voice")
MAX_UPLOAD_BYTES = 64 * 1024 * 1024  # the default of the gateway's EMOTUNE_GATEWAY_MAX_UPLOAD_BYTES


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None
    # ext: what the check found (examples / styles / questions)
    emotune: dict = {}
    # ext: the project that uploaded it (None: uploaded before projects existed, the default project's)
    project: str | None = None


class FileService:
    def __init__(self, store: ArtifactStore, prefix: str = "files", max_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self.store, self.prefix, self.max_bytes = store, prefix, max_bytes

    def _key(self, file_id: str, name: str) -> str:
        if not file_id.startswith("file-") or "/" in file_id:
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return f"{self.prefix}/{file_id}/{name}"

    def create(self, filename: str, purpose: str, content: bytes, project: str | None = None) -> FileObject:
        return self.upload(filename, purpose, io.BytesIO(content), project)

    def upload(self, filename: str, purpose: str, stream: BinaryIO, project: str | None = None) -> FileObject:
        """Check and store a seekable stream (the gateway's multipart parser spools an upload to a temporary file,
        on disk beyond 1 MiB): the check reads it once, then it is streamed to the store (multipart on S3)."""
        if purpose not in PURPOSES:
            raise InvalidInput(f"purpose must be one of {', '.join(PURPOSES)}", field="purpose")
        if project is not None:
            validate_project(project)
        size = stream.seek(0, io.SEEK_END)
        if size > self.max_bytes:
            raise InvalidInput(f"file is {size} bytes, over the {self.max_bytes} byte limit", field="file")
        stream.seek(0)
        if purpose == "emotune-voice":  # a chat export: a zip, a CSV or JSON (docs/voice.md)
            summary = self._check_voice(filename, stream.read())
        else:
            summary = self._check(filename, purpose, decode_bytes(stream.read(), filename))
        stream.seek(0)
        meta = FileObject(id=f"file-{uuid.uuid4().hex[:24]}", bytes=size, created_at=int(time.time()),
                          filename=filename, purpose=purpose, emotune=summary, project=project)
        self.store.put_stream(self._key(meta.id, "content"), stream, size)
        self.store.put_text(self._key(meta.id, "meta.json"), meta.model_dump_json())
        for key in self._index_keys(meta):
            self.store.put_bytes(key, b"")
        return meta

    def _index_folder(self, purpose: str | None, project: str | None) -> str:
        """Where a listing of ``purpose`` (None: all) of ``project`` (None: every project) reads."""
        scope = f"projects/{project}/" if project is not None else ""
        return f"{self.prefix}/index/{scope}{purpose or 'all'}/"

    def _index_keys(self, meta: FileObject) -> list[str]:
        """[all, purpose] of every project, then [all, purpose] of the file's project."""
        name = newest_first(datetime.fromtimestamp(meta.created_at, UTC), meta.id)
        owner = owner_of(meta.project)
        return [self._index_folder(purpose, project) + name
                for project in (None, owner) for purpose in (None, meta.purpose)]

    @staticmethod
    def _check_voice(filename: str, content: bytes) -> dict:
        """A chat export read and cleaned with the default rules: a bad one is refused naming file, row and field;
        one with bad rows is accepted, and the summary says how many."""
        from emotune.voice.cleaning import clean
        from emotune.voice.sources import read_export

        export = read_export(data=content, filename=filename)
        report = clean(export).report
        return {"format": export.source, "conversations": report.conversations, "messages": report.messages,
                "voice_messages": report.voice_messages, "samples": report.train_samples + report.held_out_samples,
                "bad_rows": report.error_count}

    @staticmethod
    def _check(filename: str, purpose: str, text: str) -> dict:
        if purpose == "fine-tune":
            preference = looks_like_preference(text)  # OpenAI's DPO file, else chat JSONL
            result = check_preference_jsonl(text, filename) if preference else check_chat_jsonl(text, filename)
            if result.errors:
                first = result.errors[0]
                more = f" ({len(result.errors) - 1} more problem(s))" if len(result.errors) > 1 else ""
                raise InvalidInput(first.message + more, file=filename, line=first.line, field=first.field)
            if not result.examples:
                raise InvalidInput("no examples in the file", file=filename)
            return {"examples": result.examples, "approx_tokens": result.tokens,
                    "format": "preference" if preference else "chat"}
        if purpose == "emotune-styles":
            doc = parse_styles(text, filename)
            return {"styles": doc.names}
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            raise InvalidInput("the questions file is empty", file=filename)
        return {"lines": len(lines)}

    def get(self, file_id: str, project: str | None = None) -> FileObject:
        """The file's metadata; with ``project``, only if that project owns it (else, as OpenAI, not found)."""
        try:
            meta = FileObject.model_validate_json(self.store.get_bytes(self._key(file_id, "meta.json")))
        except NotFound:
            meta = None
        if meta is None or project is not None and owner_of(meta.project) != project:
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return meta

    def content(self, file_id: str, project: str | None = None) -> bytes:
        self.get(file_id, project)
        return self.store.get_bytes(self._key(file_id, "content"))

    def list(self, purpose: str | None = None, project: str | None = None) -> list[FileObject]:
        """Every file (of ``project``), newest first (reads them all: tests and tools; the API pages with
        :meth:`page`)."""
        files, after = [], None
        while True:
            batch, more = self.page(purpose, after, 1000, project)
            files += batch
            if not more:
                return files
            after = batch[-1].id

    def page(self, purpose: str | None = None, after: str | None = None, limit: int = 10000,
             project: str | None = None) -> tuple[list[FileObject], bool]:
        """Files newest first (of one ``purpose``, or all; of one ``project``, or every one): up to ``limit``
        after file ``after`` and whether more follow; reads ``limit + 1`` index entries and ``limit`` metadata
        objects, however many files there are (other projects' files are in other folders of the index)."""
        if purpose is not None and purpose not in PURPOSES:
            return [], False
        if project is not None:
            validate_project(project)
        self._ensure_index()
        start_after = ""
        if after:
            try:
                start_after = self._index_keys(self.get(after, project))[
                    (0 if purpose is None else 1) + (0 if project is None else 2)]
            except NotFound:
                return [], False
        files: list[FileObject] = []
        for info in self.store.list(self._index_folder(purpose, project), start_after=start_after):
            if len(files) == limit:
                return files, True
            try:
                files.append(self.get(named_by(info.key)))
            except NotFound:  # deleted meanwhile
                continue
        return files, False

    def _ensure_index(self) -> None:
        """Files uploaded before the index (or its per-project part) existed get their entries once (a marker
        says it was done)."""
        marker = f"{self.prefix}/index/built-projects"
        if self.store.exists(marker):
            return
        for info in self.store.list(f"{self.prefix}/file-"):
            if info.key.endswith("/meta.json"):
                for key in self._index_keys(FileObject.model_validate_json(self.store.get_bytes(info.key))):
                    self.store.put_bytes(key, b"")
        self.store.put_bytes(marker, b"")

    def delete(self, file_id: str, project: str | None = None) -> None:
        meta = self.get(file_id, project)
        self.store.delete(self._key(file_id, "meta.json"))  # invisible first, then the bytes
        for key in self._index_keys(meta):
            self.store.delete(key)
        self.store.delete(self._key(file_id, "content"))
