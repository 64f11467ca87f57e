"""The deployment's published fine-tunes: the served set lives in the artifact store, not in a process.

Publishing a model writes ``served/<model id>.json`` (base, adapter or merged artifact, styles with their
triggers, the artifacts' manifest digests). Every inference replica serves every record — loading it on the
first request that names it — so a fine-tune survives restarts and reaches every replica behind a Service.
Forgetting it deletes the record; replicas notice within their recheck interval and unload it.

A record is written with ``If-Match`` / ``If-None-Match`` where the store has conditional writes: a publish never
replaces a record of the same fine-tuning job's outputs written by a newer owner of that job (its lease generation,
read from the artifact key, ``models/<job id>/<job id>-g<N>/...``: ``emotune.jobs.runner.owner_outputs``). So the
``LoadModel`` of an old pipeline owner still in flight when it lost the job cannot replace what the job's current
owner published (:class:`~emotune.errors.FailedPrecondition`). Any other publish replaces the record, as before;
without conditional writes the last publish wins.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, Field, ValidationError

from emotune.errors import CorruptArtifact, FailedPrecondition, NotFound
from emotune.jobs.runner import outputs_owner
from emotune.store.artifacts import read_manifest
from emotune.store.base import ArtifactStore, ConditionFailed

PREFIX = "served/"
# Conditional writes lost to concurrent publishes of one model id before giving up (each loser reads again).
PUBLISH_ATTEMPTS = 20


class PublishedModel(BaseModel):
    id: str
    base_model: str = ""
    artifact: str = ""
    adapter_artifact: str = ""
    engine: str = ""
    styles: list[tuple[str, str]] = Field(default_factory=list)
    # style -> that style's own adapter artifact (a fine-tune with one adapter per style).
    style_adapters: dict[str, str] = Field(default_factory=dict)
    # artifact key -> manifest digest when published; a replaced artifact is refused, not served silently.
    digests: dict[str, str] = Field(default_factory=dict)
    created_at: int = Field(default_factory=lambda: int(time.time()))

    @property
    def artifacts(self) -> list[str]:
        keys = [key for key in (self.artifact, self.adapter_artifact, *self.style_adapters.values()) if key]
        return list(dict.fromkeys(keys))

    @property
    def job_owner(self) -> tuple[str, int] | None:
        """(job id, owner generation) of the fine-tuning job whose outputs it serves, where its key says so."""
        return next((owner for key in self.artifacts if (owner := outputs_owner(key))), None)


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
    """Write ``record``; never over a record a newer owner of the same job wrote (see the module docstring)."""
    key, data = record_key(record.id), record.model_dump_json(indent=2).encode("utf-8")
    if not store.conditional_writes:
        store.put_bytes(key, data, content_type="application/json")
        return
    for _ in range(PUBLISH_ATTEMPTS):
        try:
            text, etag = store.get_with_etag(key)
        except NotFound:
            try:
                store.put_if_absent(key, data)
                return
            except ConditionFailed:  # published meanwhile: read it
                continue
        _refuse_an_older_owner(record, text)
        try:
            store.put_if_match(key, data, etag)
            return
        except ConditionFailed:  # replaced or deleted meanwhile: read it again
            continue
    raise FailedPrecondition(f"published model {record.id!r} kept changing while it was published; try again",
                             model=record.id)


def _refuse_an_older_owner(record: PublishedModel, existing_text: bytes) -> None:
    try:
        existing = PublishedModel.model_validate_json(existing_text).job_owner
    except ValidationError:  # an unreadable record is replaced
        return
    mine = record.job_owner
    if existing and mine and existing[0] == mine[0] and existing[1] > mine[1]:
        raise FailedPrecondition(
            f"published model {record.id!r} was published by a newer owner of job {mine[0]} (generation "
            f"{existing[1]}); this owner (generation {mine[1]}) no longer holds the job", model=record.id,
            job_id=mine[0], generation=mine[1], published_generation=existing[1])


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
