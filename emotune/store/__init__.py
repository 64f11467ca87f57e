"""Artifact storage: pick a backend from settings with :func:`open_store`."""

from __future__ import annotations

from emotune.settings import Settings
from emotune.store.base import ArtifactStore, ObjectInfo


def open_store(settings: Settings) -> ArtifactStore:
    if settings.store_backend == "s3":
        from emotune.store.s3 import S3Store

        return S3Store.from_settings(settings)
    from emotune.store.local import LocalStore

    return LocalStore(settings.store_path)


__all__ = ["ArtifactStore", "ObjectInfo", "open_store"]
