"""The ``hf`` backend: transformers + peft LoRA (fp32 on CPU; bf16 and bitsandbytes 4/8-bit on CUDA).

Runs inside the worker process (:mod:`emotune.services.trainer.worker`). Uses transformers' ``Trainer`` for the loop,
schedule, accumulation and exact resume (optimizer, scheduler, RNG and data position are in each checkpoint);
emotune adds packing with position-id separation, assistant-only labels from the chat template, progress events,
and keeping the best K checkpoints by held-out loss (plus the latest, needed to resume).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from emotune.models.chat_template import ChatFormat
from emotune.services.trainer.data import (
    Block,
    BlockCollator,
    encode_records,
    pack,
    single_blocks,
    split_records,
)
from emotune.services.trainer.spec import TrainingSpec, per_process_batch, spec_warnings

Emit = Callable[..., None]
CHECKPOINT_PREFIX = "checkpoint-"


@dataclass
class Prepared:
    fmt: ChatFormat
    train_blocks: list[Block]
    eval_blocks: list[Block]
    total_steps: int
    summary: dict[str, Any]


def prepare(spec: TrainingSpec, fmt: ChatFormat, records: list, general: list | None, emit: Emit) -> Prepared:
    """Split, encode and pack; report counts and warnings before any weight is loaded."""
    split = split_records(records, spec.eval_fraction, spec.seed, general, spec.mix_ratio)
    train, train_report = encode_records(fmt, split.train, spec.max_length)
    held_out, eval_report = encode_records(fmt, split.eval, spec.max_length)
    if not train:
        raise ValueError(f"no training sample fits max_length={spec.max_length} "
                         f"({len(train_report.dropped_too_long)} dropped as too long)")
    train_blocks = pack(train, spec.max_length) if spec.packing else single_blocks(train)
    eval_blocks = pack(held_out, spec.max_length) if spec.packing else single_blocks(held_out)
    per_step = spec.batch_size * spec.grad_accumulation
    steps_per_epoch = max(1, math.ceil(len(train_blocks) / per_step))
    total = spec.max_steps or max(1, math.ceil(steps_per_epoch * spec.epochs))
    dropped = len(train_report.dropped_too_long) + len(eval_report.dropped_too_long)
    summary = {
        "train_samples": len(train), "eval_samples": len(held_out), "mixed_in": split.mixed_in,
        "dropped_too_long": dropped, "train_blocks": len(train_blocks), "optimizer_steps": total,
        "trained_tokens_per_epoch": train_report.trained_tokens, "tokens_per_epoch": train_report.total_tokens,
        "packing_fill": round(train_report.total_tokens / (len(train_blocks) * spec.max_length), 3)
        if spec.packing else None,
    }
    emit("log", f"{len(train)} training / {len(held_out)} held-out samples, {len(train_blocks)} rows, "
         f"{total} optimizer steps", **summary)
    if dropped:
        emit("warning", f"{dropped} samples longer than max_length={spec.max_length} were left out (not "
             "truncated: a cut reply would teach the model not to stop)", dropped=dropped)
    for text in spec_warnings(spec, len(train), total):
        emit("warning", text)
    return Prepared(fmt, train_blocks, eval_blocks, total, summary)


def load_model(base_dir: Path, spec: TrainingSpec):
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    cuda = torch.cuda.is_available()
    kwargs: dict[str, Any] = {"torch_dtype": torch.bfloat16 if cuda else torch.float32,
                              "attn_implementation": "sdpa"}
    if spec.quantization != "none":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=spec.quantization == "4bit", load_in_8bit=spec.quantization == "8bit",
            bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), **kwargs)
    model.config.use_cache = False  # a cache disables packed-sequence separation (and is useless in training)
    if spec.quantization != "none":
        model = prepare_model_for_kbit_training(model)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in spec.lora.target_modules if t in present]
    if not targets:
        raise ValueError(f"none of the LoRA target modules {spec.lora.target_modules} exist in {base_dir.name}")
    lora = LoraConfig(r=spec.lora.r, lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


class _BlockDataset:
    def __init__(self, blocks: list[Block]) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> Block:
        return self.blocks[index]


def checkpoint_step(checkpoint: Path) -> int:
    """The optimizer step a ``checkpoint-<step>`` directory was saved at."""
    return int(checkpoint.name[len(CHECKPOINT_PREFIX):])


def latest_checkpoint(checkpoints: Path) -> Path | None:
    found = [p for p in checkpoints.glob(f"{CHECKPOINT_PREFIX}*") if (p / "trainer_state.json").is_file()]
    return max(found, key=checkpoint_step, default=None)


def eval_losses(checkpoints: Path) -> dict[Path, float]:
    """Held-out loss at each saved checkpoint, read from its own trainer_state.json (survives restarts)."""
    out = {}
    for path in checkpoints.glob(f"{CHECKPOINT_PREFIX}*"):
        state_file = path / "trainer_state.json"
        if not state_file.is_file():
            continue
        step = checkpoint_step(path)
        history = json.loads(state_file.read_text())["log_history"]
        losses = [h["eval_loss"] for h in history if h.get("step") == step and "eval_loss" in h]
        if losses:
            out[path] = losses[-1]
    return out


def prune_checkpoints(checkpoints: Path, keep_best: int) -> list[Path]:
    """Delete all but the ``keep_best`` lowest-eval-loss checkpoints and the latest one; return the kept."""
    losses = eval_losses(checkpoints)
    best = sorted(losses, key=lambda p: losses[p])[:keep_best]
    latest = latest_checkpoint(checkpoints)
    keep = set(best) | ({latest} if latest else set())
    for path in checkpoints.glob(f"{CHECKPOINT_PREFIX}*"):
        if path not in keep:
            shutil.rmtree(path, ignore_errors=True)
    return sorted(keep, key=checkpoint_step)


def best_checkpoint(checkpoints: Path) -> Path | None:
    losses = eval_losses(checkpoints)
    return min(losses, key=lambda p: losses[p]) if losses else latest_checkpoint(checkpoints)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX): there bf16 autocast halves a LoRA step's
    time (Qwen2.5-0.5B, 4 x 256 tokens: 9.5 s against 18-25 s in fp32 on 2 Zen 4 cores); elsewhere it is slower."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def train(spec: TrainingSpec, prepared: Prepared, base_dir: Path, work_dir: Path, emit: Emit,
          threads: int = 0, cpu_bf16: bool = False) -> dict[str, Any]:
    """Train (resuming from the latest checkpoint in ``work_dir`` if any); return the run's metrics.
    ``cpu_bf16``: bf16 autocast on the CPU when it has native bf16 (the LoRA weights stay fp32)."""
    import torch
    from transformers import Trainer, TrainingArguments, set_seed

    set_seed(spec.seed)  # before the LoRA weights are initialised: the same spec trains the same adapter
    world = world_size()  # processes x nodes (emotune.services.trainer.nodejob: several nodes)
    if world % spec.processes:
        raise ValueError(f"the spec asks for {spec.processes} processes per node but this run has {world} "
                         "(WORLD_SIZE)")
    if world > 1 and not torch.cuda.is_available():
        threads = threads or max(1, (os.cpu_count() or 1) // world)  # torchrun sets OMP_NUM_THREADS=1
        _load_indexed_cpu_locations()
    if threads:
        torch.set_num_threads(threads)
    checkpoints = work_dir / "checkpoints"
    resume_from = latest_checkpoint(checkpoints)
    cuda = torch.cuda.is_available()
    cpu_autocast = cpu_bf16 and not cuda and cpu_has_native_bf16()
    if cpu_autocast:
        emit("log", "training under bf16 autocast on the CPU (native bf16)")
    model = load_model(base_dir, spec)
    collator = BlockCollator(prepared.fmt.tokenizer.pad_token_id if prepared.fmt.tokenizer.pad_token_id
                             is not None else prepared.fmt.end_token_id, spec.packing)
    has_eval = bool(prepared.eval_blocks)
    every = spec.eval_every_steps or max(1, prepared.total_steps // 10)
    per_device, accumulation = per_process_batch(spec.batch_size, spec.grad_accumulation, world)
    if world > 1:
        emit("log", f"{world} processes ({spec.strategy}): per-device batch {per_device} x accumulation "
             f"{accumulation} x {world} = global batch {per_device * accumulation * world}", processes=world,
             strategy=spec.strategy, per_device_batch=per_device, grad_accumulation=accumulation)
    args = TrainingArguments(
        output_dir=str(checkpoints), per_device_train_batch_size=per_device,
        per_device_eval_batch_size=per_device, gradient_accumulation_steps=accumulation,
        learning_rate=spec.learning_rate, max_steps=prepared.total_steps, lr_scheduler_type="cosine",
        warmup_ratio=0.05, weight_decay=0.0, max_grad_norm=1.0, logging_steps=1,
        eval_strategy="steps" if has_eval else "no", eval_steps=every if has_eval else None,
        save_strategy="steps", save_steps=every, save_total_limit=None, seed=spec.seed, data_seed=spec.seed,
        report_to=[], disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False,
        bf16=cuda or cpu_autocast, use_cpu=not cuda, save_safetensors=True,
        **distributed_arguments(spec.strategy, world, cuda),
    )
    events = _EventCallback(spec, prepared, collator, checkpoints, emit)
    trainer = Trainer(model=model, args=args, train_dataset=_BlockDataset(prepared.train_blocks),
                      eval_dataset=_BlockDataset(prepared.eval_blocks) if has_eval else None,
                      data_collator=collator, callbacks=[events])
    return run_trainer(trainer, resume_from, checkpoints, emit, events) | prepared.summary


def _load_indexed_cpu_locations() -> None:
    """Resuming a multi-process CPU run: transformers loads the optimizer state with ``map_location=args.device``,
    which is ``cpu:0`` there, and torch's own CPU deserializer accepts only ``"cpu"`` ("don't know how to restore
    data location ... (tagged with cpu:0)"). This teaches torch.load that ``cpu:N`` is the CPU."""
    import torch

    torch.serialization.register_package(
        11, lambda _obj: None, lambda obj, location: obj if location.startswith("cpu:") else None)


def world_size() -> int:
    """Processes of this run (torchrun's ``WORLD_SIZE``; 1 when started directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def distributed_arguments(strategy: str, world: int, cuda: bool) -> dict[str, Any]:
    """``TrainingArguments`` for a ``world``-process run: DDP over NCCL (GPU) or gloo (CPU), torch FSDP, or
    DeepSpeed ZeRO-2/3 (each GPU only, :func:`emotune.services.trainer.spec.check_devices` refuses them on CPU)."""
    if world == 1:
        return {}
    common = {"ddp_backend": "nccl" if cuda else "gloo", "ddp_find_unused_parameters": False}
    if strategy == "fsdp":
        # use_orig_params: LoRA mixes frozen and trained weights in one wrapped unit; the layers to wrap are
        # the model's own _no_split_modules (its decoder layer class).
        return common | {"fsdp": "full_shard auto_wrap", "fsdp_config": {"use_orig_params": True}}
    if strategy in ("zero2", "zero3"):
        return common | {"deepspeed": deepspeed_config(int(strategy[-1]))}
    return common


def deepspeed_config(stage: int) -> dict[str, Any]:
    """A DeepSpeed ZeRO config for transformers' integration ("auto": filled from the TrainingArguments)."""
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True,
                            "reduce_bucket_size": "auto"}
    if stage == 3:
        zero |= {"stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto",
                 "stage3_gather_16bit_weights_on_model_save": True}  # the saved adapter is whole, not shards
    return {"zero_optimization": zero, "bf16": {"enabled": "auto"}, "gradient_clipping": "auto",
            "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto"}


def run_trainer(trainer: Any, resume_from: Path | None, checkpoints: Path, emit: Emit,
                events: _EventCallback) -> dict[str, Any]:
    """Train a transformers ``Trainer`` (resuming from a checkpoint if given) and summarise: steps, loss, the best
    checkpoint by held-out loss, the tokens trained on (counted by ``events``). Shared by the supervised and the
    DPO paths."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    if resume_from:
        emit("log", f"resuming from {resume_from.name}", step=checkpoint_step(resume_from))
    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    best = best_checkpoint(checkpoints)
    losses = eval_losses(checkpoints)
    return {
        "global_step": trainer.state.global_step, "train_loss": output.training_loss,
        "best_checkpoint": best.name if best else None,
        "best_step": checkpoint_step(best) if best else None,
        "best_eval_loss": losses.get(best) if best else None,
        "trained_tokens": events.trained_tokens_total, "log_history": trainer.state.log_history,
    }


class _EventCallback(TrainerCallback):
    """Turns Trainer callbacks into emotune job events (step, epoch, loss, lr, tokens/s, ETA, eval, checkpoints)."""

    def __init__(self, spec: TrainingSpec, prepared: Prepared, collator: BlockCollator, checkpoints: Path,
                 emit: Emit) -> None:
        self.spec, self.prepared, self.collator, self.checkpoints, self.emit = spec, prepared, collator, \
            checkpoints, emit
        self.started = time.monotonic()
        self.start_step = 0
        self.trained_tokens_total = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step = state.global_step
        self.started = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps and self.prepared.eval_blocks:
            control.should_evaluate = True  # the last checkpoint competes for "best" like the others

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs:
            return
        elapsed = max(1e-6, time.monotonic() - self.started)
        done = state.global_step - self.start_step
        rate = done / elapsed
        eta = (state.max_steps - state.global_step) / rate if rate > 0 else None
        self.trained_tokens_total = int(self.prepared.summary["trained_tokens_per_epoch"] * (state.epoch or 0))
        self.emit("progress", f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f}",
                  done=state.global_step, total=state.max_steps, step=state.global_step,
                  epoch=round(state.epoch or 0.0, 3), loss=round(float(logs["loss"]), 5),
                  lr=float(logs.get("learning_rate", 0.0)),
                  tokens_per_s=round(self.collator.tokens_seen / elapsed, 1),
                  eta_s=None if eta is None else round(eta, 1))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = metrics or {}
        if "eval_loss" in metrics:
            self.emit("metric", f"step {state.global_step} eval loss {metrics['eval_loss']:.4f}",
                      step=state.global_step, eval_loss=round(float(metrics["eval_loss"]), 5),
                      train_loss=_last_train_loss(state))

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return  # rank 0 saves, prunes and reports checkpoints; the others only add their RNG state
        kept = prune_checkpoints(self.checkpoints, self.spec.keep_best_checkpoints)
        path = self.checkpoints / f"{CHECKPOINT_PREFIX}{state.global_step}"
        losses = eval_losses(self.checkpoints)
        self.emit("checkpoint", f"saved {path.name}", step=state.global_step, path=str(path),
                  eval_loss=losses.get(path), train_loss=_last_train_loss(state),
                  kept=[p.name for p in kept])


def _last_train_loss(state) -> float | None:
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    return round(float(losses[-1]), 5) if losses else None


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path) -> None:
    """Fold the LoRA weights into the base model and save plain safetensors (what LMDeploy/Ollama load)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), torch_dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out_dir), safe_serialization=True)


def save_adapter(checkpoint: Path, out_dir: Path) -> None:
    """The adapter files of a checkpoint (without optimizer state)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy2(checkpoint / name, out_dir / name)


def sample_replies(model_dir: Path, fmt: ChatFormat, prompts: list[str], system: str | None,
                   max_new_tokens: int = 64) -> list[dict[str, Any]]:
    """Greedy replies of the merged model to the eval prompts, and whether each stopped on its own.

    A reply that runs to ``max_new_tokens`` is the run-on symptom of seeds 003/004 (wrong template or stop
    tokens); the worker warns about it.
    """
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32).eval()
    out = []
    for prompt in prompts:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        generated = _greedy(model, fmt, messages, max_new_tokens)
        stopped = bool(generated) and generated[-1] in fmt.stop_token_ids
        out.append({"prompt": prompt, "system": system, "stopped": stopped,
                    "reply": fmt.tokenizer.decode(generated, skip_special_tokens=True).strip()})
    return out


def _greedy(model: Any, fmt: ChatFormat, messages: list[dict[str, str]], max_new_tokens: int) -> list[int]:
    """The reply's token ids, greedy, ending on any of the template's stop tokens (included) or at the limit."""
    import torch

    ids = fmt.prompt_ids(messages)
    with torch.no_grad():
        return model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=fmt.stop_token_ids,
                              pad_token_id=fmt.end_token_id)[0, len(ids):].tolist()


def candidate_checkpoints(checkpoints: Path) -> list[Path]:
    """The checkpoints that compete for "final": those with a held-out loss (best K kept), else the latest."""
    losses = eval_losses(checkpoints)
    if losses:
        return sorted(losses, key=lambda p: losses[p])
    latest = latest_checkpoint(checkpoints)
    return [latest] if latest else []


def style_replies(base_dir: Path, candidates: list[Path], fmt: ChatFormat, prompts: list[str],
                  systems: dict[str, str], max_new_tokens: int = 48) -> dict[str, dict[str, list[str]]]:
    """{checkpoint: {style: replies}}: each candidate adapter answers every prompt with each style's prompt."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_dir), torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(candidates[0]), adapter_name=candidates[0].name).eval()
    for path in candidates[1:]:
        model.load_adapter(str(path), adapter_name=path.name)
    out: dict[str, dict[str, list[str]]] = {}
    for path in candidates:
        model.set_adapter(path.name)
        out[path.name] = {}
        for style, system in systems.items():
            out[path.name][style] = [
                fmt.tokenizer.decode(_greedy(model, fmt, [{"role": "system", "content": system},
                                                          {"role": "user", "content": prompt}], max_new_tokens),
                                     skip_special_tokens=True).strip()
                for prompt in prompts]
    return out
