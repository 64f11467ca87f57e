"""Run an XTuner tool inside the XTuner virtualenv with the CPU shims applied first.

Usage: ``<xtuner-venv>/bin/python xtuner_launch.py xtuner.tools.train CFG --work-dir D`` (or
``xtuner.tools.model_converters.pth_to_hf`` / ``.merge``; or ``torch.distributed.run ... xtuner_launch.py
xtuner.tools.train CFG ... --launcher pytorch [--deepspeed deepspeed_zero2]`` for several processes). Never the ``xtuner`` CLI: it ignores a failing tool's
exit status. Standalone on purpose (no emotune import): it runs under XTuner's own Python stack.

Shims, each a no-op where the real thing exists (GPU images):
- ``torch.cpu.is_bf16_supported`` is missing from the CPU torch; XTuner calls it at import.

And one guard everywhere: transformers' ``Auto*.from_pretrained`` never runs a model's own code. The base model is
named by a request, and XTuner's ``merge`` tool hard-codes ``trust_remote_code=True``; here it is always False.
The process also dies with the service that started it (a training must not outlive its job's owner).
"""

from __future__ import annotations

import runpy
import sys


def die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def apply_shims() -> None:
    import torch

    if not hasattr(torch.cpu, "is_bf16_supported"):
        torch.cpu.is_bf16_supported = lambda: False


def refuse_remote_code() -> None:
    """Every ``transformers.Auto*.from_pretrained`` runs with ``trust_remote_code=False``, whatever its caller
    asks (a model whose config needs its own code then fails to load instead of running that code)."""
    import transformers

    for name in ("AutoConfig", "AutoTokenizer", "AutoModel", "AutoModelForCausalLM"):
        cls = getattr(transformers, name)
        original = cls.from_pretrained.__func__

        def from_pretrained(klass, *args, _original=original, **kwargs):
            kwargs["trust_remote_code"] = False
            return _original(klass, *args, **kwargs)

        cls.from_pretrained = classmethod(from_pretrained)


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: xtuner_launch.py <xtuner module> [args...]")
    module = sys.argv[1]
    if not module.startswith("xtuner.tools.") and module != "torch.distributed.run":
        raise SystemExit(f"refusing to run {module!r}: only xtuner.tools.* modules (and torchrun, which starts "
                         "one of them per process)")
    die_with_parent()
    apply_shims()
    refuse_remote_code()
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
