"""Local-directory backend (the embedded default).

Layout: ``<root>/objects/<key>`` holds the bytes, ``<root>/meta/<key>.json`` the sha256 and size. Writes go to
``<root>/tmp`` and are renamed into place (atomic on one filesystem): data first, metadata second, so an object
is visible only once both exist; an overwrite replaces data then metadata, so readers see the old or the new
bytes, never a missing object.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

from emotune.errors import FailedPrecondition, NotFound
from emotune.store.base import CHUNK, ArtifactStore, ObjectInfo
from emotune.store.keys import validate_key


class LocalStore(ArtifactStore):
    backend = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._objects, self._meta, self._tmp = (self.root / d for d in ("objects", "meta", "tmp"))
        for d in (self._objects, self._meta, self._tmp):
            d.mkdir(parents=True, exist_ok=True)

    def _paths(self, key: str) -> tuple[Path, Path]:
        validate_key(key)
        return self._objects / key, self._meta / f"{key}.json"

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> ObjectInfo:
        import io

        return self.put_stream(key, io.BytesIO(data), len(data), content_type)

    def put_stream(
        self, key: str, stream: BinaryIO, length: int = -1, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        data_path, meta_path = self._paths(key)
        digest, size = hashlib.sha256(), 0
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                while block := stream.read(CHUNK if length < 0 else min(CHUNK, length - size)):
                    out.write(block)
                    digest.update(block)
                    size += len(block)
                    if 0 <= length <= size:
                        break
                out.flush()
                os.fsync(out.fileno())
            if length >= 0 and size != length:
                raise FailedPrecondition(f"stream for {key!r} ended after {size} of {length} bytes")
            meta = {"sha256": digest.hexdigest(), "size": size, "content_type": content_type}
            data_path.parent.mkdir(parents=True, exist_ok=True)
            meta_path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, data_path)
            self._write_meta(meta_path, meta)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        return self.stat(key)

    def _write_meta(self, meta_path: Path, meta: dict) -> None:
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        with os.fdopen(fd, "w") as out:
            json.dump(meta, out)
        os.replace(tmp_name, meta_path)

    def get_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def open(self, key: str) -> BinaryIO:
        data_path, meta_path = self._paths(key)
        if not meta_path.is_file():
            raise NotFound(f"object {key!r} not found", key=key)
        try:
            return data_path.open("rb")
        except FileNotFoundError:
            raise NotFound(f"object {key!r} not found", key=key) from None

    def stat(self, key: str) -> ObjectInfo:
        data_path, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text())
            mtime = data_path.stat().st_mtime
        except FileNotFoundError:
            raise NotFound(f"object {key!r} not found", key=key) from None
        return ObjectInfo(key, meta["size"], meta["sha256"], datetime.fromtimestamp(mtime, timezone.utc))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_key(prefix, prefix=True)
        # Walk only the directory that can contain the prefix, then filter by the full prefix string.
        base = self._meta / prefix.rsplit("/", 1)[0] if "/" in prefix else self._meta
        if not base.is_dir():
            return
        keys = sorted(
            str(p.relative_to(self._meta))[: -len(".json")]
            for p in base.rglob("*.json")
        )
        for key in keys:
            if key.startswith(prefix):
                try:
                    yield self.stat(key)
                except NotFound:  # deleted while listing
                    continue

    def delete(self, key: str) -> None:
        data_path, meta_path = self._paths(key)
        meta_path.unlink(missing_ok=True)
        data_path.unlink(missing_ok=True)

    def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        data_path, meta_path = self._paths(key)
        if not meta_path.is_file():
            raise NotFound(f"object {key!r} not found", key=key)
        # A local file needs no signature; the URL is only meaningful on this machine.
        return data_path.as_uri()
