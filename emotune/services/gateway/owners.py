"""Which project owns what the gateway serves.

- A fine-tuning job: the ``project`` of its stored request (none: the default project).
- A fine-tuned model: the project of the job that trained it. A published fine-tune serves the artifacts its job
  wrote under ``models/<job id>/`` (the pipeline's layout: ``models/<job id>/<job id>-g<N>/adapter`` since each
  owner of a job writes under its own lease generation, ``models/<job id>/adapter`` before; the GGUF export sits
  beside the adapter); one whose job is not found belongs to the default project.
- A base model (anything not published): nobody; every project may use it.

:class:`ModelDirectory` answers "may this caller use that model?" for chat and completions without listing the
models on every request: a listing younger than a few seconds is trusted for the models it contains; for a name it
does not contain, the one published record of that name is read from the store (``served/<id>.json``, the record
inference itself reads to serve it). An unknown name thus costs one store read, as in inference, never a listing
of every model (fuzzed or random names would otherwise make inference read every published record per request).
Absences are not cached: a name published after it was asked for must be checked when it is asked for again (a
cached absence would let another project use a fine-tune published within the cache's lifetime).
"""

from __future__ import annotations

import asyncio
import time
from functools import cached_property

from emotune.errors import CorruptArtifact, InvalidInput, NotFound
from emotune.jobs.store import JobRecord, JobStore
from emotune.projects import DEFAULT_PROJECT, owner_of
from emotune.services.gateway.auth import Caller
from emotune.services.gateway.errors import OpenAIError
from emotune.services.gateway.upstream import InferenceClient
from emotune.services.inference import published
from emotune.settings import Settings
from emotune.store import open_store
from emotune.store.base import ArtifactStore
from emotune.v1 import inference_pb2

LISTING_MAX_AGE_SECONDS = 5.0


def job_owner(record: JobRecord) -> str:
    return owner_of(record.spec.get("request", {}).get("project"))


def training_job(model: inference_pb2.ModelInfo) -> str | None:
    """The job whose outputs a published fine-tune serves (``models/<job id>/<job id>-g<N>/adapter``, or
    ``models/<job id>/adapter`` as jobs wrote before outputs were kept per owner generation)."""
    parts = (model.adapter_artifact or model.artifact).split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "models" else None


def not_found(model_id: str) -> OpenAIError:
    return OpenAIError(404, f"The model `{model_id}` does not exist or is not served.", param="model",
                       code="model_not_found")


class ModelDirectory:
    def __init__(self, inference: InferenceClient, settings: Settings) -> None:
        self.inference, self.settings = inference, settings
        self._listing: tuple[float, dict[str, inference_pb2.ModelInfo]] | None = None
        self._job_owners: dict[str, str] = {}  # a job's project never changes

    @cached_property
    def store(self) -> ArtifactStore:
        """Made on first use (an S3 store is probed then); only read here (jobs, published records)."""
        return open_store(self.settings)

    @cached_property
    def jobs(self) -> JobStore:
        return JobStore(self.store)

    async def listing(self) -> list[inference_pb2.ModelInfo]:
        """A fresh listing (kept for :meth:`check`)."""
        models = list((await self.inference.list_models()).models)
        self._listing = (time.monotonic(), {model.id: model for model in models})
        return models

    async def published_model(self, model_id: str) -> inference_pb2.ModelInfo | None:
        """The published model ``model_id`` as a listing would show its ownership, from its record; None when no
        record of that name exists (a base model, or nothing: inference answers its own 404). A record that cannot
        be read answers 404: its owner is unknown."""
        try:
            record = await asyncio.to_thread(lambda: published.read(self.store, model_id))  # store made off the loop
        except InvalidInput:  # no valid store key: no record can have that name
            return None
        except CorruptArtifact:
            raise not_found(model_id) from None
        if record is None:
            return None
        return inference_pb2.ModelInfo(id=record.id, published=True, artifact=record.artifact,
                                       adapter_artifact=record.adapter_artifact)

    async def owner(self, model: inference_pb2.ModelInfo) -> str | None:
        """The project owning ``model``; None for a base model (shared)."""
        if not model.published:
            return None
        job_id = training_job(model)
        if job_id is None:
            return DEFAULT_PROJECT
        if job_id not in self._job_owners:
            try:
                owner = job_owner(await asyncio.to_thread(lambda: self.jobs.load(job_id)))
            except (NotFound, InvalidInput):
                owner = DEFAULT_PROJECT
            self._job_owners[job_id] = owner
        return self._job_owners[job_id]

    async def visible(self, caller: Caller, models: list[inference_pb2.ModelInfo]) -> list[inference_pb2.ModelInfo]:
        if caller.admin:
            return models
        owners = await asyncio.gather(*(self.owner(model) for model in models))
        return [model for model, owner in zip(models, owners, strict=True) if owner is None or caller.sees(owner)]

    async def check(self, caller: Caller, name: str) -> bool:
        """404 model_not_found when ``name`` (``<model>`` or ``<model>:<style>``) is another project's
        fine-tune. A name neither listed nor published is left to inference (it answers its own 404). Returns
        whether the model is known here to be the caller's to use (then inference's own errors about it may be
        shown in full: see :func:`upstream_error`)."""
        if caller.admin:
            return True
        model_id = name.partition(":")[0]  # as inference resolves a name
        listed = self._listing[1] if self._listing and time.monotonic() - self._listing[0] < \
            LISTING_MAX_AGE_SECONDS else {}
        model = listed.get(model_id)
        if model is None:
            model = await self.published_model(model_id)
        if model is not None and not await self.visible(caller, [model]):
            raise not_found(name)
        return model is not None


def upstream_error(known: bool, name: str, error: OpenAIError) -> OpenAIError:
    """Inference's 404 for a model it does not serve lists the models loaded on that replica (other projects'
    fine-tunes among them): for a model not known to be the caller's, the plain 404 instead."""
    if not known and error.status == 404 and error.code == "model_not_found":
        return not_found(name)
    return error
