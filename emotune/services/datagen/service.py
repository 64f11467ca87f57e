"""The datagen service's domain object: validates and submits generation jobs, owns their runner.

Used by the gRPC servicer and, in-process, by the CLI; no transport code here.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from typing import Any

from emotune.errors import AlreadyExists, FailedPrecondition, InvalidInput, NotFound
from emotune.jobs.runner import JobRunner
from emotune.jobs.store import JobRecord, JobState, JobStore
from emotune.services.datagen.config import DatagenSettings
from emotune.services.datagen.generator import JOB_KIND, DatagenDeps, plan_job, run_generation
from emotune.services.datagen.postprocess import PostProcessor
from emotune.services.datagen.request_policy import ProviderLimits
from emotune.services.datagen.spec import GenerationSpec, prepare_spec, teacher_access
from emotune.store.artifacts import read_manifest
from emotune.store.base import ArtifactStore


class DatagenService:
    def __init__(self, settings: DatagenSettings, store: ArtifactStore) -> None:
        self.settings, self.store = settings, store
        self.jobs = JobStore(store)
        self.deps = DatagenDeps(settings, store, ProviderLimits(settings.provider_max_concurrency),
                                PostProcessor.load(settings.datagen_postprocess_rules))
        self.runner = JobRunner(self.jobs, JOB_KIND, functools.partial(run_generation, deps=self.deps),
                                max_concurrent=settings.datagen_max_jobs, lease_seconds=settings.job_lease_seconds)

    async def start(self, request: dict[str, Any], resume_job_id: str = "") -> JobRecord:
        """Validate ``request`` (shaped like the GenerationSpec proto) and queue the job; errors name the field."""
        job_id = f"{JOB_KIND}-{uuid.uuid4().hex[:16]}"
        if resume_job_id:
            spec = await asyncio.to_thread(self._resume_spec, resume_job_id)
        else:
            spec = prepare_spec(request, self.settings, output_prefix=f"datasets/{job_id}")
            await asyncio.to_thread(self._check_new_output, spec)
        await asyncio.to_thread(self._check_runnable, spec)
        return await self.runner.submit(spec.model_dump(mode="json"), job_id)

    def _resume_spec(self, previous_id: str) -> GenerationSpec:
        previous = self.jobs.get(previous_id)
        if previous.kind != JOB_KIND:
            raise InvalidInput(f"job {previous_id} is a {previous.kind} job, not a generation", field="resume_job_id")
        if not previous.state.terminal:
            raise FailedPrecondition(f"job {previous_id} is still {previous.state.value}; an unfinished job resumes "
                                     "by itself when the service restarts", field="resume_job_id")
        if previous.state == JobState.SUCCEEDED:
            raise FailedPrecondition(f"job {previous_id} already succeeded: its dataset is "
                                     f"{previous.result.get('dataset')}", field="resume_job_id")
        return GenerationSpec.model_validate({**previous.spec, "resumed_from": previous_id})

    def _check_new_output(self, spec: GenerationSpec) -> None:
        try:
            read_manifest(self.store, spec.output_prefix)
        except NotFound:
            pass
        else:
            raise AlreadyExists(f"a dataset is already published at {spec.output_prefix!r}; choose another "
                                "output_prefix", field="output_prefix")
        if next(iter(self.store.list(spec.shards_prefix + "/")), None) is not None:
            raise FailedPrecondition(f"{spec.output_prefix!r} holds another job's partial results; continue that "
                                     "job with resume_job_id or choose another output_prefix", field="output_prefix")

    def _check_runnable(self, spec: GenerationSpec) -> None:
        """Fail at submission, not minutes later: the teacher is usable (named and keyed, or a public URL the
        operator allows) and the questions/plan are usable."""
        teacher_access(spec.teacher, self.settings)
        _doc, plan, _errors = plan_job(spec, self.store)
        if plan.total == 0:
            raise InvalidInput(f"nothing to generate: {plan.skipped_count()} combination(s) all skipped "
                               f"({plan.skipped})", field="style_names")

    async def resume_unfinished(self) -> list[str]:
        return await self.runner.resume_unfinished()

    async def start_runner(self) -> list[str]:
        """Adopt the jobs nobody owns now and keep adopting (``JobRunner.start``); returns the adopted ids."""
        return await self.runner.start()

    async def shutdown(self) -> None:
        await self.runner.shutdown()
