"""The pipeline service's domain: fine-tuning jobs as OpenAI sees them (create, list, events, checkpoints,
cancel, report, plots) on top of the JobStore, the job runner (one owner per job across replicas) and the
stage driver (:mod:`.pipeline`); and the style evaluation on its own (``evaluate``)."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from typing import Any

from emotune.data.styles import parse_styles
from emotune.errors import AlreadyExists, FailedPrecondition, InvalidInput, NotFound
from emotune.fine_tuning.protocol import (
    CheckpointOut,
    CreateFineTuningJob,
    EmotuneOptions,
    FineTuningJob,
    JobError,
    JobEventOut,
    ListPage,
)
from emotune.fine_tuning.report import evaluation_chart_png
from emotune.jobs.runner import JobRunner
from emotune.jobs.store import JobEvent, JobRecord, JobState, JobStore
from emotune.models.loadable import check_base_model, check_embedder
from emotune.services.pipeline.config import PipelineSettings
from emotune.services.pipeline.stages import Pipeline, ServiceChannels
from emotune.store.base import ArtifactStore
from emotune.store.files import FileService

KIND = "fine_tuning"
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, as HTTP header values allow
_TERMINAL_STATUS = {JobState.SUCCEEDED: "succeeded", JobState.FAILED: "failed", JobState.CANCELLED: "cancelled"}


def _status(record: JobRecord) -> str:
    if record.state.terminal:
        return _TERMINAL_STATUS[record.state]
    stage = record.checkpoint.get("stage")
    if record.state == JobState.QUEUED or stage is None:
        return "queued"
    return "validating_files" if stage == "validating_files" else "running"


def as_fine_tuning_job(record: JobRecord) -> FineTuningJob:
    request = CreateFineTuningJob.model_validate(record.spec["request"])
    stages = {name: state.get("status") for name, state in record.checkpoint.get("stages", {}).items()}
    error = None
    if record.state == JobState.FAILED:
        stage = record.checkpoint.get("stage", "pipeline")
        error = JobError(code=f"{stage}_failed", message=record.error, param=None)
    finished = int(record.updated_at.timestamp()) if record.state.terminal else None
    return FineTuningJob(
        id=record.job_id, model=request.model, created_at=int(record.created_at.timestamp()),
        finished_at=finished, fine_tuned_model=record.result.get("fine_tuned_model"),
        status=_status(record), training_file=record.spec.get("training_file", request.training_file), validation_file=request.validation_file,
        hyperparameters=request.hyperparameters, method=request.training_method, error=error,
        seed=record.spec.get("seed", 0),
        metadata=request.metadata, integrations=request.integrations,
        trained_tokens=record.result.get("training", {}).get("trained_tokens"),
        emotune={"stage": record.checkpoint.get("stage"), "stages": stages},
    )


def check_loadable(request: CreateFineTuningJob, settings: PipelineSettings) -> None:
    """Refuse a job naming a base model or an embedder the operator did not register (emotune.models.loadable)."""
    check_base_model(request.model, settings, "model")
    validation = request.emotune.validation if request.emotune else None
    if validation is not None:
        check_embedder(validation.embedder, settings, "emotune.validation.embedder")


class PipelineService:
    def __init__(self, settings: PipelineSettings, store: ArtifactStore, channels: ServiceChannels) -> None:
        self.settings, self.store, self.channels = settings, store, channels
        self.files = FileService(store)
        self.pipeline = Pipeline(store, self.files, channels,
                                 zhipuai_available=settings.zhipuai_api_key is not None)
        self.jobs = JobStore(store)
        self.runner = JobRunner(self.jobs, KIND, self.pipeline.run, max_concurrent=settings.pipeline_max_jobs,
                                lease_seconds=settings.job_lease_seconds)

    async def start_runner(self) -> list[str]:
        """Adopt the jobs no live replica owns (a previous process's, released or expired) and keep adopting."""
        return await self.runner.start()

    async def shutdown(self) -> None:
        """Stop running pipelines without finishing them: their leases are released for the next owner."""
        await self.runner.shutdown()
        await self.channels.close()

    async def create(self, request: CreateFineTuningJob, idempotency_key: str = "") -> FineTuningJob:
        """A new job; with an idempotency key, the job that key created if there is one (a client's retry after
        a timeout must not start a second run). The job id is derived from the key, so every replica finds it."""
        check_loadable(request, self.settings)
        job_id, fingerprint = f"ftjob-{secrets.token_hex(12)}", None
        if idempotency_key:
            if not IDEMPOTENCY_KEY.fullmatch(idempotency_key):
                raise InvalidInput("Idempotency-Key must be 1 to 255 visible ASCII characters",
                                   field="Idempotency-Key")
            job_id = "ftjob-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
            fingerprint = hashlib.sha256(request.model_dump_json().encode()).hexdigest()
            try:
                return self._replayed(await asyncio.to_thread(self.jobs.get, job_id), fingerprint)
            except NotFound:
                pass
        shown_training_file = request.training_file
        request = await asyncio.to_thread(self._normalise, request)
        seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
        request = request.model_copy(update={"seed": seed})
        spec = {"request": request.model_dump(mode="json"), "seed": seed, "training_file": shown_training_file}
        if fingerprint:
            spec["request_sha256"] = fingerprint
        try:
            record = await self.runner.submit(spec, job_id=job_id)
        except AlreadyExists:  # a concurrent call with the same key created it first
            return self._replayed(await asyncio.to_thread(self.jobs.get, job_id), fingerprint)
        return as_fine_tuning_job(record)

    @staticmethod
    def _replayed(record: JobRecord, fingerprint: str | None) -> FineTuningJob:
        if record.spec.get("request_sha256") != fingerprint:
            raise AlreadyExists(f"this Idempotency-Key was already used for a different request (job "
                                f"{record.job_id}); use a new key for a new job", field="Idempotency-Key")
        return as_fine_tuning_job(record)

    def _normalise(self, request: CreateFineTuningJob) -> CreateFineTuningJob:
        """Check the referenced files exist, and accept a styles document as ``training_file``.

        OpenAI's clients require ``training_file``; for a job that *generates* its data, the natural file to
        give is the styles document, so one uploaded with purpose ``emotune-styles`` is taken as the styles.
        """
        for file_id in (request.training_file, request.validation_file,
                        request.emotune.styles_file if request.emotune else None):
            if file_id:
                self.files.get(file_id)  # 404 naming the missing file
        training = self.files.get(request.training_file) if request.training_file else None
        if training is not None and request.training_method.type == "dpo" and training.purpose == "fine-tune" \
                and training.emotune.get("format") != "preference":
            raise InvalidInput(f"method 'dpo' trains on preference pairs: file {training.id} is not an OpenAI "
                               "preference JSONL (input / preferred_output / non_preferred_output); or give a "
                               "styles file and emotune.generation to generate the pairs", field="training_file")
        if training is None or training.purpose != "emotune-styles":
            return request
        options = request.emotune or EmotuneOptions()
        if options.generation is None:
            raise InvalidInput("a styles file as training_file generates the data: give emotune.generation "
                               "(at least the questions)", field="emotune.generation")
        options = options.model_copy(update={"styles_file": options.styles_file or request.training_file})
        return request.model_copy(update={"training_file": None, "emotune": options})

    def _get(self, job_id: str) -> JobRecord:
        try:
            record = self.jobs.get(job_id)
        except NotFound:
            record = None
        if record is None or record.kind != KIND:
            raise NotFound(f"No fine-tuning job found with id {job_id}", param="fine_tuning_job_id")
        return record

    async def retrieve(self, job_id: str) -> FineTuningJob:
        return as_fine_tuning_job(await asyncio.to_thread(self._get, job_id))

    async def list(self, after: str | None, limit: int) -> ListPage:
        page, more = await asyncio.to_thread(self.jobs.page, KIND, after, limit)  # one page read, not all jobs
        return ListPage(data=[as_fine_tuning_job(r) for r in page], has_more=more)

    async def cancel(self, job_id: str) -> FineTuningJob:
        record = await asyncio.to_thread(self._get, job_id)
        if record.state.terminal:
            raise FailedPrecondition(f"Job {job_id} is already {record.state.value} and cannot be cancelled")
        await self.runner.cancel(job_id)
        await self.runner.wait(job_id)
        return as_fine_tuning_job(await asyncio.to_thread(self._get, job_id))

    async def events(self, job_id: str, after: str | None, limit: int) -> ListPage:
        await asyncio.to_thread(self._get, job_id)
        before = None
        if after:  # an event id ends in its seq; an unreadable one lists nothing, as before
            before = int(after.rsplit("-", 1)[-1]) if after.rsplit("-", 1)[-1].isdigit() else 0
            if before < 1:
                return ListPage(data=[], has_more=False)
        # newest first, as OpenAI; one page of keys read, not the whole log
        page, more = await asyncio.to_thread(self.jobs.events_page, job_id, before, limit)
        return ListPage(data=[_event_out(job_id, e) for e in page], has_more=more)

    async def checkpoints(self, job_id: str, limit: int) -> ListPage:
        record = await asyncio.to_thread(self._get, job_id)
        items = record.checkpoint.get("checkpoints", [])
        out = [
            CheckpointOut(
                id=f"ftckpt-{job_id[-8:]}-{int(c.get('step', 0))}", created_at=int(record.updated_at.timestamp()),
                fine_tuned_model_checkpoint=str(c.get("artifact") or c.get("path") or f"step-{c.get('step')}"),
                fine_tuning_job_id=job_id, step_number=int(c.get("step", 0)),
                metrics={"step": float(c.get("step", 0)), "train_loss": c.get("train_loss"),
                         "valid_loss": c.get("valid_loss") or c.get("eval_loss")},
            )
            for c in reversed(items)
        ]
        return ListPage(data=out[:limit], has_more=len(out) > limit)

    async def report(self, job_id: str) -> dict[str, Any]:
        record = await asyncio.to_thread(self._get, job_id)
        stages = record.checkpoint.get("stages", {})
        validation = stages.get("validation", {}).get("result", {})
        training = stages.get("training", {}).get("result", {})
        evaluation = stages.get("evaluation", {}).get("result", {})
        plots = {}
        if evaluation.get("table"):
            plots["evaluation"] = f"/v1/fine_tuning/jobs/{job_id}/plots/evaluation.png"
        for name in {**validation.get("plots", {}), **training.get("plots", {})}:
            plots[name] = f"/v1/fine_tuning/jobs/{job_id}/plots/{name}.png"
        return {"id": job_id, "status": _status(record), "validation": validation, "training": training,
                "evaluation": evaluation, "plots": plots,
                "loss_curve": record.checkpoint.get("loss_curve", [])}

    async def evaluate(self, styles_yaml: str, names: list[str], questions: list[str], *, base_model: str,
                       tuned_model: str, max_tokens: int, seed: int) -> dict[str, Any]:
        """The evaluation a fine-tuning job ends with, for any served (base, tuned) pair."""
        styles = parse_styles(styles_yaml, "styles_yaml")
        if not questions:
            raise InvalidInput("no held-out questions to evaluate on", field="questions")
        for name in names:
            styles.get(name)  # an unknown style fails here, naming the field
        return await self.pipeline.evaluator.evaluate(
            styles, names or styles.names, questions, base_model=base_model, tuned_model=tuned_model,
            max_tokens=max_tokens or 96, seed=seed)

    async def plot(self, job_id: str, name: str) -> bytes:
        report = await self.report(job_id)
        if name == "evaluation" and report["evaluation"].get("table"):
            return await asyncio.to_thread(evaluation_chart_png, report["evaluation"]["table"])
        keys = {**report["validation"].get("plots", {}), **report["training"].get("plots", {})}
        if name not in keys:
            raise NotFound(f"no plot {name!r} for job {job_id}", param="name")
        return await asyncio.to_thread(self.store.get_bytes, keys[name])


def _event_out(job_id: str, event: JobEvent) -> JobEventOut:
    is_metric = event.type in {"metric", "checkpoint"} or "train_loss" in event.data or "loss" in event.data
    level = "error" if event.type == "error" or event.data.get("state") == "failed" else \
        "warn" if event.data.get("level") == "warning" else "info"  # e.g. the trainer's DPO collapse warning
    return JobEventOut(
        id=f"ftevent-{job_id[-8:]}-{event.seq}", created_at=int(event.time.timestamp()), level=level,
        message=event.message, type="metrics" if is_metric else "message", data={"seq": event.seq, **event.data},
    )
