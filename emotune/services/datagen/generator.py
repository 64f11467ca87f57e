"""The generation job: plan -> skip what the shards already hold -> ask the teacher concurrently -> write shards
as results arrive -> publish the dataset artifact (records, failures, stats).

A job handler for :class:`emotune.jobs.runner.JobRunner`; everything it needs to resume is in the stored spec and
the shards, so a restarted process (``resume_unfinished``) continues exactly where the last one stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from emotune.data.records import RECORDS_FILE, Message, Provenance, Record, dumps_records, parse_records
from emotune.data.styles import StylesDocument
from emotune.errors import Cancelled, EmotuneError, FailedPrecondition, NotFound
from emotune.jobs.runner import JobContext
from emotune.logging import get_logger
from emotune.services.datagen import metrics
from emotune.services.datagen.config import DatagenSettings
from emotune.services.datagen.plan import (
    PROMPT_VERSION,
    Plan,
    WorkItem,
    build_plan,
    fragment_of,
    parse_dialogue,
    parse_opening,
    with_opening,
)
from emotune.services.datagen.postprocess import PostProcessor
from emotune.services.datagen.questions import load_questions
from emotune.services.datagen.request_policy import ProviderLimits, RetryPolicy, TeacherCaller
from emotune.services.datagen.shards import Failure, Outcome, ShardWriter, read_shards
from emotune.services.datagen.spec import GenerationSpec, teacher_access
from emotune.services.datagen.teachers import FailureKind, TeacherError, build_teacher
from emotune.store.artifacts import ArtifactManifest, publish_artifact, read_file, read_manifest
from emotune.store.base import ArtifactStore

log = get_logger(__name__)
JOB_KIND = "datagen"


@dataclass
class DatagenDeps:
    """What the service shares with every job: settings, the store, process-wide provider limits, rules."""

    settings: DatagenSettings
    store: ArtifactStore
    limits: ProviderLimits
    postprocessor: PostProcessor


def plan_job(spec: GenerationSpec, store: ArtifactStore) -> tuple[StylesDocument, Plan, list[str]]:
    """The job's styles, plan, and the unreadable lines of its question file (as messages)."""
    doc = spec.styles()
    samples: list[Record] = []
    if spec.mode == "combinatorial":
        questions, dialogues, source, errors = [], [], "combinatorial", []
    elif spec.mode == "context":
        text = read_file(store, spec.samples_artifact, RECORDS_FILE).decode("utf-8")
        samples, _ = parse_records(text, f"{spec.samples_artifact}/{RECORDS_FILE}", strict=True)
        questions, dialogues, source, errors = [], [], spec.samples_artifact, []
    else:
        loaded = load_questions(store, spec.questions)
        questions, dialogues, source, errors = loaded.questions, loaded.dialogues, loaded.source, loaded.errors
    plan = build_plan(doc, spec.style_names, spec.mode, questions=questions, dialogues=dialogues,
                      variants=spec.variants_per_question, seed=spec.seed, source=source, samples=samples)
    return doc, plan, [str(e) for e in errors]


class _Tally:
    """Counts for progress events: per style ok / failed / skipped, this process's throughput, ETA."""

    def __init__(self, plan: Plan, outcomes: dict[str, Outcome]) -> None:
        self.total = plan.total
        self.per_style: dict[str, Counter[str]] = defaultdict(Counter)
        for item in plan.items:
            self.per_style[item.style]["total"] += 1
        for style, reasons in plan.skipped.items():
            self.per_style[style]["skipped"] += sum(reasons.values())
        self.started, self.finished_here = time.monotonic(), 0
        planned = {item.id for item in plan.items}
        for outcome in outcomes.values():
            if outcome.finished and outcome.id in planned:
                self.per_style[outcome.style]["ok" if outcome.ok else "failed"] += 1

    def add(self, outcome: Outcome) -> None:
        self.per_style[outcome.style]["ok" if outcome.ok else "failed"] += 1
        self.finished_here += 1

    def snapshot(self) -> dict[str, Any]:
        ok = sum(c["ok"] for c in self.per_style.values())
        failed = sum(c["failed"] for c in self.per_style.values())
        elapsed = time.monotonic() - self.started
        rate = self.finished_here / elapsed if elapsed > 0 else 0.0
        remaining = self.total - ok - failed
        return {
            "done": ok + failed, "total": self.total, "ok": ok, "failed": failed,
            "skipped": sum(c["skipped"] for c in self.per_style.values()),
            "per_style": {s: {k: c[k] for k in ("total", "ok", "failed", "skipped")} for s, c in self.per_style.items()},
            "rate_per_s": round(rate, 2), "eta_s": round(remaining / rate, 1) if rate > 0 else None,
        }


class GenerationJob:
    def __init__(self, ctx: JobContext, deps: DatagenDeps) -> None:
        self.ctx, self.deps, self.settings = ctx, deps, deps.settings
        self.spec = GenerationSpec.model_validate(ctx.spec)
        self.caller: TeacherCaller | None = None

    async def run(self) -> dict[str, Any]:
        spec, store = self.spec, self.deps.store
        doc, plan, read_errors = await asyncio.to_thread(plan_job, spec, store)
        for error in read_errors[:20]:
            self.ctx.emit("log", f"skipped unreadable question: {error}")
        # This owner writes under its own prefix (``ctx.owned``: output_prefix for the job's creator,
        # <output_prefix>/g<N> after a takeover), so an old owner's late shard or publish never lands on its keys.
        self.prefix = self.ctx.owned(spec.output_prefix)
        earlier = self.ctx.earlier_owned(spec.output_prefix)
        for owned in (self.prefix, *earlier):
            try:
                manifest = await asyncio.to_thread(read_manifest, store, owned)
                return self._result(manifest)  # published before a crash: nothing left to do
            except NotFound:
                pass
        outcomes: dict[str, Outcome] = {}
        for owned in reversed(earlier):  # what earlier owners finished is reused, the newest owner's last
            theirs, _ = await asyncio.to_thread(read_shards, store, f"{owned}/shards")
            outcomes.update({sample: outcome for sample, outcome in theirs.items() if outcome.finished})
        mine, next_shard = await asyncio.to_thread(read_shards, store, f"{self.prefix}/shards")
        outcomes.update(mine)
        pending = [item for item in plan.items if not (item.id in outcomes and outcomes[item.id].finished)]
        if self.ctx.resumed or spec.resumed_from:
            self.ctx.emit("log", f"resuming: {plan.total - len(pending)} of {plan.total} samples already done",
                          already_done=plan.total - len(pending))
        self.tally = _Tally(plan, outcomes)
        self.writer = ShardWriter(store, f"{self.prefix}/shards", self.settings.datagen_shard_size, next_shard)
        self.styles = {s.name: s for s in doc.styles}
        self.outcomes = outcomes
        if pending:
            await self._generate(pending)
        message, data = self._progress()
        await asyncio.to_thread(self.ctx.emit, "progress", message, **data)
        return await asyncio.to_thread(self._publish, plan)

    # ----- generation -----
    async def _generate(self, pending: list[WorkItem]) -> None:
        teacher_spec = self.spec.teacher
        provider, base_url, api_key = await asyncio.to_thread(teacher_access, teacher_spec, self.settings)
        teacher = build_teacher(provider, base_url, teacher_spec.model, api_key, teacher_spec.timeout_seconds,
                                teacher_spec.max_concurrency, teacher_spec.prompt_format,
                                request_chosen=not teacher_spec.name)
        limiter = self.deps.limits.get(provider, base_url)
        policy = RetryPolicy(teacher_spec.max_retries, self.settings.datagen_backoff_initial_seconds,
                             self.settings.datagen_backoff_max_seconds)
        self.caller = TeacherCaller(teacher, limiter, policy, teacher_spec.requests_per_second)
        queue = iter(pending)
        workers = min(teacher_spec.max_concurrency, len(pending))
        try:
            async with asyncio.TaskGroup() as group:
                ticker = group.create_task(self._tick())
                tasks = [group.create_task(self._work(queue)) for _ in range(workers)]
                await asyncio.gather(*tasks)
                ticker.cancel()
        except BaseExceptionGroup as group_error:
            raise _primary(group_error) from None
        finally:
            await self.writer.flush()
            await teacher.aclose()

    async def _work(self, queue: Iterator[WorkItem]) -> None:
        """One worker: the workers share ``queue``, so each item is taken exactly once."""
        for item in queue:
            outcome = await self._sample(item)
            self.outcomes[item.id] = outcome
            self.tally.add(outcome)
            metrics.SAMPLES.labels("ok" if outcome.ok else "failed").inc()
            await self.writer.add(outcome)

    async def _tick(self) -> None:
        """Time-based shard flushes, progress events, and cancellation checks while workers run."""
        interval = min(self.settings.datagen_progress_seconds, self.settings.datagen_flush_seconds) / 2
        last_progress = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            if self.writer.age() >= self.settings.datagen_flush_seconds:
                await self.writer.flush()
            if time.monotonic() - last_progress >= self.settings.datagen_progress_seconds:
                last_progress = time.monotonic()
                message, data = self._progress()  # counted here, on the loop; only the write goes to a thread
                await asyncio.to_thread(self.ctx.emit, "progress", message, **data)
                if await asyncio.to_thread(self.ctx.cancel_requested):
                    raise Cancelled(f"job {self.ctx.job_id} cancelled")

    def _progress(self) -> tuple[str, dict[str, Any]]:
        snap = self.tally.snapshot()
        return f"{snap['done']}/{snap['total']}", {
            **snap, "in_flight": self.caller.in_flight if self.caller else 0, "shards": self.writer.shards_written,
            # > 0 while the provider's Retry-After holds every request back
            "held_s": round(self.caller.limiter.held_for, 2) if self.caller else 0.0}

    async def _sample(self, item: WorkItem) -> Outcome:
        style = self.styles[item.style]
        try:
            # Stop strings end single replies only: a dialogue or an opening is JSON spanning lines.
            answer = await self.caller.ask(item.prompt, temperature=style.temperature,
                                           max_tokens=self.spec.teacher.max_tokens,
                                           stop=self.spec.teacher.stop if item.expects == "reply" else (),
                                           parse=self._parser(item))
        except TeacherError as exc:
            if exc.kind is FailureKind.FATAL:
                raise FailedPrecondition(
                    f"teacher {self.spec.teacher.provider} at {self.spec.teacher.base_url or 'default URL'} "
                    f"(model {self.spec.teacher.model}) refused: {exc.reason}: {exc.message}", reason=exc.reason,
                ) from None
            return self._failure(item, exc.reason, "final" if exc.kind is FailureKind.FINAL else "exhausted",
                                 exc.message, status=exc.status, code=exc.code, attempts=exc.attempts,
                                 retry_reasons=exc.retry_reasons)
        applied: list[str] = []

        def clean(text: str) -> str:
            cleaned, rules = self.deps.postprocessor.apply(text, style)
            applied.extend(r for r in rules if r not in applied)
            return cleaned

        if item.expects == "opening":  # the person's words are theirs: no post-processing
            reply_messages = with_opening(answer.parsed, fragment_of(item.sample))
        elif item.expects == "dialogue":
            reply_messages = [Message(role=m.role, content=clean(m.content) if m.role == "assistant" else m.content)
                              for m in answer.parsed]
        else:
            reply_messages = [Message(role="assistant", content=clean(answer.reply.text))]
        if any(not m.content for m in reply_messages):
            return self._failure(item, "empty_after_postprocess", "final",
                                 f"post-processing ({', '.join(applied)}) left an empty reply",
                                 attempts=answer.attempts)
        provenance = Provenance(
            teacher=self.spec.teacher.provider, model=answer.reply.model, temperature=style.temperature,
            prompt_version=PROMPT_VERSION, raw_response=answer.reply.text, source=f"{self.ctx.job_id}:{item.source}",
            base_url=self.spec.teacher.base_url, finish_reason=answer.reply.finish_reason,
            response_id=answer.reply.response_id, usage=answer.reply.usage, attempts=answer.attempts,
            retry_reasons=answer.retry_reasons, postprocess=applied,
            prompt_sha256=hashlib.sha256(json.dumps(item.prompt, ensure_ascii=False).encode()).hexdigest(),
        )
        record = Record(id=item.id, style=item.style, messages=[*item.context, *reply_messages],
                        provenance=provenance, meta={"mode": item.mode, "variant": item.variant, **item.meta})
        return Outcome(id=item.id, style=item.style, record=record)

    @staticmethod
    def _parser(item: WorkItem) -> Callable[[str], Any] | None:
        if item.expects == "dialogue":
            return parse_dialogue
        if item.expects == "opening":
            fragment = fragment_of(item.sample)
            return lambda text: parse_opening(text, fragment)
        return None

    def _failure(self, item: WorkItem, reason: str, kind: str, message: str, *, status: int | None = None,
                 code: str = "", attempts: int = 0, retry_reasons: list[str] | None = None) -> Outcome:
        failure = Failure(id=item.id, style=item.style, mode=item.mode, variant=item.variant, source=item.source,
                          reason=reason, kind=kind, message=message[:500], status=status, code=code,
                          attempts=attempts, retry_reasons=retry_reasons or [],
                          prompt=item.prompt[-1]["content"][:500])
        return Outcome(id=item.id, style=item.style, failure=failure)

    # ----- publishing -----
    def _publish(self, plan: Plan) -> dict[str, Any]:
        records, failures = [], []
        for item in plan.items:  # plan order: a resumed run publishes exactly what an uninterrupted one does
            outcome = self.outcomes.get(item.id)
            if outcome is None:
                raise FailedPrecondition(f"sample {item.id} has no outcome; the job cannot be published")
            if outcome.ok:
                records.append(outcome.record)
            else:
                failures.append(outcome.failure)
                if item.sample is not None:  # mode context: a sample the teacher wrote no opening for stays as it was
                    records.append(item.sample)
        stats = dataset_stats(self.spec, plan, records, failures)
        files = {
            "records.jsonl": dumps_records(records).encode("utf-8"),
            "failures.jsonl": "".join(f.model_dump_json() + "\n" for f in failures).encode("utf-8"),
            "stats.json": json.dumps(stats, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8"),
        }
        metadata = {"kind": "dataset", "format": "emotune.data.records/v1", "job_id": self.ctx.job_id,
                    "records": len(records), "failures": len(failures), "styles": sorted({i.style for i in plan.items}),
                    "mode": self.spec.mode, "teacher": self.spec.teacher.provider, "model": self.spec.teacher.model,
                    "prompt_version": PROMPT_VERSION}
        manifest = publish_artifact(self.deps.store, self.prefix, files, metadata)
        self.ctx.emit("artifact", f"dataset published at {manifest.key_prefix}", key=manifest.key_prefix,
                      digest=manifest.digest, records=len(records), failures=len(failures))
        return self._result(manifest)

    def _result(self, manifest: ArtifactManifest) -> dict[str, Any]:
        return {"dataset_artifact": manifest.key_prefix, "digest": manifest.digest,
                "records": manifest.metadata.get("records", 0), "failures": manifest.metadata.get("failures", 0)}


def dataset_stats(spec: GenerationSpec, plan: Plan, records: list[Record], failures: list[Failure]) -> dict[str, Any]:
    """Numbers a person checks before training: per style counts, why samples failed, which clean-ups fired."""
    per_style: dict[str, Counter[str]] = defaultdict(Counter)
    for item in plan.items:
        per_style[item.style]["planned"] += 1
    for record in records:
        per_style[record.style or ""]["ok"] += 1
    for failure in failures:
        per_style[failure.style]["failed"] += 1
    postprocess = Counter(rule for r in records for rule in (r.provenance.model_extra or {}).get("postprocess", []))
    retries = Counter(reason for r in records for reason in (r.provenance.model_extra or {}).get("retry_reasons", []))
    retries.update(reason for f in failures for reason in f.retry_reasons)
    return {
        "mode": spec.mode, "prompt_version": PROMPT_VERSION,
        "teacher": {"provider": spec.teacher.provider, "base_url": spec.teacher.base_url, "model": spec.teacher.model},
        "planned": plan.total, "ok": len(records), "failed": len(failures), "skipped": plan.skipped_count(),
        "per_style": {s: {**dict(c), "skipped": plan.skipped.get(s, {})} for s, c in per_style.items()},
        "failure_reasons": dict(Counter(f.reason for f in failures)),
        "failure_kinds": dict(Counter(f.kind for f in failures)),
        "postprocess": dict(postprocess), "retries": dict(retries),
    }


def _primary(group: BaseExceptionGroup) -> BaseException:
    """The exception that stopped the workers (a domain error first, cancellation last)."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    for kinds in ((EmotuneError,), (Exception,)):
        for leaf in leaves:
            if isinstance(leaf, kinds):
                return leaf
    return leaves[0] if leaves else group


async def run_generation(ctx: JobContext, deps: DatagenDeps) -> dict[str, Any]:
    """The ``datagen`` job handler."""
    return await GenerationJob(ctx, deps).run()
