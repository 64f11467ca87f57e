"""The training job spec: one spec for both backends, validated up front (errors name the field).

It mirrors ``emotune.v1.TrainingSpec`` (:func:`spec_from_proto`: a field left at its proto zero gets the default
here; ``packing``, ``eval_fraction`` and ``dpo.nll_weight`` are ``optional``, so an explicit false / 0 is kept).
A multi-process run (``processes`` > 1) keeps the global batch of one process: ``batch_size x grad_accumulation``
samples per optimizer step, split over the processes (:func:`per_process_batch`). Combinations no engine supports
are refused here, naming the field; the ones that depend on the machine (how many GPUs) by :func:`check_devices`.
Warnings about a spec that is likely to overfit or to under-train (seed 000 trained thousands of iterations on a
small set) come from :func:`spec_warnings`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from emotune.errors import InvalidInput
from emotune.grpc.fields import set_fields

if TYPE_CHECKING:
    from emotune.v1 import trainer_pb2

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LoraSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    r: int = Field(8, ge=1, le=512)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGETS))


class DpoSpec(BaseModel):
    """DPO + NLL (Open Character Training's recipe: beta 0.1, NLL on the chosen reply 0.1, LoRA, 1 epoch)."""

    model_config = ConfigDict(extra="forbid")
    beta: float = Field(0.1, gt=0, le=10, description="pull towards the reference (base, adapter disabled)")
    nll_weight: float = Field(0.1, ge=0, le=10, description="weight of the chosen reply's per-token NLL "
                              "(LLaMA-Factory pref_ftx, TRL rpo_alpha); 0 = plain DPO")


class TrainingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: Literal["hf", "xtuner"] = "hf"
    base_model: str = Field("smollm2-135m", min_length=1)
    dataset_artifact: str = Field(min_length=1)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    quantization: Literal["none", "4bit", "8bit"] = "none"
    max_length: int = Field(512, ge=16, le=32768)
    packing: bool = True
    epochs: float = Field(3.0, gt=0, le=1000)
    max_steps: int = Field(0, ge=0, description="overrides epochs when > 0")
    learning_rate: float = Field(2e-4, gt=0, lt=1)
    batch_size: int = Field(4, ge=1, le=1024)
    grad_accumulation: int = Field(1, ge=1, le=1024)
    eval_fraction: float = Field(0.1, ge=0, lt=0.9)
    eval_every_steps: int = Field(0, ge=0, description="0 = about 10 evaluations per run")
    keep_best_checkpoints: int = Field(2, ge=1, le=50)
    eval_prompts: list[str] = Field(default_factory=list)
    seed: int = 42
    chat_template: str = Field("", description="explicit Jinja template ('' = the base tokenizer's)")
    mix_dataset_artifact: str = ""
    mix_ratio: float = Field(0.0, ge=0, le=10, description="general samples per style sample")
    output_prefix: str = ""
    style: str = Field("", description="train only on the dataset's records of this style (one adapter per style; "
                                       "'' = every record)")
    resume_job_id: str = ""
    styles_yaml: str = Field("", description="with eval_prompts: pick the final checkpoint by validator style score")
    gguf_quantization: Literal["Q4_K_M", "Q5_K_M", "Q8_0", "F16", "none"] = Field(
        "Q4_K_M", description="GGUF export for llama.cpp / Ollama ('none' skips it)")
    method: Literal["supervised", "dpo"] = Field(
        "supervised", description="supervised: next-token loss on the replies; dpo: preference pairs (records "
        "with a rejected reply), DPO + NLL on the chosen reply, reference = the base with the adapter disabled")
    dpo: DpoSpec = Field(default_factory=DpoSpec)
    processes: int = Field(1, ge=1, le=64, description="training processes on this node (one per GPU; torchrun / "
                           "XTuner's NPROC_PER_NODE); the global batch stays batch_size x grad_accumulation")
    strategy: Literal["ddp", "zero2", "zero3", "fsdp"] = Field(
        "ddp", description="how processes > 1 share the work: ddp (replicated weights), zero2 / zero3 (DeepSpeed "
        "ZeRO: optimizer+gradients / also weights sharded), fsdp (torch FSDP, hf backend)")

    @model_validator(mode="after")
    def _consistent(self) -> TrainingSpec:
        if self.styles_yaml:
            from emotune.data.styles import parse_styles

            parse_styles(self.styles_yaml, "styles_yaml")  # InvalidInput names the line and field
        if self.mix_ratio > 0 and not self.mix_dataset_artifact:
            raise ValueError("mix_ratio > 0 needs mix_dataset_artifact")
        if self.method == "dpo" and self.backend != "hf":
            raise ValueError("method 'dpo' runs on the hf backend (XTuner's DPO is not wired yet)")
        if self.backend == "hf" and self.quantization != "none":
            import torch

            if not torch.cuda.is_available():
                raise ValueError(f"quantization {self.quantization!r} needs CUDA (bitsandbytes); use 'none' on CPU")
        _check_strategy(self)
        return self

    @classmethod
    def parse(cls, data: dict[str, Any], source: str = "spec") -> TrainingSpec:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or None
            raise InvalidInput(err["msg"], file=source, field=field) from None
        except InvalidInput as exc:  # a refused combination (_check_strategy): say where it came from
            raise InvalidInput(exc.reason, file=source, field=exc.field) from None


def spec_from_proto(message: trainer_pb2.TrainingSpec) -> dict[str, Any]:
    """The request :meth:`TrainerService.start` validates: the fields the sender set
    (:func:`emotune.grpc.fields.set_fields`), the shape a CLI or a test writes by hand."""
    return set_fields(message)


def _refuse(field: str, message: str) -> None:
    raise InvalidInput(message, field=field)  # not a ValueError: pydantic lets it through with its field name


def _check_strategy(spec: TrainingSpec) -> None:
    """Combinations refused whatever the machine (the device-dependent ones: :func:`check_devices`)."""
    if spec.processes > 1 and spec.method == "dpo":
        _refuse("processes", "method 'dpo' runs in one process (processes: 1)")
    if spec.strategy == "zero3" and spec.quantization != "none":
        _refuse("strategy", f"strategy 'zero3' shards the weights, which a {spec.quantization} (bitsandbytes) model "
                "cannot be: use 'zero2' (or 'ddp') with quantization, or quantization 'none' with zero3")
    if spec.backend == "xtuner" and spec.strategy == "fsdp":
        _refuse("strategy", "the xtuner backend runs ddp, zero2 or zero3 (its launcher has no FSDP); "
                "use backend 'hf' for fsdp")
    if spec.backend == "hf" and spec.strategy == "fsdp" and spec.quantization != "none":
        _refuse("strategy", "strategy 'fsdp' with a bitsandbytes model is not wired on the hf backend; "
                "use 'ddp' or 'zero2'")
    per_process_batch(spec.batch_size, spec.grad_accumulation, spec.processes)


def per_process_batch(batch_size: int, grad_accumulation: int, processes: int) -> tuple[int, int]:
    """(per-device batch, gradient accumulation) for ``processes`` so that per-device x accumulation x processes
    equals ``batch_size x grad_accumulation`` (the global batch of one process); the per-device batch stays as
    large as it can (at most ``batch_size``). Refused when the global batch does not split evenly."""
    import math

    total = batch_size * grad_accumulation
    if total % processes:
        _refuse("processes", f"the global batch batch_size x grad_accumulation = {total} does not split over "
                f"{processes} processes; make it a multiple of {processes}")
    share = total // processes
    per_device = math.gcd(batch_size, share)
    return per_device, share // per_device


def check_devices(spec: TrainingSpec, device: str, devices: int) -> None:
    """Refuse what this machine cannot run: ``device`` is "cuda" or "cpu", ``devices`` the GPUs it has (cuda).

    GPU: at most one process per GPU. CPU (tests, CI): only the hf backend with ddp over gloo runs there;
    DeepSpeed and FSDP need CUDA."""
    if spec.processes == 1:
        return
    if device == "cuda":
        if spec.processes > devices:
            _refuse("processes", f"processes={spec.processes} but this node has {devices} GPU(s): one process "
                    "per GPU")
        if spec.backend == "hf" and spec.strategy in ("zero2", "zero3"):
            import importlib.util

            if importlib.util.find_spec("deepspeed") is None:
                _refuse("strategy", f"strategy {spec.strategy!r} on the hf backend needs the deepspeed package in "
                        "the trainer image; use 'ddp' or 'fsdp', or backend 'xtuner'")
        return
    if spec.backend != "hf":
        _refuse("processes", "a multi-process xtuner run needs CUDA (XTuner's launcher with NCCL); use processes 1 "
                "or backend 'hf' on CPU")
    if spec.strategy != "ddp":
        _refuse("strategy", f"strategy {spec.strategy!r} needs CUDA; on CPU several processes run 'ddp' (gloo)")


def local_devices() -> tuple[str, int]:
    """("cuda", GPU count) where CUDA is present, else ("cpu", 0)."""
    import torch

    return ("cuda", torch.cuda.device_count()) if torch.cuda.is_available() else ("cpu", 0)


def spec_warnings(spec: TrainingSpec, train_samples: int, optimizer_steps: int) -> list[str]:
    """Plain-language warnings about likely over- or under-training."""
    out = []
    if train_samples < 50:
        out.append(f"only {train_samples} training samples: expect the style to be copied verbatim; "
                   "generate more data or mix a general dialogue set (mix_dataset_artifact)")
    if optimizer_steps < 20:
        out.append(f"only {optimizer_steps} optimizer steps: too few to learn a style; lower batch_size or "
                   "grad_accumulation, turn packing off, or raise epochs")
    if spec.max_steps == 0 and spec.epochs > 5:
        out.append(f"{spec.epochs:g} epochs over the same samples tends to overfit (seed 000 saw it after a few "
                   "thousand iterations); rely on the held-out loss and keep_best_checkpoints")
    if spec.eval_fraction == 0:
        out.append("eval_fraction is 0: no held-out loss, the final checkpoint is the last one, not the best")
    return out
