"""emotune trainer service: LoRA / QLoRA fine-tuning jobs over gRPC.

Two backends behind one job spec: ``hf`` (transformers + peft; the CPU path, also GPU with bitsandbytes) and
``xtuner`` (XTuner 0.2 in its own virtualenv; the production QLoRA path). Training text comes from the base
model's chat template with assistant-only loss; checkpoints are kept by held-out loss; the result is merged and
exported with the same template and stop tokens in every format, checked token by token (``emotune.models.chat_template``).
"""
