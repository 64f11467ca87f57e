"""emotune: styles + seed questions -> styled data -> validated set -> LoRA fine-tune -> served chat model."""

__version__ = "0.1.0"
