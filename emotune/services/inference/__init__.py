"""emotune inference service: loads base models, merged models and base + LoRA adapter pairs from the artifact
store and streams chat tokens over gRPC (``emotune.v1.Inference``).

Engines sit behind one interface (``engines.base``): transformers on CPU (the embedded default) and LMDeploy on
GPU. Prompts are always built from the model's own exported chat template and generation stops on every eos id
of its ``generation_config.json``, so serving matches training (the #1 pain of the seed tutorials).
"""
