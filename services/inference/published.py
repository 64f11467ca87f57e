"""The deployment's published fine-tunes: the served set lives in the artifact store, not in a process.

Publishing a model writes ``served/<model id>.json`` (base, adapter or merged artifact, styles with their
triggers, the artifacts' manifest digests). Every inference replica serves every record — loading it on the
first request that names it — so a fine-tune survives restarts and reaches every replica behind a Service.
Forgetting it deletes the record; replicas notice within their recheck interval and unload it.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, Field, ValidationError

from emotune.errors import CorruptArtifact, NotFound
from emotune.store.artifacts import read_manifest
from emotune.store.base import ArtifactStore

PREFIX = "served/"


class PublishedModel(BaseModel):
    id: str
    base_model: str = ""
    artifact: str = ""
    adapter_artifact: str = ""
    engine: str = ""
    styles: list[tuple[str, str]] = Field(default_factory=list)
    # artifact key -> manifest digest when published; a replaced artifact is refused, not served silently.
    digests: dict[str, str] = Field(default_factory=dict)
    created_at: int = Field(default_factory=lambda: int(time.time()))

    @property
    def artifacts(self) -> list[str]:
        return [key for key in (self.artifact, self.adapter_artifact) if key]


def record_key(model_id: str) -> str:
    return f"{PREFIX}{model_id}.json"


def artifact_digests(store: ArtifactStore, keys: list[str]) -> dict[str, str]:
    return {key: read_manifest(store, key).digest for key in keys}


def check_digests(store: ArtifactStore, record: PublishedModel) -> None:
    """Raise CorruptArtifact when an artifact's manifest no longer matches what was published."""
    for key, digest in artifact_digests(store, list(record.digests)).items():
        if digest != record.digests[key]:
            raise CorruptArtifact(f"artifact {key!r} of published model {record.id!r} changed since it was "
                                  f"published (digest {digest[:12]}…, published {record.digests[key][:12]}…)")


def publish(store: ArtifactStore, record: PublishedModel) -> None:
    store.put_text(record_key(record.id), record.model_dump_json(indent=2), content_type="application/json")


def read(store: ArtifactStore, model_id: str) -> PublishedModel | None:
    try:
        text = store.get_text(record_key(model_id))
    except NotFound:
        return None
    try:
        return PublishedModel.model_validate_json(text)
    except ValidationError as exc:
        raise CorruptArtifact(f"{record_key(model_id)}: not a published-model record ({exc.error_count()} "
                              f"errors, first: {exc.errors()[0]['msg']})") from None


def list_published(store: ArtifactStore) -> list[PublishedModel]:
    records = []
    for info in store.list(PREFIX):
        if info.key.endswith(".json"):
            record = read(store, info.key[len(PREFIX):-len(".json")])
            if record is not None:  # deleted between the listing and the read
                records.append(record)
    return records


def forget(store: ArtifactStore, model_id: str) -> None:
    store.delete(record_key(model_id))
