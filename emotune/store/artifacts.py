"""Multi-file immutable artifacts (datasets, adapters, merged models, reports) on any ArtifactStore.

Layout under a key prefix: ``<prefix>/files/<name>`` for the data, ``<prefix>/MANIFEST.json`` written LAST.
The manifest lists every file with its sha256 and size, the caller's metadata, and a content digest over the
files (the artifact's content address, see :func:`content_digest`). An artifact exists only once its manifest
does: a publisher that dies between data and manifest leaves nothing that :func:`read_manifest` or
:func:`list_artifacts` will show, and publishing again to the same prefix completes normally (and removes the
orphaned files). Published artifacts are immutable: publishing different content or metadata to the same
prefix is refused; publishing the identical artifact again is a no-op. Readers verify every byte against the
manifest and raise :class:`CorruptArtifact` on a mismatch.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, Field, ValidationError

from emotune.errors import AlreadyExists, CorruptArtifact, InvalidInput, NotFound
from emotune.logging import get_logger
from emotune.store.base import CHUNK, ArtifactStore, copy_hashed
from emotune.store.keys import validate_key

MANIFEST_NAME = "MANIFEST.json"
FILES_DIR = "files"
FORMAT_VERSION = 1

FileSource = bytes | Path
log = get_logger(__name__)


class ArtifactFile(BaseModel):
    sha256: str
    size: int


class ArtifactManifest(BaseModel):
    format_version: int = FORMAT_VERSION
    key_prefix: str
    files: dict[str, ArtifactFile]
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    #: sha256 over the sorted (name, sha256, size) lines: equal for equal content, whatever the prefix.
    digest: str

    def file_key(self, name: str) -> str:
        return file_key(self.key_prefix, name)


def manifest_key(key_prefix: str) -> str:
    return f"{_prefix(key_prefix)}/{MANIFEST_NAME}"


def file_key(key_prefix: str, name: str) -> str:
    return f"{_prefix(key_prefix)}/{FILES_DIR}/{name}"


def _prefix(key_prefix: str) -> str:
    return validate_key(key_prefix.rstrip("/"))


def digest_of(files: Mapping[str, ArtifactFile]) -> str:
    """The content address of a set of files (names are part of the content)."""
    lines = "".join(f"{name}\t{f.sha256}\t{f.size}\n" for name, f in sorted(files.items()))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def content_digest(files: Mapping[str, FileSource]) -> str:
    """The digest :func:`publish_artifact` would record for ``files``, e.g. to choose a content-addressed prefix."""
    return digest_of({name: _describe(name, source) for name, source in _checked_files(files).items()})


def publish_artifact(
    store: ArtifactStore, key_prefix: str, files: Mapping[str, FileSource], metadata: Mapping[str, Any] | None = None
) -> ArtifactManifest:
    """Write ``files`` (name -> bytes or local path) then the manifest; return the published manifest."""
    files = _checked_files(files)
    metadata = _checked_metadata(metadata or {})
    prefix = _prefix(key_prefix)
    try:
        existing = read_manifest(store, prefix)
    except NotFound:
        existing = None
    if existing is not None:
        return _same_or_refuse(existing, files, metadata)

    described = {}
    for name, source in files.items():
        info = (
            store.put_bytes(file_key(prefix, name), source) if isinstance(source, bytes)
            else store.put_file(file_key(prefix, name), source)
        )
        described[name] = ArtifactFile(sha256=info.sha256, size=info.size)
    _remove_orphans(store, prefix, set(files))
    manifest = ArtifactManifest(
        key_prefix=prefix, files=described, metadata=metadata, created_at=datetime.now(UTC),
        digest=digest_of(described),
    )
    store.put_bytes(manifest_key(prefix), manifest.model_dump_json(indent=1).encode("utf-8"), "application/json")
    return manifest


def _same_or_refuse(
    existing: ArtifactManifest, files: Mapping[str, FileSource], metadata: dict[str, Any]
) -> ArtifactManifest:
    described = {name: _describe(name, source) for name, source in files.items()}
    if digest_of(described) == existing.digest and metadata == existing.metadata:
        return existing
    what = "content" if digest_of(described) != existing.digest else "metadata"
    raise AlreadyExists(
        f"artifact {existing.key_prefix!r} is already published with different {what}; artifacts are "
        "immutable: publish under a new prefix", key=existing.key_prefix,
    )


def _remove_orphans(store: ArtifactStore, prefix: str, keep: set[str]) -> None:
    """Delete data files a crashed earlier attempt left under this (unpublished) prefix."""
    data_prefix = f"{prefix}/{FILES_DIR}/"
    for info in list(store.list(data_prefix)):
        if info.key[len(data_prefix):] not in keep:
            store.delete(info.key)


def read_manifest(store: ArtifactStore, key_prefix: str) -> ArtifactManifest:
    """The manifest of a published artifact; :class:`NotFound` if nothing is published there.

    ``key_prefix`` of the result is where it was read from, so an artifact copied elsewhere reads its own files.
    """
    prefix = _prefix(key_prefix)
    key = manifest_key(prefix)
    try:
        raw = store.get_bytes(key)
    except NotFound:
        raise NotFound(f"no artifact published at {key_prefix!r}", key=key_prefix) from None
    try:
        manifest = ArtifactManifest.model_validate_json(raw)
    except ValidationError as exc:
        raise CorruptArtifact(f"manifest {key} is unreadable: {exc.errors()[0]['msg']}", key=key) from None
    if digest_of(manifest.files) != manifest.digest:
        raise CorruptArtifact(f"manifest {key} digest does not match its file list", key=key)
    return manifest.model_copy(update={"key_prefix": prefix})


def list_artifacts(store: ArtifactStore, prefix: str = "") -> list[ArtifactManifest]:
    """Published artifacts whose key prefix starts with ``prefix``, in key order (unpublished ones are skipped).

    An unreadable manifest is logged and skipped here (reading that artifact raises :class:`CorruptArtifact`).
    """
    suffix = f"/{MANIFEST_NAME}"
    candidates = [info.key[: -len(suffix)] for info in store.list(prefix) if info.key.endswith(suffix)]
    manifests: list[ArtifactManifest] = []
    for candidate in candidates:
        # A data file that happens to be called MANIFEST.json inside another artifact is not an artifact
        # (key order puts "<p>/MANIFEST.json" before "<p>/files/...").
        if any(f"{candidate}/".startswith(f"{m.key_prefix}/{FILES_DIR}/") for m in manifests):
            continue
        try:
            manifests.append(read_manifest(store, candidate))
        except NotFound:  # deleted while listing
            continue
        except CorruptArtifact as exc:
            log.warning("skipping unreadable artifact manifest", key_prefix=candidate, reason=exc.message)
    return manifests


def open_file(store: ArtifactStore, key_prefix: str, name: str) -> BinaryIO:
    """A stream of one file that raises :class:`CorruptArtifact` at EOF if its bytes differ from the manifest."""
    manifest = read_manifest(store, key_prefix)
    entry = _entry(manifest, name)
    return io.BufferedReader(_VerifyingReader(store.open(manifest.file_key(name)), manifest.file_key(name), entry))


def read_file(store: ArtifactStore, key_prefix: str, name: str) -> bytes:
    with open_file(store, key_prefix, name) as fh:
        return fh.read()


def download_artifact(store: ArtifactStore, key_prefix: str, dest_dir: str | Path) -> Path:
    """Copy every file to ``dest_dir/<name>``, verifying sha256 and size; files already there intact are kept."""
    manifest = read_manifest(store, key_prefix)
    dest = Path(dest_dir).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    for name, entry in manifest.files.items():
        target = (dest / name).resolve()
        if dest not in target.parents:
            raise CorruptArtifact(f"artifact {key_prefix!r} names a file outside its folder: {name!r}")
        if target.is_file() and _local_matches(target, entry):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        try:
            with store.open(manifest.file_key(name)) as src, partial.open("wb") as out:
                sha256, size = copy_hashed(manifest.file_key(name), src, out)
            _verify(manifest.file_key(name), entry, sha256, size)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return dest


def delete_artifact(store: ArtifactStore, key_prefix: str) -> int:
    """Unpublish (manifest first, so readers stop seeing it at once), then remove the data; returns objects removed."""
    prefix = _prefix(key_prefix)
    store.delete(manifest_key(prefix))
    return 1 + store.delete_prefix(f"{prefix}/{FILES_DIR}/")


# helpers
def _checked_files(files: Mapping[str, FileSource]) -> dict[str, FileSource]:
    if not files:
        raise InvalidInput("an artifact needs at least one file", field="files")
    checked: dict[str, FileSource] = {}
    for name, source in files.items():
        validate_key(name)
        if isinstance(source, (bytes, bytearray, memoryview)):
            checked[name] = bytes(source)
        elif isinstance(source, Path):
            if not source.is_file():
                raise InvalidInput(f"{source} is not a file", file=str(source), field=f"files.{name}")
            checked[name] = source
        else:
            raise InvalidInput(
                f"must be bytes or a pathlib.Path, got {type(source).__name__}", field=f"files.{name}"
            )
    return checked


def _checked_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(dict(metadata), ensure_ascii=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"must be JSON-serializable: {exc}", field="metadata") from None


def _describe(name: str, source: FileSource) -> ArtifactFile:
    if isinstance(source, bytes):
        return ArtifactFile(sha256=hashlib.sha256(source).hexdigest(), size=len(source))
    with source.open("rb") as fh:
        sha256, size = copy_hashed(name, fh, None)
    return ArtifactFile(sha256=sha256, size=size)


def _local_matches(path: Path, entry: ArtifactFile) -> bool:
    if path.stat().st_size != entry.size:
        return False
    with path.open("rb") as fh:
        return copy_hashed(str(path), fh, None)[0] == entry.sha256


def _entry(manifest: ArtifactManifest, name: str) -> ArtifactFile:
    try:
        return manifest.files[name]
    except KeyError:
        raise NotFound(
            f"artifact {manifest.key_prefix!r} has no file {name!r} (files: {', '.join(sorted(manifest.files))})",
            key=manifest.key_prefix,
        ) from None


def _verify(key: str, entry: ArtifactFile, sha256: str, size: int) -> None:
    if size != entry.size or sha256 != entry.sha256:
        raise CorruptArtifact(
            f"{key}: content does not match the manifest (size {size} vs {entry.size}, "
            f"sha256 {sha256[:12]}… vs {entry.sha256[:12]}…)", key=key,
        )


class _VerifyingReader(io.RawIOBase):
    def __init__(self, inner: BinaryIO, key: str, entry: ArtifactFile) -> None:
        self._inner, self._key, self._entry = inner, key, entry
        self._digest, self._size, self._checked = hashlib.sha256(), 0, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(min(len(buffer), CHUNK))
        if data:
            self._digest.update(data)
            self._size += len(data)
            buffer[: len(data)] = data
        elif not self._checked:
            self._checked = True
            _verify(self._key, self._entry, self._digest.hexdigest(), self._size)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


__all__ = [
    "ArtifactFile", "ArtifactManifest", "FileSource", "content_digest", "delete_artifact", "download_artifact",
    "file_key", "list_artifacts", "manifest_key", "open_file", "publish_artifact", "read_file", "read_manifest",
]
