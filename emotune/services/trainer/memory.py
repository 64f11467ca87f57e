"""Memory planner: the expected GPU memory per process of a fine-tuning run, by a stated formula.

``python -m emotune.services.trainer.memory --table`` prints the table in docs/trainer.md (Qwen2.5 1.5B-72B);
``python -m emotune.services.trainer.memory --model DIR --method qlora --gpus 2 --strategy zero2`` plans one run.

Per GPU, in bytes (N = processes, b = per-device micro-batch, s = sequence length):

- **weights**: every parameter at its precision: bf16 = 2 bytes; 4-bit (QLoRA, bitsandbytes nf4 with double
  quantization) = 0.5 bytes + 1/64 byte of block constants for the linear layers, embeddings and lm_head stay
  bf16; 8-bit = 1 byte. ZeRO-3 / FSDP divide them by N.
- **trainable state**: a LoRA parameter 16 bytes (peft keeps adapters in fp32: weight 4, gradient 4, Adam m and v
  8), a fully trained one 14 besides its bf16 weight (bf16 gradient 2, fp32 master weight + Adam 12: DeepSpeed's
  mixed-precision accounting). ZeRO-2 divides the gradient and Adam state by N, ZeRO-3 / FSDP all of it; DDP keeps
  everything on every GPU. LoRA trains r x (in + out) per target matrix.
- **activations** (bf16, SDPA/flash attention: no s x s scores kept), per layer
  ``s b (14 h + 8 I + 4 kv)`` (norm, projection and MLP inputs/outputs saved for backward; h hidden, I MLP width,
  kv the key/value width); with activation checkpointing (XTuner's default) ``2 s b h`` per layer plus one layer
  recomputed in full. Plus the logits: ``10 s b V`` (bf16 logits, their fp32 upcast in the loss and its gradient).
- **overhead**: 1 GiB (CUDA context, cuBLAS workspace, allocator slack).

Not counted: the DPO reference pass, optimizer offload, sequence parallelism; fragmentation beyond the 1 GiB.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

GIB = 1024**3
OVERHEAD_BYTES = 1 * GIB
TRAINABLE_BYTES = 16  # a LoRA parameter: fp32 weight + fp32 gradient + Adam m + v
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
Method = Literal["lora", "qlora", "full"]

#: Qwen2.5 base models' config.json fields (the planner reads the same fields from a model directory).
QWEN25: dict[str, dict[str, Any]] = {
    "Qwen2.5-1.5B": {"hidden_size": 1536, "num_hidden_layers": 28, "intermediate_size": 8960,
                     "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                     "tie_word_embeddings": True, "model_type": "qwen2"},
    "Qwen2.5-7B": {"hidden_size": 3584, "num_hidden_layers": 28, "intermediate_size": 18944,
                   "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                   "tie_word_embeddings": False, "model_type": "qwen2"},
    "Qwen2.5-14B": {"hidden_size": 5120, "num_hidden_layers": 48, "intermediate_size": 13824,
                    "num_attention_heads": 40, "num_key_value_heads": 8, "vocab_size": 152064,
                    "tie_word_embeddings": False, "model_type": "qwen2"},
    "Qwen2.5-32B": {"hidden_size": 5120, "num_hidden_layers": 64, "intermediate_size": 27648,
                    "num_attention_heads": 40, "num_key_value_heads": 8, "vocab_size": 152064,
                    "tie_word_embeddings": False, "model_type": "qwen2"},
    "Qwen2.5-72B": {"hidden_size": 8192, "num_hidden_layers": 80, "intermediate_size": 29568,
                    "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 152064,
                    "tie_word_embeddings": False, "model_type": "qwen2"},
}


@dataclass(frozen=True)
class Shape:
    """What the planner needs of a decoder-only transformer (Llama / Qwen2 / Mistral layout)."""

    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Shape:
        hidden, heads = config["hidden_size"], config["num_attention_heads"]
        return cls(hidden=hidden, layers=config["num_hidden_layers"], intermediate=config["intermediate_size"],
                   heads=heads, kv_heads=config.get("num_key_value_heads") or heads,
                   head_dim=config.get("head_dim") or hidden // heads, vocab=config["vocab_size"],
                   tied=bool(config.get("tie_word_embeddings", False)),
                   qkv_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")))

    @classmethod
    def from_model_dir(cls, path: Path) -> Shape:
        return cls.from_config(json.loads((path / "config.json").read_text(encoding="utf-8")))

    def matrices(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder layer."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        per_layer = sum(a * b for a, b in self.matrices().values())
        return self.layers * per_layer

    @property
    def other_params(self) -> int:
        """Embeddings, lm_head (unless tied), norms and biases: never quantized."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        bias = (q + 2 * kv) if self.qkv_bias else 0
        embed = self.vocab * self.hidden * (1 if self.tied else 2)
        return embed + self.layers * (2 * self.hidden + bias) + self.hidden

    @property
    def params(self) -> int:
        return self.linear_params + self.other_params

    def lora_params(self, r: int, targets: tuple[str, ...] = LORA_TARGETS) -> int:
        return self.layers * sum(r * (a + b) for name, (a, b) in self.matrices().items() if name in targets)


@dataclass(frozen=True)
class Plan:
    params: int
    trainable: int
    weights: float
    trainable_state: float
    activations: float
    overhead: float

    @property
    def per_gpu(self) -> float:
        return self.weights + self.trainable_state + self.activations + self.overhead

    def describe(self) -> str:
        return (f"{self.per_gpu / GIB:.1f} GiB per GPU (weights {self.weights / GIB:.1f}, trained parameters + "
                f"Adam {self.trainable_state / GIB:.1f}, activations {self.activations / GIB:.1f}, overhead "
                f"{self.overhead / GIB:.1f}; {self.params / 1e9:.2f}B parameters, {self.trainable / 1e6:.1f}M "
                "trained)")


def plan(shape: Shape, method: Method = "lora", *, seq_len: int = 2048, micro_batch: int = 1, gpus: int = 1,
         strategy: str = "ddp", lora_r: int = 8, checkpointing: bool = True, quant_bits: int = 4) -> Plan:
    """Expected memory of one GPU (see the module docstring for every term)."""
    if method == "qlora":
        weights = shape.linear_params * (0.5 + 1 / 64 if quant_bits == 4 else 1.0) + shape.other_params * 2
    else:
        weights = shape.params * 2.0  # bf16 (for "full", the working copy of the trained weights)
    trainable = shape.params if method == "full" else shape.lora_params(lora_r)
    # full: bf16 gradient 2 + fp32 master weight, m, v 12; LoRA (fp32 adapters): weight 4, gradient 4, m, v 8
    per_param, kept_whole = (14, 0) if method == "full" else (TRAINABLE_BYTES, 4)
    if gpus > 1 and strategy in ("zero3", "fsdp"):
        weights, state = weights / gpus, trainable * per_param / gpus
    elif gpus > 1 and strategy == "zero2":
        state = trainable * (kept_whole + (per_param - kept_whole) / gpus)
    else:
        state = trainable * per_param
    s, b, h = seq_len, micro_batch, shape.hidden
    kv = shape.kv_heads * shape.head_dim
    full_layer = s * b * (14 * h + 8 * shape.intermediate + 4 * kv)
    layers = (shape.layers * 2 * s * b * h + full_layer) if checkpointing else shape.layers * full_layer
    activations = layers + 10 * s * b * shape.vocab
    return Plan(params=shape.params, trainable=trainable, weights=weights, trainable_state=state,
                activations=activations, overhead=OVERHEAD_BYTES)


def plan_spec(spec: Any, shape: Shape) -> Plan:
    """The plan of a ``TrainingSpec`` (hf: no activation checkpointing; XTuner: checkpointing, its default)."""
    from emotune.services.trainer.spec import per_process_batch

    micro_batch, _ = per_process_batch(spec.batch_size, spec.grad_accumulation, spec.processes)
    method: Method = "qlora" if spec.quantization != "none" else "lora"
    return plan(shape, method, seq_len=spec.max_length, micro_batch=micro_batch, gpus=spec.processes,
                strategy=spec.strategy, lora_r=spec.lora.r, checkpointing=spec.backend == "xtuner",
                quant_bits=8 if spec.quantization == "8bit" else 4)


TABLE_COLUMNS: list[tuple[str, dict[str, Any]]] = [
    ("QLoRA, 1 GPU", {"method": "qlora", "gpus": 1}),
    ("LoRA bf16, 1 GPU", {"method": "lora", "gpus": 1}),
    ("LoRA, 2 GPUs ZeRO-3", {"method": "lora", "gpus": 2, "strategy": "zero3"}),
    ("LoRA, 8 GPUs ZeRO-3", {"method": "lora", "gpus": 8, "strategy": "zero3"}),
    ("full, 8 GPUs ZeRO-3", {"method": "full", "gpus": 8, "strategy": "zero3"}),
]


def table(seq_len: int = 2048, micro_batch: int = 1, lora_r: int = 8) -> str:
    """Markdown: GiB per GPU for the Qwen2.5 sizes (activation checkpointing on, as XTuner trains)."""
    lines = ["| model | parameters | " + " | ".join(name for name, _ in TABLE_COLUMNS) + " |",
             "|---|---|" + "---|" * len(TABLE_COLUMNS)]
    for name, config in QWEN25.items():
        shape = Shape.from_config(config)
        cells = [f"{plan(shape, seq_len=seq_len, micro_batch=micro_batch, lora_r=lora_r, **options).per_gpu / GIB:.1f}"
                 for _, options in TABLE_COLUMNS]
        lines.append(f"| {name} | {shape.params / 1e9:.2f}B | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", action="store_true", help="print the Qwen2.5 table of docs/trainer.md")
    parser.add_argument("--model", type=Path, help="a model directory (its config.json)")
    parser.add_argument("--method", choices=["lora", "qlora", "full"], default="lora")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--strategy", choices=["ddp", "zero2", "zero3", "fsdp"], default="ddp")
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--no-checkpointing", action="store_true", help="activation checkpointing off (hf)")
    args = parser.parse_args(argv)
    if args.table or args.model is None:
        print(f"seq_len {args.seq_len}, micro-batch {args.micro_batch}, LoRA r {args.lora_r} on all 7 linear "
              "layers, activation checkpointing; GiB per GPU\n")
        print(table(args.seq_len, args.micro_batch, args.lora_r))
        return
    result = plan(Shape.from_model_dir(args.model), args.method, seq_len=args.seq_len,
                  micro_batch=args.micro_batch, gpus=args.gpus, strategy=args.strategy, lora_r=args.lora_r,
                  checkpointing=not args.no_checkpointing)
    print(result.describe())


if __name__ == "__main__":
    main()

