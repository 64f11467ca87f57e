"""``method: dpo`` on the hf backend: DPO with an NLL term on the chosen reply, LoRA, on TRL's ``DPOTrainer``.

The loss per pair, with the policy's summed log-probs ``pi_c``/``pi_r`` of the chosen and rejected replies and the
reference's ``ref_c``/``ref_r`` (the base model: the same LoRA model with its adapter disabled, computed once
before training, ``precompute_ref_log_probs``)::

    loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))  +  nll_weight * NLL(chosen, per token)

(Open Character Training's recipe; LLaMA-Factory's ``pref_beta``/``pref_ftx``, TRL's ``beta``/``rpo_alpha``). The
NLL is the batch's mean per-token negative log-likelihood of the chosen replies.

What emotune changes in TRL (0.24), and why:

- **tokenization**: TRL renders prompt and replies with ``apply_chat_template`` then tokenizes them apart and
  appends the tokenizer's EOS to each reply. With a ChatML template (SmolLM2, Qwen) the rendered reply already
  ends with ``<|im_end|>\\n``, so TRL trains ``...<|im_end|>`` ``\\n`` ``<|im_end|>``: two tokens the supervised
  path never trains and serving never sees. Here every pair is encoded by :class:`~emotune.models.chat_template.ChatFormat`
  exactly as the supervised path encodes a sample: the prompt ids are the ids the conversation with the chosen
  reply has before that reply (what serving builds, checked by the parity test), and each reply's ids are its
  trained tokens (content + the template's end token), so ``_prepare_dataset`` is handed pre-tokenized pairs.
- **the NLL term**: TRL 0.24's ``nll_loss`` uses ``cross_entropy(..., ignore_index=0)`` over labels whose masked
  positions are set to 0, so a real token with id 0 inside a reply is left out of it (Qwen's id 0 is ``!``); it is
  recomputed from the chosen log-probs and the chosen mask (same value otherwise).

Packing does not apply (each pair is one row of chosen and one of rejected); the spec's ``packing`` is ignored.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotune.data.records import Record
from emotune.models.chat_template import IGNORE_INDEX, ChatFormat
from emotune.services.trainer.data import split_records
from emotune.services.trainer.hf_backend import (
    Emit,
    _EventCallback,
    cpu_has_native_bf16,
    latest_checkpoint,
    load_model,
    run_trainer,
)
from emotune.services.trainer.spec import TrainingSpec, spec_warnings

#: Reward accuracy at 1.0 over this many logged steps while the chosen reward is negative and falling: the
#: collapse LLaMA-Factory #683 / #2984 report (both replies pushed down, the rejected faster; then repetition).
COLLAPSE_WINDOW = 4
#: TRL's logged figures -> the event fields they are reported as.
PREFERENCE_FIGURES = {"rewards/chosen": "chosen_reward", "rewards/rejected": "rejected_reward",
                      "rewards/margins": "reward_margin", "rewards/accuracies": "reward_accuracy",
                      "logps/chosen": "chosen_logps", "logps/rejected": "rejected_logps", "nll_loss": "nll_loss"}


@dataclass
class EncodedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]

    def __len__(self) -> int:
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


@dataclass
class PreparedPairs:
    fmt: ChatFormat
    train: list[EncodedPair]
    eval: list[EncodedPair]
    total_steps: int
    summary: dict[str, Any]
    eval_blocks: list[EncodedPair] = field(init=False)  # what the shared event callback checks for "has eval"

    def __post_init__(self) -> None:
        self.eval_blocks = self.eval


def _reply_ids(fmt: ChatFormat, messages: list[dict[str, str]], source: str) -> tuple[list[int], list[int]]:
    """(ids before the last reply, the last reply's trained ids: content + end token), as SFT encodes them."""
    sample = fmt.encode(messages, source)
    prompt = fmt.training_prompt_ids(messages)
    n = len(prompt)
    if sample.input_ids[:n] != prompt:
        raise ValueError("prompt tokens differ inside the conversation")
    trained = [i for i, label in enumerate(sample.labels) if label != IGNORE_INDEX and i >= n]
    if not trained or any(sample.labels[i] == IGNORE_INDEX for i in range(n, trained[-1] + 1)):
        raise ValueError("the reply's trained tokens do not follow the prompt")
    return prompt, sample.input_ids[n:trained[-1] + 1]


def encode_pair(fmt: ChatFormat, record: Record) -> EncodedPair:
    """A pair record as prompt / chosen / rejected token ids in the training template. ValueError when the two
    conversations do not share the prompt's tokens (a token spanning prompt and reply)."""
    prompt = [m.model_dump() for m in record.prompt_messages]
    chosen = record.messages[-1].model_dump()
    rejected = record.rejected.model_dump()
    source = f"record {record.id}"
    prompt_c, chosen_ids = _reply_ids(fmt, [*prompt, chosen], source)
    prompt_r, rejected_ids = _reply_ids(fmt, [*prompt, rejected], source)
    if prompt_c != prompt_r:
        raise ValueError("chosen and rejected conversations tokenize the prompt differently")
    return EncodedPair(prompt_c, chosen_ids, rejected_ids)


def encode_pairs(fmt: ChatFormat, records: list[Record], max_length: int) -> tuple[list[EncodedPair], dict[str, int]]:
    pairs, dropped = [], {"too_long": 0, "template": 0}
    for record in records:
        try:
            pair = encode_pair(fmt, record)
        except ValueError:
            dropped["template"] += 1
            continue
        if len(pair) > max_length:
            dropped["too_long"] += 1
            continue
        pairs.append(pair)
    return pairs, dropped


def prepare(spec: TrainingSpec, fmt: ChatFormat, records: list[Record], general: list | None,
            emit: Emit) -> PreparedPairs:
    """Split (per style, seeded, as SFT) and encode the pairs; report counts and warnings before loading weights."""
    pairs = [r for r in records if r.is_pair]
    if not pairs:
        raise ValueError("method 'dpo' needs preference pairs: records with a 'rejected' reply (an OpenAI "
                         "preference file, or pairs from datagen); this dataset has none")
    if len(pairs) < len(records):
        emit("warning", f"{len(records) - len(pairs)} records without a rejected reply were left out (DPO trains "
             "on pairs only)", not_pairs=len(records) - len(pairs))
    if general:
        emit("warning", "mix_dataset_artifact is not used by method 'dpo' (a general set has no pairs)")
    split = split_records(pairs, spec.eval_fraction, spec.seed)
    train, train_dropped = encode_pairs(fmt, split.train, spec.max_length)
    held_out, eval_dropped = encode_pairs(fmt, split.eval, spec.max_length)
    if not train:
        raise ValueError(f"no training pair fits max_length={spec.max_length} ({train_dropped['too_long']} too "
                         f"long, {train_dropped['template']} not tokenizable as prompt + reply)")
    per_step = spec.batch_size * spec.grad_accumulation
    steps_per_epoch = max(1, math.ceil(len(train) / per_step))
    total = spec.max_steps or max(1, math.ceil(steps_per_epoch * spec.epochs))
    too_long = train_dropped["too_long"] + eval_dropped["too_long"]
    untokenizable = train_dropped["template"] + eval_dropped["template"]
    reply_tokens = sum(len(p.chosen_ids) + len(p.rejected_ids) for p in train)
    summary = {
        "method": "dpo", "beta": spec.dpo.beta, "nll_weight": spec.dpo.nll_weight,
        "train_samples": len(train), "eval_samples": len(held_out), "mixed_in": 0,
        "dropped_too_long": too_long, "dropped_template": untokenizable, "train_blocks": len(train),
        "optimizer_steps": total, "trained_tokens_per_epoch": reply_tokens,
        "tokens_per_epoch": sum(len(p.prompt_ids) * 2 + len(p.chosen_ids) + len(p.rejected_ids) for p in train),
        "packing_fill": None,
    }
    emit("log", f"{len(train)} training / {len(held_out)} held-out preference pairs, {total} optimizer steps "
         f"(DPO beta {spec.dpo.beta:g}, NLL weight {spec.dpo.nll_weight:g})", **summary)
    if too_long:
        emit("warning", f"{too_long} pairs longer than max_length={spec.max_length} were left out (not "
             "truncated: a cut reply would teach the model not to stop)", dropped=too_long)
    if untokenizable:
        emit("warning", f"{untokenizable} pairs were left out: the template tokenizes their prompt differently "
             "before the chosen and the rejected reply", dropped=untokenizable)
    for text in spec_warnings(spec, len(train), total):
        emit("warning", text)
    return PreparedPairs(fmt, train, held_out, total, summary)


def _dataset(pairs: list[EncodedPair]):
    from datasets import Dataset

    return Dataset.from_dict({"prompt_input_ids": [p.prompt_ids for p in pairs],
                              "chosen_input_ids": [p.chosen_ids for p in pairs],
                              "rejected_input_ids": [p.rejected_ids for p in pairs]})


class _CountingCollator:
    """TRL's preference collator, counting the real tokens a step sees (for tokens/s)."""

    def __init__(self, pad_id: int) -> None:
        from trl.trainer.dpo_trainer import DataCollatorForPreference

        self.inner = DataCollatorForPreference(pad_token_id=pad_id)
        self.tokens_seen = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        self.tokens_seen += sum(2 * len(e["prompt_input_ids"]) + len(e["chosen_input_ids"])
                                + len(e["rejected_input_ids"]) for e in examples)
        return self.inner(examples)


def trainer_class():
    """TRL's DPOTrainer fed emotune's tokenization, with the NLL term over exactly the chosen replies' tokens."""
    from trl import DPOTrainer

    class EmotuneDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset  # pre-tokenized by ChatFormat (see the module docstring)

        def concatenated_forward(self, model, batch, is_ref_model: bool = False):
            output = super().concatenated_forward(model, batch, is_ref_model)
            if "nll_loss" in output:
                tokens = batch["chosen_attention_mask"].sum().clamp(min=1)
                output["nll_loss"] = -output["chosen_logps"].sum() / tokens
            return output

    return EmotuneDPOTrainer


def dpo_config(spec: TrainingSpec, checkpoints: Path, total_steps: int, has_eval: bool, bf16: bool, cuda: bool,
               pad_id: int, eval_every: int):
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(checkpoints), per_device_train_batch_size=spec.batch_size,
        per_device_eval_batch_size=spec.batch_size, gradient_accumulation_steps=spec.grad_accumulation,
        learning_rate=spec.learning_rate, max_steps=total_steps, lr_scheduler_type="cosine",
        warmup_ratio=0.05, weight_decay=0.0, max_grad_norm=1.0, logging_steps=1,
        eval_strategy="steps" if has_eval else "no", eval_steps=eval_every if has_eval else None,
        save_strategy="steps", save_steps=eval_every, save_total_limit=None, seed=spec.seed, data_seed=spec.seed,
        report_to=[], disable_tqdm=True, dataloader_num_workers=0, remove_unused_columns=False,
        bf16=bf16, use_cpu=not cuda, save_safetensors=True,
        gradient_checkpointing=False,  # TRL's default is on; as the supervised path: no recomputation
        beta=spec.dpo.beta, loss_type="sigmoid", rpo_alpha=spec.dpo.nll_weight or None,
        precompute_ref_log_probs=True, max_length=None, max_prompt_length=None, max_completion_length=None,
        padding_value=pad_id, generate_during_eval=False, use_logits_to_keep=False, dataset_num_proc=None,
    )


def train(spec: TrainingSpec, prepared: PreparedPairs, base_dir: Path, work_dir: Path, emit: Emit,
          threads: int = 0, cpu_bf16: bool = False) -> dict[str, Any]:
    """Train (resuming from the latest checkpoint in ``work_dir`` if any); return the run's metrics."""
    import torch
    from transformers import set_seed

    set_seed(spec.seed)
    if threads:
        torch.set_num_threads(threads)
    checkpoints = work_dir / "checkpoints"
    resume_from = latest_checkpoint(checkpoints)
    cuda = torch.cuda.is_available()
    cpu_autocast = cpu_bf16 and not cuda and cpu_has_native_bf16()
    if cpu_autocast:
        emit("log", "training under bf16 autocast on the CPU (native bf16)")
    model = load_model(base_dir, spec)
    tokenizer = prepared.fmt.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prepared.fmt.end_token_id
    collator = _CountingCollator(pad_id)
    has_eval = bool(prepared.eval)
    every = spec.eval_every_steps or max(1, prepared.total_steps // 10)
    args = dpo_config(spec, checkpoints, prepared.total_steps, has_eval, cuda or cpu_autocast, cuda, pad_id, every)
    events = PreferenceEventCallback(spec, prepared, collator, checkpoints, emit)
    started = time.monotonic()
    trainer = trainer_class()(model=model, ref_model=None, args=args, train_dataset=_dataset(prepared.train),
                              eval_dataset=_dataset(prepared.eval) if has_eval else None, processing_class=tokenizer,
                              data_collator=collator, callbacks=[events])
    summary = run_trainer(trainer, resume_from, checkpoints, emit, events)
    return {**summary, "reference_logps_s": events.reference_seconds(started),
            "collapse_warning": events.collapse.warned, **prepared.summary}


class CollapseWatch:
    """Reward accuracy at 1.0 while the chosen reply's log-prob falls below the reference (LLaMA-Factory #683,
    #2984): the pair is separated by pushing both replies down, the rejected one faster, and the model then
    repeats itself. The chosen *reward* (beta x (policy - reference) log-prob of the chosen reply) is compared
    across steps, not the raw log-prob, which depends on each batch's replies."""

    def __init__(self, window: int = COLLAPSE_WINDOW) -> None:
        self.recent: deque[tuple[int, float, float]] = deque(maxlen=window)
        self.warned = False

    def observe(self, step: int, accuracy: float, chosen_reward: float) -> str | None:
        self.recent.append((step, accuracy, chosen_reward))
        if self.warned or len(self.recent) < (self.recent.maxlen or 0):
            return None
        rewards = [r for _, _, r in self.recent]
        if all(a >= 0.999 for _, a, _ in self.recent) and rewards[-1] < 0 and rewards[-1] < rewards[0]:
            self.warned = True
            return (f"reward accuracy has been 1.0 for {len(self.recent)} steps while the chosen replies' "
                    f"log-probs fall below the reference (chosen reward {rewards[0]:.3f} -> {rewards[-1]:.3f} by "
                    f"step {step}): the DPO collapse pattern (LLaMA-Factory #683/#2984) that ends in repetition; "
                    "raise the NLL weight, lower the learning rate or beta, or train fewer steps")
        return None


class PreferenceEventCallback(_EventCallback):
    """The supervised events plus the preference figures: chosen/rejected rewards, margin, accuracy, log-probs,
    the NLL term; held-out reward accuracy and margin; a warning on the collapse pattern."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.collapse = CollapseWatch()
        self.first_step_at: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first_step_at is None:
            self.first_step_at = time.monotonic()

    def reference_seconds(self, started: float) -> float | None:
        """Time from building the trainer to the first step: mostly the reference log-probs' pass."""
        return round(self.first_step_at - started, 2) if self.first_step_at else None

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs or "rewards/chosen" not in logs:
            return super().on_log(args, state, control, logs=logs, **kwargs)
        elapsed = max(1e-6, time.monotonic() - self.started)
        done = state.global_step - self.start_step
        rate = done / elapsed
        eta = (state.max_steps - state.global_step) / rate if rate > 0 else None
        self.trained_tokens_total = int(self.prepared.summary["trained_tokens_per_epoch"] * (state.epoch or 0))
        figures = {name: round(float(logs[key]), 5) for key, name in PREFERENCE_FIGURES.items() if key in logs}
        self.emit("progress", f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f} reward margin "
                  f"{figures.get('reward_margin', 0.0):.4f} accuracy {figures.get('reward_accuracy', 0.0):.2f}",
                  done=state.global_step, total=state.max_steps, step=state.global_step,
                  epoch=round(state.epoch or 0.0, 3), loss=round(float(logs["loss"]), 5),
                  lr=float(logs.get("learning_rate", 0.0)),
                  tokens_per_s=round(self.collator.tokens_seen / elapsed, 1),
                  eta_s=None if eta is None else round(eta, 1), **figures)
        warning = self.collapse.observe(state.global_step, figures.get("reward_accuracy", 0.0),
                                        figures.get("chosen_reward", 0.0))
        if warning:
            self.emit("warning", warning, step=state.global_step, collapse=True, **figures)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = metrics or {}
        if "eval_loss" not in metrics:
            return
        extra = {name: round(float(metrics["eval_" + key]), 5) for key, name in PREFERENCE_FIGURES.items()
                 if "eval_" + key in metrics}
        self.emit("metric", f"step {state.global_step} eval loss {metrics['eval_loss']:.4f} reward accuracy "
                  f"{extra.get('reward_accuracy', 0.0):.2f}", step=state.global_step,
                  eval_loss=round(float(metrics["eval_loss"]), 5),
                  train_loss=_last(state, "loss"), **{f"eval_{k}": v for k, v in extra.items()})


def _last(state, key: str) -> float | None:
    values = [h[key] for h in state.log_history if key in h]
    return round(float(values[-1]), 5) if values else None
