"""Local-directory backend (the embedded default).

Layout: ``<root>/objects/<key>`` holds the bytes, ``<root>/meta/<key>.json`` the sha256 and size, so the tree
can be browsed by hand. Writes go to ``<root>/tmp`` and are renamed into place (atomic on one filesystem): data
first, metadata second, so an object is visible only once both exist; an overwrite replaces data then metadata,
so readers see the old or the new bytes, never a missing object.

One difference from S3 is unavoidable on a filesystem: a key cannot also be the folder of another key (``a``
and ``a/b``). Such a write is refused with :class:`FailedPrecondition` naming the key (as MinIO's
filesystem mode did) and leaves the store unchanged.

Conditional writes (``put_if_absent``, ``put_if_match``) hold an exclusive ``flock`` on one of 256 files
``<root>/cas-locks/<xx>.lock`` (by the key's hash) while they compare and write, across threads and processes on this machine; the etag is the content's sha256. Plain
writes do not take the lock: a key written conditionally must only ever be written conditionally.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from emotune.errors import FailedPrecondition, NotFound
from emotune.store.base import ArtifactStore, ConditionFailed, ObjectInfo, copy_hashed
from emotune.store.keys import validate_key

_META_SUFFIX = ".json"


class LocalStore(ArtifactStore):
    backend = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._objects, self._meta, self._tmp = (self.root / d for d in ("objects", "meta", "tmp"))
        for d in (self._objects, self._meta, self._tmp):
            d.mkdir(parents=True, exist_ok=True)

    def _paths(self, key: str) -> tuple[Path, Path]:
        validate_key(key)
        return self._objects / key, self._meta / f"{key}{_META_SUFFIX}"

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> ObjectInfo:
        return self.put_stream(key, io.BytesIO(data), len(data), content_type)

    def put_stream(
        self, key: str, stream: BinaryIO, length: int = -1, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        data_path, meta_path = self._paths(key)
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                digest, size = copy_hashed(key, stream, out, length)
                out.flush()
                os.fsync(out.fileno())
            meta = {"sha256": digest, "size": size, "content_type": content_type}
            try:
                self._move_into_place(tmp_name, data_path, meta_path)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                raise FailedPrecondition(
                    f"object key {key!r} collides with another key used as its folder (or the reverse, "
                    "e.g. 'a' and 'a/b'); the local store cannot hold both", key=key,
                ) from None
            self._write_meta(meta_path, meta)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        return self.stat(key)

    @staticmethod
    def _move_into_place(tmp_name: str, data_path: Path, meta_path: Path) -> None:
        for attempt in range(3):
            try:
                data_path.parent.mkdir(parents=True, exist_ok=True)
                meta_path.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_name, data_path)
                return
            except FileNotFoundError:  # a concurrent delete removed the emptied folder we just made
                if attempt == 2:
                    raise

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
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"object {key!r} not found", key=key) from None

    def stat(self, key: str) -> ObjectInfo:
        data_path, meta_path = self._paths(key)
        try:
            meta = json.loads(meta_path.read_text())
            mtime = data_path.stat().st_mtime
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"object {key!r} not found", key=key) from None
        return ObjectInfo(key, meta["size"], meta["sha256"], datetime.fromtimestamp(mtime, UTC))

    def list(self, prefix: str = "", start_after: str = "") -> Iterator[ObjectInfo]:
        validate_key(prefix, prefix=True)
        # Walk only the folder that can contain the prefix, then filter by the full prefix string.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        keys = sorted(
            key for key in _walk_meta(self._meta / folder, f"{folder}/" if folder else "")
            if key.startswith(prefix) and key > start_after
        )
        for key in keys:
            try:
                size = json.loads((self._meta / f"{key}{_META_SUFFIX}").read_text())["size"]
                mtime = (self._objects / key).stat().st_mtime
            except FileNotFoundError:  # deleted while listing
                continue
            # No sha256 in listings, exactly as on S3 (see ObjectInfo).
            yield ObjectInfo(key, size, None, datetime.fromtimestamp(mtime, UTC))

    def delete(self, key: str) -> None:
        data_path, meta_path = self._paths(key)
        if data_path.is_dir():  # a folder of other objects, not an object: nothing to delete (as on S3)
            return
        meta_path.unlink(missing_ok=True)
        data_path.unlink(missing_ok=True)
        for path, top in ((meta_path, self._meta), (data_path, self._objects)):
            _remove_empty_parents(path.parent, top)

    # compare-and-swap
    @property
    def conditional_writes(self) -> bool:
        return True

    @contextlib.contextmanager
    def _cas_lock(self, key: str) -> Iterator[None]:
        stripe = hashlib.sha256(key.encode("utf-8")).hexdigest()[:2]  # 256 lock files: unrelated keys rarely wait
        locks = self.root / "cas-locks"
        locks.mkdir(exist_ok=True)
        fd = os.open(locks / f"{stripe}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _etag(self, key: str) -> str | None:
        try:
            return self.stat(key).sha256
        except NotFound:
            return None

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        with self._cas_lock(key):
            etag = self._etag(key)
            if etag is None:
                raise NotFound(f"object {key!r} not found", key=key)
            return self.get_bytes(key), etag

    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/json") -> str:
        with self._cas_lock(key):
            if self._etag(key) is not None:
                raise ConditionFailed(f"object {key!r} exists (If-None-Match)", key=key, http_status=412)
            return self.put_bytes(key, data, content_type).sha256 or ""

    def put_if_match(self, key: str, data: bytes, etag: str, content_type: str = "application/json") -> str:
        with self._cas_lock(key):
            if self._etag(key) != etag:
                raise ConditionFailed(f"object {key!r} changed or is gone (If-Match)", key=key, http_status=412)
            return self.put_bytes(key, data, content_type).sha256 or ""

    def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        data_path, meta_path = self._paths(key)
        if not meta_path.is_file():
            raise NotFound(f"object {key!r} not found", key=key)
        # A local file needs no signature; the URL is only meaningful on this machine.
        return data_path.as_uri()


def _walk_meta(folder: Path, key_prefix: str) -> Iterator[str]:
    """Keys of the metadata files under ``folder`` (os.scandir: listing a long event log stays cheap)."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _walk_meta(Path(entry.path), f"{key_prefix}{entry.name}/")
        elif entry.name.endswith(_META_SUFFIX):
            yield f"{key_prefix}{entry.name[: -len(_META_SUFFIX)]}"


def _remove_empty_parents(folder: Path, top: Path) -> None:
    """Remove folders emptied by a delete, so the key can later be used as an object again."""
    while folder != top and top in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (or already gone): stop climbing
            return
        folder = folder.parent
