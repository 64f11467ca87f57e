"""The trainer service's domain object: validates and submits training jobs and runs them.

A job: fetch the dataset (and the optional general set) into the job's work dir, resolve the base model, run
the backend in its own process (events relayed as they come; each checkpoint also uploaded to the store so
another host can resume), then export + parity check + publish (:mod:`emotune.services.trainer.export`). A job whose
process died resumes from its last checkpoint when the service restarts. No transport code here.

Each owner of a job (its lease generation: 1 for the creator, one more per takeover) writes under its own prefix,
``JobContext.owned(output_prefix)``: ``output_prefix`` itself for the creator, ``<output_prefix>/g<N>`` after a
takeover. A new owner resumes from the newest checkpoint any owner published (its own or an earlier one's) and
publishes its checkpoints and artifacts under its own prefix; the job's result names them. So an upload of an old
owner still under way after a takeover (the export runs in a thread the task's cancellation does not stop) lands
under the old owner's prefix, never on the new owner's keys. The model's name stays the last segment of
``output_prefix``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from emotune.data.datasets import check_dataset, fetch_dataset
from emotune.errors import CorruptArtifact, EmotuneError, FailedPrecondition, NotFound
from emotune.jobs.runner import JobContext, JobRunner
from emotune.jobs.store import JobRecord, JobStore
from emotune.logging import get_logger
from emotune.models.basemodels import packaged_gguf, resolve_base_model
from emotune.models.llamacpp import LlamaCpp
from emotune.models.loadable import check_base_model
from emotune.services.trainer import export, metrics
from emotune.services.trainer.config import TrainerSettings
from emotune.services.trainer.data import only_style, read_records
from emotune.services.trainer.distrun import failure_reason, torchrun_argv
from emotune.services.trainer.memory import GIB, Shape, plan_spec
from emotune.services.trainer.process import ProcessFailed, run_process
from emotune.services.trainer.spec import TrainingSpec, check_devices, local_devices
from emotune.services.trainer.worker import COMPLETE, EVENT_PREFIX, OUTPUT_DIR
from emotune.store.artifacts import delete_artifact, download_artifact, list_artifacts, publish_artifact
from emotune.store.base import ArtifactStore

JOB_KIND = "training"
log = get_logger(__name__)


class TrainerService:
    def __init__(self, settings: TrainerSettings, store: ArtifactStore) -> None:
        self.settings, self.store = settings, store
        self.jobs = JobStore(store)
        # share_queue: a run submitted to a busy replica goes to the first replica with a free slot (one per node)
        self.runner = JobRunner(self.jobs, JOB_KIND, self.run, max_concurrent=settings.trainer_max_jobs,
                                lease_seconds=settings.job_lease_seconds, share_queue=True)

    async def start(self, request: dict[str, Any]) -> JobRecord:
        """Validate ``request`` (shaped like the TrainingSpec proto) and queue the job; errors name the field."""
        spec = TrainingSpec.parse(request, "TrainingSpec")
        check_base_model(spec.base_model, self.settings, "base_model")
        self.check_devices(spec)
        job_id = f"{JOB_KIND}-{uuid.uuid4().hex[:16]}"
        if spec.resume_job_id:
            raise FailedPrecondition("an unfinished training job resumes by itself when the trainer restarts; "
                                     "start a new job instead", field="resume_job_id")
        spec = spec.model_copy(update={"output_prefix": spec.output_prefix or f"models/{job_id}"})
        await asyncio.to_thread(check_dataset, self.store, spec.dataset_artifact)
        if spec.mix_dataset_artifact:
            await asyncio.to_thread(check_dataset, self.store, spec.mix_dataset_artifact, "mix_dataset_artifact")
        return await self.runner.submit(spec.model_dump(mode="json"), job_id)

    async def resume_unfinished(self) -> list[str]:
        return await self.runner.resume_unfinished()

    async def start_runner(self) -> list[str]:
        """Adopt the jobs nobody owns now and keep adopting (``JobRunner.start``); returns the adopted ids."""
        return await self.runner.start()

    async def shutdown(self) -> None:
        await self.runner.shutdown()

    # ------------------------------------------------------------------ the job
    async def run(self, ctx: JobContext) -> dict[str, Any]:
        spec = TrainingSpec.parse(ctx.spec, "spec")
        ctx.emit("log", f"training on {self.runner.owner}", owner=self.runner.owner)  # which replica (node) runs it
        self.check_devices(spec)  # this replica may have fewer GPUs than the one that accepted the job
        work = self.settings.work_root / ctx.job_id
        data, general = await asyncio.to_thread(self.fetch_inputs, spec, work)
        base_dir = await asyncio.to_thread(resolve_base_model, check_base_model(spec.base_model, self.settings,
                                                                                "base_model"), self.settings.cache_dir)
        await asyncio.to_thread(self._check_memory, spec, base_dir, ctx)
        prefix = ctx.owned(spec.output_prefix)  # this owner's keys (see the module docstring)
        owners = [prefix, *ctx.earlier_owned(spec.output_prefix)]  # every owner's so far, this one's first
        await asyncio.to_thread(self._restore_checkpoint, spec, work, owners)
        relay = _Relay(ctx, self, spec, prefix)
        if spec.backend == "hf":
            run = await self._run_hf(spec, base_dir, data, general, work, relay)
        else:
            from emotune.services.trainer.xtuner_backend import run_xtuner

            run = await run_xtuner(self.settings, spec, base_dir, data, general, work, relay.event)
        await ctx.flush()  # checkpoint uploads still queued finish before the export (and the clean-up after it)
        ctx.raise_if_cancelled()
        ctx.emit("log", "exporting: chat-template files, parity check, publish")
        result = await asyncio.to_thread(self.export_run, spec, ctx.spec, base_dir, data, work, run, prefix)
        for name in ("adapter", "merged", "report", "gguf"):
            if name + "_artifact" in result:
                ctx.emit("artifact", f"published {result[name + '_artifact']}", kind=name,
                         key=result[name + "_artifact"])
        for outcome in ("skipped", "failed"):
            if outcome in result.get("gguf", {}):
                ctx.emit("log", f"GGUF export {outcome}: {result['gguf'][outcome]}", level="warning")
        for warning in result["serving_warnings"]:
            ctx.emit("log", warning, level="warning")
        await asyncio.to_thread(self._cleanup, owners, work)
        return result

    def check_devices(self, spec: TrainingSpec) -> None:
        """Refuse a spec this node cannot run (more processes than GPUs, DeepSpeed/FSDP without CUDA)."""
        if spec.processes > 1:  # (one process runs anywhere: no torch import on the request path)
            check_devices(spec, *self._devices(spec))

    def _devices(self, spec: TrainingSpec) -> tuple[str, int]:
        device, count = local_devices()
        if spec.backend == "xtuner" and self.settings.trainer_xtuner_device != "auto":
            device = self.settings.trainer_xtuner_device
        return device, count

    def _check_memory(self, spec: TrainingSpec, base_dir: Path, ctx: JobContext) -> None:
        """The memory planner's estimate per GPU, in the job's events; a run that cannot fit the smallest GPU it
        would use is refused before it starts (on CPU, only a warning above the machine's memory)."""
        try:
            planned = plan_spec(spec, Shape.from_model_dir(base_dir))
        except (OSError, KeyError, ValueError) as exc:  # a config.json the planner cannot read: no estimate
            ctx.emit("log", f"no memory estimate for {base_dir.name}: {type(exc).__name__}: {exc}", level="warning")
            return
        device, count = self._devices(spec)
        ctx.emit("log", f"memory plan: {planned.describe()}", planned_bytes=int(planned.per_gpu))
        if device == "cuda" and count:
            import torch

            available = min(torch.cuda.get_device_properties(i).total_memory for i in range(spec.processes))
            if planned.per_gpu > available:
                raise FailedPrecondition(
                    f"the run needs about {planned.per_gpu / GIB:.1f} GiB per GPU but the GPU has "
                    f"{available / GIB:.1f} GiB: use quantization '4bit', more processes with strategy 'zero3' "
                    "(or 'zero2'), a smaller max_length or batch_size", field="processes",
                    planned_gib=round(planned.per_gpu / GIB, 1))
        elif device == "cpu":
            physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            if planned.per_gpu * spec.processes > physical:
                ctx.emit("log", f"the run may need about {planned.per_gpu * spec.processes / GIB:.1f} GiB, more "
                         f"than this machine's {physical / GIB:.1f} GiB", level="warning")

    def fetch_inputs(self, spec: TrainingSpec, work: Path) -> tuple[Path, Path | None]:
        data = work / "data" / "records.jsonl"
        if not data.is_file():
            content = fetch_dataset(self.store, spec.dataset_artifact)
            _write_atomic(data, only_style(content, spec.style, spec.dataset_artifact) if spec.style else content)
        general = None
        if spec.mix_dataset_artifact:
            general = work / "data" / "general.jsonl"
            if not general.is_file():
                _write_atomic(general, fetch_dataset(self.store, spec.mix_dataset_artifact, "mix_dataset_artifact"))
        return data, general

    def worker_args(self, spec: TrainingSpec, base_dir: Path, data: Path, general: Path | None,
                    work: Path) -> list[str]:
        """``emotune.services.trainer.worker``'s arguments for a run in ``work`` (writes the spec file there)."""
        spec_file = work / "spec.json"
        spec_file.write_text(spec.model_dump_json(), encoding="utf-8")
        args = ["--spec", str(spec_file), "--base-model", str(base_dir), "--data", str(data), "--work-dir", str(work),
                "--threads", str(self.settings.trainer_threads)]
        if general is not None:
            args += ["--general", str(general)]
        if self.settings.trainer_cpu_bf16:
            args.append("--cpu-bf16")
        if spec.styles_yaml and spec.eval_prompts:
            args += ["--validator-addr", self.settings.validator_addr]
        return args

    async def _run_hf(self, spec: TrainingSpec, base_dir: Path, data: Path, general: Path | None, work: Path,
                      relay: _Relay) -> dict[str, Any]:
        python = str(self.settings.trainer_python or sys.executable)
        args = self.worker_args(spec, base_dir, data, general, work)
        if spec.processes > 1:  # torchrun: rank 0 reports and saves; a resume is a rerun, as for one process
            argv = torchrun_argv(python, spec.processes, "emotune.services.trainer.worker", args)
            what = f"training worker (torchrun, {spec.processes} processes, {spec.strategy})"
        else:
            argv, what = [python, "-m", "emotune.services.trainer.worker", *args], "training worker"
        for attempt in range(self.settings.trainer_max_restarts + 1):
            relay.error = None
            try:
                await run_process(argv, relay.worker_line, cwd=_repo_root(), grace_seconds=self.settings.
                                  trainer_stop_grace_seconds, what=what)
                break
            except ProcessFailed as exc:
                reason = failure_reason(exc.message)  # torchrun's report: which rank failed first, and how
                message = relay.error or exc.message
                if reason:  # the first failure leads; what rank 0 then reported follows
                    message = f"{what} failed: {reason}" + (f"; rank 0 reported: {relay.error}" if relay.error else "")
                if attempt == self.settings.trainer_max_restarts:
                    raise ProcessFailed(message) from None
                relay.ctx.emit("log", f"{message}; starting it again ({attempt + 1} of "
                               f"{self.settings.trainer_max_restarts}), from the last checkpoint", level="warning")
        return json.loads((work / OUTPUT_DIR / "run.json").read_text(encoding="utf-8"))

    def export_run(self, spec: TrainingSpec, spec_dict: dict[str, Any], base_dir: Path, data: Path, work: Path,
                   run: dict[str, Any], prefix: str | None = None) -> dict[str, Any]:
        """Export and publish under ``prefix`` (this owner's, default ``output_prefix``); the model is named after
        ``output_prefix``'s last segment whoever publishes it."""
        from emotune.models.chat_template import ChatFormat

        fmt = ChatFormat.from_pretrained(base_dir, spec.chat_template or None)
        records, _ = read_records(data)
        conversations = export.parity_conversations(records, spec.eval_prompts)
        model_name = spec.output_prefix.rstrip("/").rsplit("/", 1)[-1]
        gguf, skipped = self._gguf_export(spec, base_dir)
        result = export.finish(self.store, prefix or spec.output_prefix, work / OUTPUT_DIR, fmt, spec_dict, run,
                               conversations, model_name, gguf)
        return {**result, "gguf": {"skipped": skipped}} if skipped else result

    def _gguf_export(self, spec: TrainingSpec, base_dir: Path) -> tuple[export.GgufExport | None, str]:
        """What the GGUF export needs, or why it is skipped (asked not to; llama.cpp not built here)."""
        if spec.gguf_quantization == "none":
            return None, "gguf_quantization is 'none'"
        try:
            tools = LlamaCpp.locate(self.settings.cache_dir, self.settings.llamacpp_dir,
                                    self.settings.llamacpp_tool_timeout_seconds)
        except FailedPrecondition as exc:
            log.warning("GGUF export skipped", reason=exc.message)
            return None, exc.message
        cache = self.settings.cache_dir
        return export.GgufExport(tools, cache, base_dir, packaged_gguf(spec.base_model, cache),
                                 spec.gguf_quantization), ""

    # ------------------------------------------------------------------ checkpoints in the store
    def upload_checkpoint(self, owned: str, path: Path, data: dict[str, Any], kept: list[str]) -> str:
        """Publish one checkpoint under this owner's prefix ``owned`` (another host resumes from it) and drop this
        owner's store copies no longer kept."""
        prefix = f"{owned}/checkpoints"
        key = f"{prefix}/{path.name}"
        files = {p.name: p for p in path.iterdir() if p.is_file()}
        publish_artifact(self.store, key, files, {"kind": "checkpoint", **data})
        for manifest in list_artifacts(self.store, prefix + "/"):
            if manifest.key_prefix.rsplit("/", 1)[-1] not in kept:
                delete_artifact(self.store, manifest.key_prefix)
        return key

    def _restore_checkpoint(self, spec: TrainingSpec, work: Path, owners: list[str]) -> None:
        """On a fresh host the work dir is empty: fetch the newest checkpoint any owner of the job published under
        its prefix (``owners``: this owner's first, then the earlier ones'; the higher step wins, a tie goes to the
        later owner). One that vanishes or fails its byte check while it is read (an old owner still pruning or
        uploading its own) is skipped for the next newest."""
        checkpoints = work / "checkpoints"
        if spec.backend != "hf" or (work / OUTPUT_DIR / COMPLETE).is_file() or any(checkpoints.glob("checkpoint-*")):
            return
        published = [(int(m.key_prefix.rsplit("-", 1)[-1]), -rank, m.key_prefix)
                     for rank, owned in enumerate(owners) for m in list_artifacts(self.store, f"{owned}/checkpoints/")]
        for _step, _rank, key in sorted(published, reverse=True):
            target = checkpoints / key.rsplit("/", 1)[-1]
            try:
                download_artifact(self.store, key, target)
            except (NotFound, CorruptArtifact) as exc:
                shutil.rmtree(target, ignore_errors=True)  # never resume from half a checkpoint
                log.warning("published checkpoint unreadable; trying an older one", key=key, error=exc.message)
                continue
            log.info("restored checkpoint from the store", key=key)
            return

    def _cleanup(self, owners: list[str], work: Path) -> None:
        """The job is done: drop the checkpoints every owner published (``owners``: their prefixes)."""
        for owned in owners:
            for manifest in list_artifacts(self.store, f"{owned}/checkpoints/"):
                delete_artifact(self.store, manifest.key_prefix)
        shutil.rmtree(work, ignore_errors=True)


class _Relay:
    """Worker output -> job events (checkpoint events also upload the checkpoint)."""

    def __init__(self, ctx: JobContext, service: TrainerService, spec: TrainingSpec, owned: str) -> None:
        self.ctx, self.service, self.spec, self.owned = ctx, service, spec, owned
        self.error: str | None = None

    def worker_line(self, line: str) -> None:
        if not line.startswith(EVENT_PREFIX):
            if line.strip():
                log.debug("worker", line=line[:500])
            return
        event = json.loads(line[len(EVENT_PREFIX):])
        self.event(event["type"], event["message"], event["data"])

    def event(self, type: str, message: str, data: dict[str, Any]) -> None:
        if type == "error":
            self.error = message
            return
        if type == "warning":
            type, data = "log", {"level": "warning", **data}
        self._observe(type, data)
        if type == "checkpoint" and data.get("path"):
            # Called on the event loop (worker output) or a worker thread: the upload (hundreds of MB) and its
            # event go to the job's ordered writer thread, after the events before and before those after.
            self.ctx.run_in_order(self._publish_checkpoint, message, dict(data))
            return
        self.ctx.emit(type, message, **data)

    def _publish_checkpoint(self, message: str, data: dict[str, Any]) -> None:
        try:
            data = {**data, "artifact": self.service.upload_checkpoint(
                self.owned, Path(data.pop("path")), data, data.get("kept", []))}
        except (EmotuneError, OSError) as exc:  # the local checkpoint still allows resuming here
            log.warning("checkpoint upload failed", error=str(exc))
        self.ctx.emit("checkpoint", message, **data)


    def _observe(self, type: str, data: dict[str, Any]) -> None:
        backend = self.spec.backend
        if type == "progress":
            metrics.STEPS.labels(backend).inc()
            metrics.TRAIN_LOSS.labels(backend).set(data.get("loss") or 0.0)
            if data.get("tokens_per_s") is not None:
                metrics.TOKENS_PER_SECOND.labels(backend).set(data["tokens_per_s"])
        elif type == "metric" and data.get("eval_loss") is not None:
            metrics.EVAL_LOSS.labels(backend).set(data["eval_loss"])
        elif type == "checkpoint":
            metrics.CHECKPOINTS.labels(backend).inc()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


def _repo_root() -> Path:
    """Where ``python -m emotune.services.trainer.worker`` resolves (the checkout or the installed package's parent)."""
    return Path(__file__).resolve().parents[3]

