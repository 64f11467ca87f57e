from emotune.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoraConfig(_message.Message):
    __slots__ = ("r", "alpha", "dropout", "target_modules")
    R_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    r: int
    alpha: int
    dropout: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, r: _Optional[int] = ..., alpha: _Optional[int] = ..., dropout: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ...) -> None: ...

class DpoConfig(_message.Message):
    __slots__ = ("beta", "nll_weight")
    BETA_FIELD_NUMBER: _ClassVar[int]
    NLL_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    beta: float
    nll_weight: float
    def __init__(self, beta: _Optional[float] = ..., nll_weight: _Optional[float] = ...) -> None: ...

class TrainingSpec(_message.Message):
    __slots__ = ("backend", "base_model", "dataset_artifact", "lora", "quantization", "max_length", "packing", "epochs", "max_steps", "learning_rate", "batch_size", "grad_accumulation", "eval_fraction", "eval_every_steps", "keep_best_checkpoints", "eval_prompts", "seed", "chat_template", "mix_dataset_artifact", "mix_ratio", "output_prefix", "resume_job_id", "styles_yaml", "gguf_quantization", "method", "dpo", "processes", "strategy", "style")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PACKING_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRAD_ACCUMULATION_FIELD_NUMBER: _ClassVar[int]
    EVAL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    EVAL_EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    KEEP_BEST_CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    EVAL_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    MIX_DATASET_ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    MIX_RATIO_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    RESUME_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STYLES_YAML_FIELD_NUMBER: _ClassVar[int]
    GGUF_QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    DPO_FIELD_NUMBER: _ClassVar[int]
    PROCESSES_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    backend: str
    base_model: str
    dataset_artifact: str
    lora: LoraConfig
    quantization: str
    max_length: int
    packing: bool
    epochs: float
    max_steps: int
    learning_rate: float
    batch_size: int
    grad_accumulation: int
    eval_fraction: float
    eval_every_steps: int
    keep_best_checkpoints: int
    eval_prompts: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    chat_template: str
    mix_dataset_artifact: str
    mix_ratio: float
    output_prefix: str
    resume_job_id: str
    styles_yaml: str
    gguf_quantization: str
    method: str
    dpo: DpoConfig
    processes: int
    strategy: str
    style: str
    def __init__(self, backend: _Optional[str] = ..., base_model: _Optional[str] = ..., dataset_artifact: _Optional[str] = ..., lora: _Optional[_Union[LoraConfig, _Mapping]] = ..., quantization: _Optional[str] = ..., max_length: _Optional[int] = ..., packing: _Optional[bool] = ..., epochs: _Optional[float] = ..., max_steps: _Optional[int] = ..., learning_rate: _Optional[float] = ..., batch_size: _Optional[int] = ..., grad_accumulation: _Optional[int] = ..., eval_fraction: _Optional[float] = ..., eval_every_steps: _Optional[int] = ..., keep_best_checkpoints: _Optional[int] = ..., eval_prompts: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., chat_template: _Optional[str] = ..., mix_dataset_artifact: _Optional[str] = ..., mix_ratio: _Optional[float] = ..., output_prefix: _Optional[str] = ..., resume_job_id: _Optional[str] = ..., styles_yaml: _Optional[str] = ..., gguf_quantization: _Optional[str] = ..., method: _Optional[str] = ..., dpo: _Optional[_Union[DpoConfig, _Mapping]] = ..., processes: _Optional[int] = ..., strategy: _Optional[str] = ..., style: _Optional[str] = ...) -> None: ...
