"""The ArtifactStore contract: two backends (local directory, S3/MinIO) with identical behaviour.

Every method validates keys (``keys.validate_key``), raises :class:`emotune.errors.NotFound` for missing
objects, and reports the content sha256 of what it stored. Object writes are atomic per object on both backends
(a reader sees the old object, the new one, or nothing). Multi-file artifacts are published with a manifest
written last (``emotune.store.artifacts``). ``tests/emotune/store/test_store_contract.py`` runs the same checks
against both backends.

**Compare-and-swap.** ``put_if_absent`` (S3 ``If-None-Match: *``) and ``put_if_match`` (``If-Match: <etag>``) write
only if the object is missing / unchanged since it was read with ``get_with_etag``, else raise
:class:`ConditionFailed` (HTTP 412). ``conditional_writes`` says whether the store really enforces them: always on
the local store (a lock file and an etag compare), probed once on S3 (AWS S3 and MinIO do; OpenStack Swift's
s3api answers 501). Job creation and job ownership use them where present (``emotune.jobs.store``, ``emotune.jobs.leases``).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from emotune.errors import FailedPrecondition, NotFound

CHUNK = 1024 * 1024


class ConditionFailed(FailedPrecondition):
    """A conditional write was refused by the store (HTTP 412): the object exists / changed since it was read."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    # sha256 of the content, recorded at write time (hex). None in listings (S3 listings carry no metadata,
    # so neither backend reports it there) and for objects written by other tools; stat() has it.
    sha256: str | None
    last_modified: datetime | None = None


def copy_hashed(key: str, stream: BinaryIO, out: BinaryIO | None, length: int = -1) -> tuple[str, int]:
    """Read ``length`` bytes of ``stream`` (``-1``: to EOF) into ``out`` (if given); return (sha256, size).

    A stream that ends before ``length`` bytes is refused, so a truncated upload never becomes an object.
    """
    digest, size = hashlib.sha256(), 0
    while block := stream.read(CHUNK if length < 0 else min(CHUNK, length - size)):
        digest.update(block)
        size += len(block)
        if out is not None:
            out.write(block)
        if 0 <= length <= size:
            break
    if length >= 0 and size != length:
        raise FailedPrecondition(f"stream for {key!r} ended after {size} of {length} bytes", key=key)
    return digest.hexdigest(), size


class ArtifactStore(ABC):
    """Object storage used for artifacts, datasets and job state."""

    #: "local" or "s3"; shown in logs and /readyz.
    backend: str

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> ObjectInfo: ...

    @abstractmethod
    def put_stream(
        self, key: str, stream: BinaryIO, length: int = -1, content_type: str = "application/octet-stream"
    ) -> ObjectInfo:
        """Store a stream (``length=-1``: unknown, read to EOF; large objects go multipart on S3)."""

    def put_file(self, key: str, path: str | Path, content_type: str = "application/octet-stream") -> ObjectInfo:
        path = Path(path)
        with path.open("rb") as fh:
            return self.put_stream(key, fh, path.stat().st_size, content_type)

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def open(self, key: str) -> BinaryIO:
        """A readable binary stream of the object; the caller closes it."""

    def get_file(self, key: str, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        with self.open(key) as src, tmp.open("wb") as dst:
            while block := src.read(CHUNK):
                dst.write(block)
        tmp.replace(path)
        return path

    def get_text(self, key: str) -> str:
        return self.get_bytes(key).decode("utf-8")

    def put_text(self, key: str, text: str, content_type: str = "text/plain; charset=utf-8") -> ObjectInfo:
        return self.put_bytes(key, text.encode("utf-8"), content_type)

    @abstractmethod
    def list(self, prefix: str = "", start_after: str = "") -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in ascending key order (recursive, by UTF-8 bytes).

        ``start_after`` skips every key up to and including it (S3's ``start-after``), so a poller can read
        only what is new. ``sha256`` is None in listings on both backends; use ``stat`` for it.
        """

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo: ...

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except NotFound:
            return False
        return True

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete one object; deleting a missing object is not an error (as on S3)."""

    def delete_prefix(self, prefix: str) -> int:
        keys = [info.key for info in self.list(prefix)]
        for key in keys:
            self.delete(key)
        return len(keys)

    # ------------------------------------------------------------------ compare-and-swap
    @property
    def conditional_writes(self) -> bool:
        """Whether ``put_if_absent`` / ``put_if_match`` are enforced by this store (see the module docstring)."""
        return False

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and the etag a later ``put_if_match`` compares against."""
        raise NotImplementedError(f"{self.backend} store has no conditional writes")

    def put_if_absent(self, key: str, data: bytes, content_type: str = "application/json") -> str:
        """Create the object unless it exists (:class:`ConditionFailed` then); returns the new etag."""
        raise NotImplementedError(f"{self.backend} store has no conditional writes")

    def put_if_match(self, key: str, data: bytes, etag: str, content_type: str = "application/json") -> str:
        """Replace the object if its etag is still ``etag`` (:class:`ConditionFailed` if it changed or is gone);
        returns the new etag."""
        raise NotImplementedError(f"{self.backend} store has no conditional writes")

    @abstractmethod
    def presigned_url(self, key: str, expires: timedelta = timedelta(hours=1)) -> str:
        """A URL that lets someone without credentials GET the object until it expires."""
