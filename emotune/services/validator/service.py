"""The validator's use cases, independent of transport: validation jobs (dataset artifact in, kept / rejected /
report artifacts out), local validation of files (CLI), and online scoring of texts."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from emotune.data.datasets import load_dataset
from emotune.data.records import RECORDS_FILE, Record
from emotune.data.styles import StylesDocument, parse_styles
from emotune.data.textio import ReadReport
from emotune.errors import Cancelled, InvalidInput, NotFound
from emotune.jobs.runner import JobContext, JobRunner
from emotune.jobs.store import JobStore
from emotune.logging import get_logger
from emotune.models.loadable import check_embedder
from emotune.services.validator import metrics
from emotune.services.validator.calibration import Thresholds, calibration_for
from emotune.services.validator.config import ValidatorSettings
from emotune.services.validator.dataset import REPORT_FILE, OutputFiles, output_files
from emotune.services.validator.embedders import Embedder, EmbedderRegistry
from emotune.services.validator.instruments import measured
from emotune.services.validator.judge import Judge
from emotune.services.validator.report import build_report, render_plots
from emotune.services.validator.scoring import StyleIndexCache
from emotune.services.validator.spec import ValidationSpec
from emotune.services.validator.validation import Assessment, Progress, assess, validate_records
from emotune.store.artifacts import ArtifactManifest, file_key, publish_artifact, read_file, read_manifest
from emotune.store.base import ArtifactStore
from emotune.store.keys import validate_key

log = get_logger(__name__)

JOB_KIND = "validation"

PROGRESS_EVERY_SECONDS = 1.0


@dataclass
class ScoreResult:
    assessments: list[Assessment]
    # Means over all texts; a text that could not be scored (empty) counts 0.
    mean_similarity: float  # mean cosine to the style's reference texts
    style_score: float  # mean style lift (1.0 = as distinct from neutral text as the style's references)
    style_accuracy: float  # share of texts the style classifier (the judge where configured) reads as requested
    embedder: str
    classifier: str  # "judge (<model>)" or "centroid (<embedder>)"


class ValidatorCore:
    """Embedders (loaded once), their thresholds and the reference indexes; validates records into output
    files and scores texts. Used by the service and by the CLI."""

    def __init__(self, settings: ValidatorSettings) -> None:
        self.settings = settings
        self.embedders = EmbedderRegistry(settings.validator_device)
        self.indexes = StyleIndexCache()
        self._thresholds: dict[str, Thresholds] = {}
        self.judge = Judge(settings.validator_judge_base_url, settings.validator_judge_model,
                           settings.secret(settings.validator_judge_api_key_env),
                           concurrency=settings.validator_judge_concurrency) \
            if settings.validator_judge_base_url else None

    def embedder(self, name: str = "") -> tuple[Embedder, Thresholds]:
        """The named (or default) embedder and its calibrated thresholds."""
        embedder = self.embedders.get(self.allowed_embedder(name))
        if embedder.name not in self._thresholds:
            calibration = calibration_for(embedder, self.settings.cache_dir, self.settings.validator_batch_size)
            self._thresholds[embedder.name] = calibration.thresholds
        return embedder, self._thresholds[embedder.name]

    def allowed_embedder(self, name: str) -> str:
        """The embedder a request's ``name`` stands for: the operator's default when empty, else a registered one
        (emotune.models.loadable); anything else is refused before it is loaded."""
        if not name.strip() or name.strip() == self.settings.validator_embedder:
            return self.settings.validator_embedder
        return check_embedder(name, self.settings, "embedder")

    def instruments(self, embedder_name: str = "") -> dict[str, Any] | None:
        """The committed measurement of this service's instruments (its embedder and judge) on the labelled
        replies; None when that combination was never measured."""
        return measured(embedder_name or self.settings.validator_embedder,
                        self.judge.model if self.judge is not None else None)

    def validate(self, records: Sequence[Record], read_report: ReadReport, styles: StylesDocument,
                 embedder: Embedder, thresholds: Thresholds, on_progress: Progress | None = None,
                 keep_per_question: int = 0) -> OutputFiles:
        batch = self.settings.validator_batch_size
        outcome = validate_records(
            records, styles, embedder, thresholds, index=self.indexes.get(styles, embedder, batch),
            judge=self.judge, batch_size=batch, dedup_block_rows=self.settings.validator_dedup_block_rows,
            separability_max_samples=self.settings.validator_separability_max_samples,
            keep_per_question=keep_per_question, on_progress=on_progress,
        )
        report = build_report(outcome, styles, source=read_report.source, input_errors=read_report.errors)
        plots = render_plots(outcome, styles)
        report["plots"] = sorted(plots)
        return output_files(outcome.kept, outcome.rejected, report, plots)

    def score(self, texts: Sequence[str], style: str, styles_yaml: str, embedder_name: str = "",
              questions: Sequence[str] = ()) -> ScoreResult:
        """Scores of replies in ``style``. With ``questions`` (one per text, what each answers) sense is measured
        too, and the judge reads every reply."""
        if not styles_yaml.strip():
            raise InvalidInput("styles_yaml is required", field="styles_yaml")
        if len(texts) > self.settings.validator_score_max_texts:
            raise InvalidInput(f"{len(texts)} texts in one call; at most {self.settings.validator_score_max_texts}",
                               field="texts")
        styles = parse_styles(styles_yaml, source="styles_yaml")
        styles.get(style)  # unknown style -> InvalidInput naming the field
        if questions and len(questions) != len(texts):
            raise InvalidInput(f"{len(questions)} questions for {len(texts)} texts: give one per text, or none",
                               field="questions")
        embedder, thresholds = self.embedder(embedder_name)
        batch = self.settings.validator_batch_size
        index = self.indexes.get(styles, embedder, batch)
        judge = self.judge if questions else None
        assessments, _, _ = assess([[t] for t in texts], [style] * len(texts), styles, embedder, index, thresholds,
                                   questions=list(questions) or None, judge=judge, judge_all=True,
                                   batch_size=batch)
        metrics.SCORED_TEXTS.inc(len(texts))
        n = max(len(texts), 1)
        return ScoreResult(
            assessments,
            mean_similarity=sum(a.mean_similarity or 0.0 for a in assessments) / n,
            style_score=sum(a.style_lift or 0.0 for a in assessments) / n,
            style_accuracy=sum(a.predicted_style == style for a in assessments) / n,
            embedder=embedder.name,
            classifier=f"judge ({judge.model})" if judge is not None else f"centroid ({embedder.name})",
        )


class Validator:
    """Validation jobs (it owns their runner) and online scoring over one artifact store; embedders are loaded
    once and shared."""

    def __init__(self, settings: ValidatorSettings, store: ArtifactStore, core: ValidatorCore | None = None) -> None:
        self.settings, self.store = settings, store
        self.core = core or ValidatorCore(settings)
        self._stopping = threading.Event()
        self.jobs = JobStore(store)
        self.runner = JobRunner(self.jobs, JOB_KIND, self.run_job,
                                max_concurrent=settings.validator_max_concurrent_jobs,
                                lease_seconds=settings.job_lease_seconds)

    async def start_runner(self) -> list[str]:
        """Adopt the jobs nobody owns now and keep adopting (``JobRunner.start``); returns the adopted ids."""
        return await self.runner.start()

    async def shutdown(self) -> None:
        """Running passes stop at their next batch; their jobs stay unfinished for the next owner to resume."""
        self._stopping.set()
        await self.runner.shutdown()

    # ----------------------------------------------------------------- jobs
    def check_spec(self, spec: ValidationSpec) -> ValidationSpec:
        """Fail at submission, not minutes later: the styles parse, the dataset exists, the prefix is a key."""
        parse_styles(spec.styles_yaml, source="styles_yaml")
        self.core.allowed_embedder(spec.embedder)
        if spec.output_prefix:
            validate_key(spec.output_prefix)
        try:
            read_manifest(self.store, spec.dataset_artifact)
        except NotFound:
            if not self.store.exists(spec.dataset_artifact):
                raise NotFound(f"no dataset artifact or object at {spec.dataset_artifact!r}",
                               field="dataset_artifact") from None
        return spec

    async def run_job(self, ctx: JobContext) -> dict[str, Any]:
        """Publishes under this owner's prefix (``ctx.owned``: ``output_prefix`` for the job's creator,
        ``<output_prefix>/g<N>`` for the owner of generation N after a takeover), so an old owner's publish still
        under way (the pass runs in a thread its task's cancellation does not stop) never lands on this owner's
        keys; the result names the prefix published."""
        spec = ValidationSpec.model_validate(ctx.spec)
        given = (spec.output_prefix or f"validations/{ctx.job_id}").rstrip("/")
        return await asyncio.to_thread(self._run_job, ctx, spec, ctx.owned(given), ctx.earlier_owned(given))

    def _run_job(self, ctx: JobContext, spec: ValidationSpec, prefix: str, earlier: list[str]) -> dict[str, Any]:
        for owned in (prefix, *earlier):
            try:
                done = read_manifest(self.store, f"{owned}/report")
            except NotFound:
                continue
            # An owner (this one or an earlier one) published everything (the report last) and died before
            # finishing the job: its outputs are complete and published artifacts are immutable, so they stand.
            ctx.emit("log", "outputs already published; finishing", prefix=owned)
            report = json.loads(read_file(self.store, done.key_prefix, REPORT_FILE))
            return _result(owned, report)

        styles = parse_styles(spec.styles_yaml, source="styles_yaml")
        records, read_report = load_dataset(self.store, spec.dataset_artifact)
        if read_report.errors:
            ctx.emit("log", f"{len(read_report.errors)} bad line(s) in the dataset skipped",
                     first=[str(e) for e in read_report.errors[:5]])
        if not records:
            raise InvalidInput("the dataset holds no readable records", file=read_report.source,
                               field="dataset_artifact")
        embedder, calibrated = self.core.embedder(spec.embedder)
        thresholds = calibrated.override(spec.similarity_threshold, spec.off_style_margin, spec.dedup_threshold)
        ctx.emit("log", f"validating {len(records)} samples with {embedder.name}", embedder=embedder.name,
                 samples=len(records), **{f"threshold_{k}": v for k, v in vars(thresholds).items()})
        started = time.perf_counter()
        progress = _JobProgress(ctx, self._stopping)
        files = self.core.validate(records, read_report, styles, embedder, thresholds, on_progress=progress,
                                   keep_per_question=spec.keep_per_question)
        metrics.EMBED_SECONDS.observe(files.report["timings"]["embedding_s"])
        counts = files.report["counts"]
        metrics.SAMPLES.labels("kept").inc(counts["kept"])
        metrics.SAMPLES.labels("rejected").inc(counts["rejected"])
        for reason, n in files.report["reasons"].items():
            metrics.REJECTIONS.labels(reason).inc(n)

        progress.check()  # cancelled or shutting down during the last batch: publish nothing
        source = {"source_dataset": spec.dataset_artifact, "embedder": embedder.name}
        outputs = (
            ("kept", {RECORDS_FILE: files.kept}, {"kind": "dataset", "records": counts["kept"], **source}),
            ("rejected", {RECORDS_FILE: files.rejected},
             {"kind": "dataset", "records": counts["rejected"], "rejected": True, **source}),
            ("report", files.report_files(), {"kind": "validation-report", **source}),
        )
        for name, content, metadata in outputs:  # the report last: its presence means "all published"
            manifest = self._publish_once(f"{prefix}/{name}", content, metadata)
            ctx.emit("artifact", f"{name} published at {manifest.key_prefix}", name=name, key=manifest.key_prefix,
                     digest=manifest.digest)
        log.info("validation finished", job_id=ctx.job_id, seconds=round(time.perf_counter() - started, 2),
                 kept=counts["kept"], rejected=counts["rejected"])
        return _result(prefix, files.report)

    def _publish_once(self, prefix: str, files: dict[str, bytes], metadata: dict[str, Any]) -> ArtifactManifest:
        """Publish, or keep what an interrupted earlier attempt of this job already published there."""
        try:
            return read_manifest(self.store, prefix)
        except NotFound:
            return publish_artifact(self.store, prefix, files, metadata)


class _JobProgress:
    """Progress events at most once a second (and at the end); checks cancellation and shutdown each batch."""

    def __init__(self, ctx: JobContext, stopping: threading.Event) -> None:
        self.ctx, self.stopping = ctx, stopping
        self._last = 0.0

    def check(self) -> None:
        """Raise if the job was cancelled or the validator is shutting down."""
        if self.stopping.is_set():
            raise Cancelled("validator shutting down")
        self.ctx.raise_if_cancelled()

    def __call__(self, done: int, total: int, phase: str) -> None:
        if self.stopping.is_set():
            raise Cancelled("validator shutting down")
        now = time.monotonic()
        if 0 < done < total and now - self._last < PROGRESS_EVERY_SECONDS:
            return
        self._last = now
        self.check()
        what = "embedded" if phase == "embedding" else "judged"
        self.ctx.progress(done, total, f"{what} {done}/{total}", stage=phase)


def _result(prefix: str, report: dict[str, Any]) -> dict[str, Any]:
    """The job result: artifact keys (``<name>_artifact``, as the pipeline reads them), plot object keys and
    the report's headline numbers."""
    report_prefix = f"{prefix}/report"
    return {
        "kept_artifact": f"{prefix}/kept",
        "rejected_artifact": f"{prefix}/rejected",
        "report_artifact": report_prefix,
        "plots": {name: file_key(report_prefix, f"{name}.png") for name in report.get("plots", [])},
        **{k: report[k] for k in ("embedder", "thresholds", "counts", "reasons", "styles", "separability", "timings")},
    }
