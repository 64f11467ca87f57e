"""The fine-tuning pipeline: one job drives datagen -> validator -> trainer -> serving -> evaluation.

Each stage is a job in another service, reached over gRPC. The pipeline job's checkpoint (in the JobStore)
records the stage reached, each sub-job's id and the last event seen, so the replica that takes a job over (after
its owner died, see :mod:`emotune.jobs.leases`) re-attaches to the running sub-job and continues from where it
stopped; a failed sub-job fails the pipeline with that stage's error.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from emotune.data.formats import parse_dataset
from emotune.data.importers import parse_questions
from emotune.data.preference import parse_preference_jsonl
from emotune.data.records import RECORDS_FILE, dumps_records, parse_records
from emotune.data.styles import StylesDocument, dump_styles, parse_styles
from emotune.data.textio import decode_bytes
from emotune.errors import Cancelled, EmotuneError, FailedPrecondition, InvalidInput
from emotune.fine_tuning.protocol import (
    CreateFineTuningJob,
    GenerationOptions,
    TeacherOptions,
    TrainingOptions,
    VoiceOptions,
)
from emotune.grpc.client import open_channel, to_domain_error
from emotune.jobs.runner import JobContext
from emotune.logging import get_logger
from emotune.services.pipeline.evaluation import StyleEvaluator
from emotune.services.pipeline.pairs import build_pairs
from emotune.services.pipeline.voice_eval import VoiceEvaluator
from emotune.settings import Settings
from emotune.store.artifacts import publish_artifact, read_file
from emotune.store.base import ArtifactStore
from emotune.store.files import FileService
from emotune.v1 import (
    datagen_pb2,
    datagen_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
    validator_pb2,
    validator_pb2_grpc,
)
from emotune.voice.job import VOICE_STYLE, probe_styles_yaml
from emotune.voice.job import prepare as prepare_voice

log = get_logger(__name__)

# An opening is optional: a teacher that writes none usable in two tries leaves the sample as it was, instead of
# backing off for a minute per sample (datagen's default for answers, which a job cannot do without).
OPENING_RETRIES = 1
STAGES = ("validating_files", "datagen", "validation", "pairs", "training", "serving", "evaluation")
# The base model's rejected replies (DPO pairs): as long as a chosen reply may be, with room for its rambling.
PAIR_MAX_TOKENS = 160
# Save the sub-job stream offset at most this often (each save is one small store write).
CHECKPOINT_EVERY_SECONDS = 1.0
# Loading a merged model on CPU takes a while; longer than the default unary deadline.
LOAD_DEADLINE_SECONDS = 600.0
# How long a stage's service may be unreachable (e.g. restarting) before the pipeline gives up on it.
SERVICE_OUTAGE_TOLERANCE_SECONDS = 300.0
RECONNECT_SECONDS = 2.0
# Evaluation reports per reply (~150 a job); one event per this many seconds is enough to follow it.
EVALUATION_PROGRESS_SECONDS = 2.0


class StageFailed(EmotuneError):
    """A stage's sub-job failed; the message carries the stage and its error."""


@dataclass
class ServiceChannels:
    """gRPC channels to the services the pipeline drives."""

    datagen: grpc.aio.Channel
    validator: grpc.aio.Channel
    trainer: grpc.aio.Channel
    inference: grpc.aio.Channel

    @classmethod
    def open(cls, settings: Settings) -> ServiceChannels:
        """Channels to each ``<service>_addr`` of the settings (inside the running event loop)."""
        return cls(*(open_channel(getattr(settings, f"{name}_addr"), settings)
                     for name in ("datagen", "validator", "trainer", "inference")))

    async def close(self) -> None:
        for channel in (self.datagen, self.validator, self.trainer, self.inference):
            await channel.close()


def teacher_config(base_model: str, options: TeacherOptions | None,
                   zhipuai_available: bool) -> datagen_pb2.TeacherConfig:
    """The job's teacher, one of datagen's named teachers (datagen refuses unknown names and, unless its operator
    allows them, URLs of the job's own); when the job names none: ZhipuAI if a key is configured, else datagen's
    "default" teacher (emotune's own gateway, no network, no key from the user) with the model its operator set —
    the embedded stack's packaged 1.5B — or, where none is set, the job's base model few-shot. The job's base model
    travels as ``student_model``, never as ``model``: that would override the operator's teacher."""
    if options is not None:
        return datagen_pb2.TeacherConfig(
            name=options.name, provider=options.provider, base_url=options.base_url, model=options.model,
            max_concurrency=options.max_concurrency, student_model=base_model,
        )
    if zhipuai_available:
        return datagen_pb2.TeacherConfig(name="zhipuai", student_model=base_model)
    return datagen_pb2.TeacherConfig(name="default", student_model=base_model)


def validation_styles(styles_yaml: str, marker_hits: int | None) -> str:
    """The styles the validator checks against: the job's own, with every style's required marker count replaced
    when the job asks (a small offline teacher rarely writes a style's exact emoji / 语气词, so its data is
    filtered by the embedding checks and its markers are only scored)."""
    if marker_hits is None:
        return styles_yaml
    document = parse_styles(styles_yaml, "styles_yaml")
    for style in document.styles:
        if style.markers is not None:
            style.markers.min_hits = marker_hits
    return dump_styles(document)


def fine_tuned_model_id(base_model: str, suffix: str | None, job_id: str) -> str:
    """``ft-<base>-<suffix>-<the job id's random part>``: as unique as the job id (96 bits for ``ftjob-<24 hex>``;
    it once kept only 8 hex digits, and two jobs of different projects could get one id: the second publish then
    served the first project's name with the second's model). No ':' inside: ``<model>:<style>`` stays
    unambiguous for fine-tuned models too."""
    unique = job_id.removeprefix("ftjob-")
    return f"ft-{base_model}-{suffix or 'emotune'}-{unique}".replace(":", "-")


class Pipeline:
    def __init__(self, store: ArtifactStore, files: FileService, channels: ServiceChannels,
                 zhipuai_available: bool = False) -> None:
        self.store, self.files, self.zhipuai_available = store, files, zhipuai_available
        self.datagen = datagen_pb2_grpc.DatagenStub(channels.datagen)
        self.validator = validator_pb2_grpc.ValidatorStub(channels.validator)
        self.trainer = trainer_pb2_grpc.TrainerStub(channels.trainer)
        self.inference = inference_pb2_grpc.InferenceStub(channels.inference)
        self.job_stubs = {
            "datagen": jobs_pb2_grpc.JobsStub(channels.datagen),
            "validation": jobs_pb2_grpc.JobsStub(channels.validator),
            "training": jobs_pb2_grpc.JobsStub(channels.trainer),
        }
        self.evaluator = StyleEvaluator(self.inference, self.validator)
        self.voice_evaluator = VoiceEvaluator(self.inference, self.validator)

    # ------------------------------------------------------------------ the job
    async def run(self, ctx: JobContext) -> dict[str, Any]:
        request = CreateFineTuningJob.model_validate(ctx.spec["request"])
        run = _Run(ctx, dict(ctx.checkpoint))
        options = request.emotune
        styles = self._styles(request)
        selected = (options.styles if options and options.styles else styles.names) if styles else []

        files = await run.once("validating_files", lambda: self._validate_files(request, styles, selected))
        voice = files.get("voice")  # a voice job (docs/voice.md): the export's cleaning report, held-out sessions
        if voice and "validating_files" not in run.checkpoint.get("voice_reported", []):
            for line in voice["report_lines"]:
                ctx.emit("log", f"voice: {line}", stage="validating_files")
            run.checkpoint["voice_reported"] = ["validating_files"]
        kept: dict[str, int] | None = None  # kept training samples per style (unknown for a given dataset)
        if files.get("training_dataset"):
            dataset = files["training_dataset"]
            if voice and options.voice and options.voice.context_teacher is not None:
                dataset = await self._voice_openings(run, request, voice, dataset, options.voice.context_teacher)
        else:
            generated = await run.remote(
                "datagen", self.job_stubs["datagen"], ctx.outputs("datasets"),
                lambda prefix: self.datagen.StartGeneration(self._generation_spec(
                    prefix, request, styles, selected, files["train_questions"])),
            )
            validated = await run.remote(
                "validation", self.job_stubs["validation"], ctx.outputs("validated"),
                lambda prefix: self.validator.StartValidation(validator_pb2.ValidationSpec(
                    dataset_artifact=_artifact_key(generated, "dataset"),
                    styles_yaml=validation_styles(files["styles_yaml"], options.validation.marker_hits),
                    embedder=options.validation.embedder,
                    similarity_threshold=options.validation.similarity_threshold,
                    dedup_threshold=options.validation.dedup_threshold,
                    output_prefix=prefix,
                    keep_per_question=generation_candidates(options.generation)[1],
                )),
            )
            dataset = _artifact_key(validated, "kept")
            kept = {name: int(info.get("kept", 0)) for name, info in validated.get("styles", {}).items()}
            if request.training_method.type == "dpo":
                paired = await run.once("pairs", lambda: self._pairs(ctx, request, dataset))
                dataset = paired["dataset"]
        training_options = options.training if options else TrainingOptions()
        if kept is not None and len(selected) > 1 and training_options.adapters == "per_style":
            trained = await run.once("training", lambda: self._train_per_style(run, request, dataset, selected))
        else:
            trained = await run.remote(
                "training", self.job_stubs["training"], ctx.outputs("models"),
                lambda prefix: self.trainer.StartTraining(self._training_spec(prefix, request, dataset)),
                on_event=run.collect_checkpoint,
            )
        # A job served before its id scheme changed keeps the id it was served under.
        served = run.checkpoint["stages"].get("serving", {})
        model_id = (served.get("result", {}).get("model_id") if served.get("status") == "succeeded" else None) \
            or fine_tuned_model_id(request.model, request.suffix, ctx.job_id)
        style_adapters = trained.get("style_adapters", {})
        triggers = [
            inference_pb2.StyleTrigger(style=name, system_prompt=styles.get(name).serving_prompt,
                                       adapter_artifact=style_adapters.get(name, ""))
            for name in selected
        ]
        if voice:
            triggers = [inference_pb2.StyleTrigger(style=VOICE_STYLE, system_prompt=voice["trigger"])]
        await run.once("serving", lambda: self._load(model_id, request.model, trained, triggers))
        evaluation = {}
        voice_options = options.voice if options and options.voice else VoiceOptions()
        if voice and voice_options.held_out_samples and voice["held_out"]:
            evaluation = await run.once("evaluation", lambda: self.voice_evaluator.evaluate(
                voice["held_out"][:voice_options.held_out_samples], voice["probe_references"], voice["trigger"],
                base_model=request.model, tuned_model=model_id, probe_contexts=voice.get("probe_contexts"),
                max_tokens=voice_options.max_tokens,
                seed=request.seed or 0, train_samples=voice["train_samples"],
                progress=lambda done, total: ctx.progress(
                    done, total, f"evaluation: {done}/{total} replies written and read",
                    every_s=EVALUATION_PROGRESS_SECONDS, stage="evaluation")))
            if options and options.evaluation.gate == "none":
                evaluation = {**evaluation, "promoted": True,
                              "verdict": f"promoted without a gate (gate: none); {evaluation['verdict']}"}
            ctx.emit("log", f"evaluation: {evaluation['verdict']}", stage="evaluation",
                     promoted=evaluation["promoted"])
        elif styles and options and options.evaluation.questions_per_style and files.get("held_out"):
            evaluation = await run.once("evaluation", lambda: self.evaluator.evaluate(
                styles, selected, files["held_out"], base_model=request.model,
                tuned_model=model_id, max_tokens=options.evaluation.max_tokens, seed=request.seed or 0,
                tuned_styles=True,
                progress=lambda done, total: ctx.progress(
                    done, total, f"evaluation: {done}/{total} replies written and read",
                    every_s=EVALUATION_PROGRESS_SECONDS, stage="evaluation"),
                train_samples=kept,
            ))
            if options.evaluation.gate == "none":
                evaluation = {**evaluation, "promoted": True,
                              "verdict": f"promoted without a gate (gate: none); {evaluation['verdict']}"}
            # Not promoted is an outcome, not a failure: the model stays served under its id, marked so.
            ctx.emit("log", f"evaluation: {evaluation['verdict']}", stage="evaluation",
                     promoted=evaluation["promoted"])
        return {
            "fine_tuned_model": model_id, "dataset": dataset, "training": trained,
            "evaluation": evaluation, "styles": [VOICE_STYLE] if voice else selected,
        }

    # ------------------------------------------------------------------ stages
    def _styles(self, request: CreateFineTuningJob) -> StylesDocument | None:
        options = request.emotune
        if options is None:
            return None
        if options.styles_file:
            content = self.files.content(options.styles_file)
            return parse_styles(decode_bytes(content, options.styles_file), options.styles_file)
        if options.styles_yaml:
            return parse_styles(options.styles_yaml, "emotune.styles_yaml")
        return None

    async def _validate_files(self, request: CreateFineTuningJob, styles: StylesDocument | None,
                              selected: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name in selected:
            styles.get(name)  # unknown style names fail here, naming the field
        if styles is not None:
            result["styles_yaml"] = dump_styles(styles)
        if request.training_file and (request.emotune and request.emotune.voice
                                      or self.files.get(request.training_file).purpose == "emotune-voice"):
            dataset, voice = await asyncio.to_thread(self._import_voice, request)
            result.update(training_dataset=dataset, voice=voice)
            return result
        if request.training_file:
            result["training_dataset"] = await asyncio.to_thread(self._import_training_file, request)
            return result
        questions = await asyncio.to_thread(self._questions, request)
        per_style = request.emotune.evaluation.questions_per_style
        rng = random.Random(request.seed or 0)
        shuffled = questions[:]
        rng.shuffle(shuffled)
        held_out = shuffled[:per_style] if len(shuffled) > per_style * 2 else []
        held_out_set = set(held_out)
        train = [q for q in questions if q not in held_out_set]
        limit = request.emotune.generation.questions.limit
        result.update(train_questions=train[:limit] if limit else train, held_out=held_out)
        return result

    def _questions(self, request: CreateFineTuningJob) -> list[str]:
        source = request.emotune.generation.questions
        questions = list(source.questions)
        if source.file:
            meta = self.files.get(source.file)
            text = decode_bytes(self.files.content(source.file), meta.filename)
            imported = parse_questions(text, source.format, source=meta.filename, field_path=source.field_path)
            questions += imported.questions
        unique = list(dict.fromkeys(q.strip() for q in questions if q.strip()))
        if not unique:
            raise InvalidInput("no questions: give emotune.generation.questions.file or .questions",
                               field="emotune.generation.questions")
        return unique

    def _import_training_file(self, request: CreateFineTuningJob) -> str:
        """The uploaded OpenAI chat JSONL (already checked at upload) as a dataset artifact of records."""
        meta = self.files.get(request.training_file)
        if meta.purpose != "fine-tune":
            raise InvalidInput(f"file {meta.id} has purpose {meta.purpose!r}, expected 'fine-tune'",
                               field="training_file")
        text = decode_bytes(self.files.content(request.training_file), meta.filename)
        if meta.emotune.get("format") == "preference":  # pairs: DPO trains on them, SFT on the preferred outputs
            records = parse_preference_jsonl(text, meta.filename)
        else:
            records, _report = parse_dataset(text, "openai", source=meta.filename, strict=True)
        key = f"datasets/{meta.id}"
        publish_artifact(self.store, key, {RECORDS_FILE: dumps_records(records).encode("utf-8")},
                         {"kind": "dataset", "source_file": meta.id, "records": len(records)})
        return key

    def _import_voice(self, request: CreateFineTuningJob) -> tuple[str, dict[str, Any]]:
        """A chat export (purpose emotune-voice) read, cleaned and split by session (``emotune.voice``): the
        person's replies with their context as a dataset artifact, and the held-out sessions for the evaluation."""
        meta = self.files.get(request.training_file)
        if meta.purpose != "emotune-voice":
            raise InvalidInput(f"a voice job trains on a chat export uploaded with purpose 'emotune-voice'; file "
                               f"{meta.id} has purpose {meta.purpose!r}", field="training_file")
        data = prepare_voice(self.files.content(meta.id), meta.filename,
                             request.emotune.voice if request.emotune else None,
                             seed=request.seed or 0)
        if not data.records:
            raise InvalidInput("no training samples left after cleaning: " + "; ".join(data.report.lines()),
                               file=meta.filename)
        key = f"datasets/{meta.id}-voice-{request.seed or 0}"
        publish_artifact(self.store, key, {RECORDS_FILE: dumps_records(data.records).encode("utf-8")},
                         {"kind": "dataset", "source_file": meta.id, "records": len(data.records), "voice": True})
        return key, data.summary()

    async def _voice_openings(self, run: _Run, request: CreateFineTuningJob, voice: dict[str, Any], samples: str,
                              teacher: TeacherOptions) -> str:
        """Seed 003's step for a voice job: datagen's mode ``context`` has the teacher write the other side's opening
        before each training sample; the dataset it publishes holds every sample (unchanged where it wrote none)."""
        fresh = run.checkpoint["stages"].get("datagen", {}).get("status") != "succeeded"
        openings_teacher = teacher_config(request.model, teacher, self.zhipuai_available)
        openings_teacher.max_retries = OPENING_RETRIES
        generated = await run.remote(
            "datagen", self.job_stubs["datagen"], run.ctx.outputs("datasets"),
            lambda prefix: self.datagen.StartGeneration(datagen_pb2.GenerationSpec(
                styles_yaml=probe_styles_yaml(voice["probe_references"], voice["trigger"]), style_names=[VOICE_STYLE],
                mode="context", samples_artifact=samples, teacher=openings_teacher,
                seed=request.seed or 0, output_prefix=prefix)),
        )
        if fresh:
            failed, total = int(generated.get("failures", 0)), int(generated.get("records", 0))  # JSON numbers
            run.ctx.emit("log", f"voice: the teacher wrote an opening for {total - failed} of {total} training "
                         f"samples; {failed} kept as they were (the dataset's failures.jsonl says why)",
                         stage="datagen", openings=total - failed, unchanged=failed)
        return _artifact_key(generated, "dataset")

    async def _pairs(self, ctx: JobContext, request: CreateFineTuningJob, kept_dataset: str) -> dict[str, Any]:
        """Preference pairs for DPO from the kept teacher answers (``emotune.services.pipeline.pairs``)."""
        text = await asyncio.to_thread(read_file, self.store, kept_dataset, RECORDS_FILE)
        kept, _ = parse_records(text.decode("utf-8"), kept_dataset, strict=True)
        slots = (await self.inference.ListModels(inference_pb2.ListModelsRequest())).max_concurrency
        pairs, report = await build_pairs(
            self.inference, kept, request.model, max_tokens=PAIR_MAX_TOKENS, seed=request.seed or 0, slots=slots,
            rejected_source=request.emotune.training.pairs_rejected,
            progress=lambda done, total: ctx.progress(done, total, f"pairs: {done}/{total} base-model replies",
                                                      every_s=EVALUATION_PROGRESS_SECONDS, stage="pairs"))
        best_of = request.emotune.generation.best_of if request.emotune and request.emotune.generation else 1
        for line in report.lines(best_of):
            ctx.emit("log", line, stage="pairs")
        key = ctx.outputs("pairs")
        await asyncio.to_thread(publish_artifact, self.store, key,
                                {RECORDS_FILE: dumps_records(pairs).encode("utf-8")},
                                {"kind": "dataset", "pairs": len(pairs), "source_dataset": kept_dataset})
        return {"dataset": key, "styles": {name: vars(info) for name, info in report.styles.items()}}

    def _generation_spec(self, output_prefix: str, request: CreateFineTuningJob, styles: StylesDocument,
                         selected: list[str], questions: list[str]) -> datagen_pb2.GenerationSpec:
        generation = request.emotune.generation
        return datagen_pb2.GenerationSpec(
            styles_yaml=dump_styles(styles), style_names=selected,
            questions=datagen_pb2.QuestionSource(questions=questions),
            teacher=teacher_config(request.model, generation.teacher, self.zhipuai_available),
            mode=generation.mode, variants_per_question=generation_candidates(generation)[0],
            seed=request.seed or 0, output_prefix=output_prefix,
        )

    async def _train_per_style(self, run: _Run, request: CreateFineTuningJob, dataset: str,
                               selected: list[str]) -> dict[str, Any]:
        """One LoRA adapter per style, each trained on that style's records only (one trainer sub-job each, in
        turn). A shared adapter must tell the styles apart by their short triggers, and on held-out questions it
        often did not: asked for 毒舌 it opened with 抱抱你 on 3 to 6 of 16 (docs/trainer.md). The result is the
        first style's (what the plain model id serves) with every style's adapter and loss curve beside it."""
        results: dict[str, dict[str, Any]] = {}
        for number, style in enumerate(selected, start=1):
            results[style] = await run.remote(
                f"training:{style}", self.job_stubs["training"], f"{run.ctx.outputs('models')}/style{number}",
                lambda prefix, style=style: self.trainer.StartTraining(
                    self._training_spec(prefix, request, dataset, style=style)),
                on_event=run.collect_checkpoint,
            )
        return per_style_training(results)

    def _training_spec(self, output_prefix: str, request: CreateFineTuningJob,
                       dataset: str, style: str = "") -> trainer_pb2.TrainingSpec:
        options = request.emotune.training if request.emotune else TrainingOptions()
        method = request.training_method
        hp = method.hyperparameters
        dpo = method.type == "dpo"
        # DPO (Open Character Training's recipe): LoRA lr 5e-5, 1 epoch, beta 0.1, NLL weight 0.1.
        base_lr = options.learning_rate or (5e-5 if dpo else 2e-4)
        multiplier = 1.0 if hp.learning_rate_multiplier == "auto" else hp.learning_rate_multiplier
        method_fields = {"method": method.type}
        if dpo:
            method_fields["dpo"] = trainer_pb2.DpoConfig(
                beta=0.1 if hp.beta == "auto" else hp.beta,
                nll_weight=0.1 if hp.nll_weight == "auto" else hp.nll_weight)
        return trainer_pb2.TrainingSpec(
            **method_fields,
            backend=options.backend, base_model=request.model, dataset_artifact=dataset,
            lora=trainer_pb2.LoraConfig(r=options.lora.r, alpha=options.lora.alpha, dropout=options.lora.dropout,
                                        target_modules=options.lora.target_modules),
            quantization=options.quantization, max_length=options.max_length, packing=options.packing,
            epochs=(1 if dpo else 3) if hp.n_epochs == "auto" else hp.n_epochs, max_steps=options.max_steps,
            learning_rate=base_lr * multiplier, batch_size=4 if hp.batch_size == "auto" else hp.batch_size,
            eval_fraction=options.eval_fraction, eval_every_steps=options.eval_every_steps,
            seed=request.seed or 0, output_prefix=output_prefix, style=style,
        )

    async def _load(self, model_id: str, base_model: str, trained: dict[str, Any],
                    triggers: list[inference_pb2.StyleTrigger]) -> dict[str, Any]:
        """Served as its LoRA adapter on the base: llama.cpp (and LMDeploy's PyTorch engine) share the base's
        weights between every fine-tune of it; the transformers engine merges the adapter on load. Published:
        every inference replica serves it, after restarts too, until it is deleted."""
        info = await self.inference.LoadModel(inference_pb2.LoadModelRequest(
            model_id=model_id, base_model=base_model, adapter_artifact=_artifact_key(trained, "adapter"),
            styles=triggers, publish=True,
        ), timeout=LOAD_DEADLINE_SECONDS)
        return {"model_id": info.id, "memory_bytes": info.memory_bytes}


def per_style_training(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The training stage's result when each style has its own adapter: the first style's fields (the plain model
    id serves its adapter), ``style_adapters``, each style's result under ``styles``, one loss curve per style
    (``train 毒舌``...) and each style's plots (``loss_curve``, ``loss_curve_2``...)."""
    first = next(iter(results.values()))
    curves: dict[str, list[dict[str, float]]] = {}
    plots: dict[str, str] = {}
    for number, (style, result) in enumerate(results.items(), start=1):
        for split, points in (result.get("loss_curve") or {}).items():
            curves[f"{split} {style}"] = points
        for name, key in (result.get("plots") or {}).items():
            plots[name if number == 1 else f"{name}_{number}"] = key
    return {**first, "style_adapters": {style: _artifact_key(result, "adapter") for style, result in results.items()},
            "styles": results, "loss_curve": curves, "plots": plots,
            **{total: sum(int(r.get(total) or 0) for r in results.values())
               for total in ("train_samples", "trained_tokens")}}


def generation_candidates(generation: GenerationOptions) -> tuple[int, int]:
    """(answers the teacher writes per question and style, answers the validator keeps per question; 0 = all):
    best-of-N writes N candidates for each answer to keep."""
    if generation.best_of == 1:
        return generation.variants_per_question, 0
    return generation.variants_per_question * generation.best_of, generation.variants_per_question


def _artifact_key(result: dict[str, Any], name: str) -> str:
    """The artifact a finished sub-job produced, by its documented result key (``<name>_artifact``)."""
    key = result.get(f"{name}_artifact")
    if not key:
        raise FailedPrecondition(f"stage result has no {name}_artifact (got keys {sorted(result)})")
    return key


class _Run:
    """One execution of a pipeline job: runs each stage at most once across restarts, via the checkpoint."""

    def __init__(self, ctx: JobContext, checkpoint: dict[str, Any]) -> None:
        self.ctx, self.checkpoint = ctx, checkpoint
        self.checkpoint.setdefault("stages", {})
        self.checkpoint.setdefault("checkpoints", [])
        self._last_save = 0.0

    def _save(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_save > CHECKPOINT_EVERY_SECONDS:
            self.ctx.save_checkpoint(self.checkpoint)
            self._last_save = time.monotonic()

    def _enter(self, stage: str) -> dict[str, Any]:
        """A stage's state; a stage an earlier owner started (a sub-job, or the stages inside it) resumes."""
        entered_before = stage in self.checkpoint["stages"]
        state = self.checkpoint["stages"].setdefault(stage, {"status": "running", "started_at": time.time()})
        self.checkpoint["stage"] = stage
        if state.get("status") != "succeeded":
            resumed = "job_id" in state or (entered_before and "starting" not in state)
            self.ctx.emit("stage", f"{stage} resumed" if resumed else f"{stage} started", stage=stage)
        self._save(force=True)
        return state

    def _done(self, stage: str, state: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        state.update(status="succeeded", result=result)
        # Wall time since the stage first started (across restarts): where a job's time goes.
        seconds = round(time.time() - state["started_at"], 1) if "started_at" in state else None
        self.ctx.emit("stage", f"{stage} succeeded", stage=stage, **({"seconds": seconds} if seconds else {}))
        self._save(force=True)
        return result

    async def once(self, stage: str, work: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        existing = self.checkpoint["stages"].get(stage)
        if existing and existing.get("status") == "succeeded":
            return existing["result"]
        state = self._enter(stage)
        try:
            result = await work()
        except grpc.aio.AioRpcError as exc:
            raise StageFailed(f"{stage}: {to_domain_error(exc).message}", stage=stage) from None
        except EmotuneError as exc:
            raise type(exc)(f"{stage}: {exc.message}", **exc.details) from None
        return self._done(stage, state, result)

    async def remote(self, stage: str, jobs: jobs_pb2_grpc.JobsStub, output_prefix: str,
                     start: Callable[[str], Awaitable[jobs_pb2.JobRef]],
                     on_event: Callable[[str, jobs_pb2.Event], None] | None = None) -> dict[str, Any]:
        """Run a stage as a job of another service writing under ``output_prefix`` (unique to this owner of this
        pipeline job: ``ctx.outputs``; a sub-job an old owner started late writes under its own prefix, and the
        result recorded is the followed sub-job's).

        The prefix is saved before the sub-job is started: if this process dies between the start and saving the
        sub-job's id, the next owner finds that sub-job by its prefix and re-attaches instead of starting a second.
        """
        existing = self.checkpoint["stages"].get(stage)
        if existing and existing.get("status") == "succeeded":
            return existing["result"]
        state = self._enter(stage)
        try:
            if "job_id" not in state:
                started = await self._started_before(stage, jobs, state.get("starting"))
                if started is None:
                    state["starting"] = output_prefix
                    self._save(force=True)
                    await self.ctx.flush()  # stored (checkpoint writes are queued) before the sub-job exists
                    started = (await start(output_prefix)).job_id
                state.update(job_id=started, after=0)
                self._save(force=True)
            job = await self._follow(stage, jobs, state, on_event)
        except asyncio.CancelledError:
            if self.ctx.cancel_requested() and "job_id" in state:  # a user cancel, not a shutdown or takeover
                await asyncio.shield(jobs.CancelJob(jobs_pb2.CancelJobRequest(job_id=state["job_id"])))
            raise
        except grpc.aio.AioRpcError as exc:
            raise StageFailed(f"{stage}: {to_domain_error(exc).message}", stage=stage) from None
        if job.state == jobs_pb2.JOB_STATE_CANCELLED:
            raise Cancelled(f"{stage} job {job.job_id} was cancelled")
        if job.state != jobs_pb2.JOB_STATE_SUCCEEDED:
            raise StageFailed(f"{stage} failed: {job.error or 'no reason given'}", stage=stage,
                              sub_job=job.job_id)
        return self._done(stage, state, MessageToDict(job.result, preserving_proto_field_name=True))

    async def _started_before(self, stage: str, jobs: jobs_pb2_grpc.JobsStub,
                              output_prefix: str | None) -> str | None:
        """The sub-job a previous owner started under ``output_prefix`` but did not record, if there is one."""
        if output_prefix is None:
            return None
        listed = await jobs.ListJobs(jobs_pb2.ListJobsRequest())
        for job in listed.jobs:
            if MessageToDict(job.spec, preserving_proto_field_name=True).get("output_prefix") == output_prefix:
                self.ctx.emit("log", f"{stage}: re-attached to {job.job_id}, started before the restart",
                              stage=stage)
                return job.job_id
        return None

    async def _follow(self, stage: str, jobs: jobs_pb2_grpc.JobsStub, state: dict[str, Any],
                      on_event: Callable[[str, jobs_pb2.Event], None] | None) -> jobs_pb2.Job:
        """Watch the sub-job to its end from the last event seen; a restarting service or an expired stream
        deadline re-attaches from the same offset instead of failing the pipeline."""
        outage_since: float | None = None
        while True:
            try:
                async for event in jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=state["job_id"],
                                                                          after_seq=state["after"])):
                    outage_since = None
                    self._relay(stage, event)
                    if on_event is not None:
                        on_event(stage, event)
                    state["after"] = event.seq
                    self._save()
                return await jobs.GetJob(jobs_pb2.GetJobRequest(job_id=state["job_id"]))
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                outage_since = outage_since or time.monotonic()
                if time.monotonic() - outage_since > SERVICE_OUTAGE_TOLERANCE_SECONDS:
                    raise
                self.ctx.emit("log", f"{stage}: lost the {stage} stream ({exc.code().name}), re-attaching",
                              stage=stage)
                await asyncio.sleep(RECONNECT_SECONDS)

    def _relay(self, stage: str, event: jobs_pb2.Event) -> None:
        if event.type == "state":
            return  # the pipeline reports stage transitions itself
        data = MessageToDict(event.data, preserving_proto_field_name=True)
        if "stage" in data:  # the sub-job's own phase (e.g. the validator's "embedding")
            data["phase"] = data.pop("stage")
        self.ctx.emit(event.type, f"{stage}: {event.message}", **data, stage=stage)

    def collect_checkpoint(self, stage: str, event: jobs_pb2.Event) -> None:
        """Training events feed ``/checkpoints`` (saved checkpoints) and the report's loss curve."""
        data = MessageToDict(event.data, preserving_proto_field_name=True)
        if event.type == "checkpoint":
            self.checkpoint["checkpoints"].append(data)
        elif event.type == "progress" and "loss" in data:
            self.checkpoint.setdefault("loss_curve", []).append({"step": data.get("step"), "train_loss": data["loss"]})
        elif event.type == "metric" and "eval_loss" in data:
            self.checkpoint.setdefault("loss_curve", []).append({"step": data.get("step"),
                                                                 "valid_loss": data["eval_loss"]})
