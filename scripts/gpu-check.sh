#!/usr/bin/env bash
# emotune's GPU code, run for real on a lent CUDA host in one call (checks: scripts/gpu_check.py):
# the hf trainer backend's LoRA in bf16 (and 4-bit QLoRA when bitsandbytes is there), the multi-process case
# (the hf worker under torchrun --nproc-per-node 2, DDP and FSDP; with >= 2 GPUs, else "SKIP ... needs 2 CUDA
# devices"), generation of the merged
# export on CUDA with the engine's prompt and stop ids (the reply must end by itself), the sentence-transformers
# embedder. One line per check, then "N passed, M failed". Without CUDA it prints "... skipped" and exits 0.
#
# The host: PyTorch, transformers, peft, accelerate, sentence-transformers installed; no network; at most
# 64 MiB brought along. What it lacks comes in a bundle built here first, with network:
#   scripts/gpu-check.sh --prepare [--python 3.11]     # -> var/gpu-check (wheels, models; prints its size)
# then carry var/gpu-check with the working tree and run, on the host:
#   bash scripts/gpu-check.sh                          # about 2 minutes on one GPU; stops itself at 8
# (PYTHON=... picks the host's interpreter; the bundle's wheels are for the CPython version --python named.)
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=${EMOTUNE_GPU_CHECK_BUNDLE:-var/gpu-check}

if [ "${1:-}" = "--prepare" ]; then
  shift
  python=${EMOTUNE_PYTHON:-$(scripts/bootstrap.sh)/bin/python}
  exec "$python" scripts/gpu_check.py --prepare --bundle "$bundle" "$@"
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu-check: no CUDA device visible to $python (or no torch); skipped"
  exit 0
fi
site=""
if [ -d "$bundle/wheels" ]; then
  site=$(mktemp -d)/site
  if ! "$python" -m pip install --quiet --no-index --no-deps --target "$site" "$bundle"/wheels/*.whl; then
    echo "gpu-check: the bundle's wheels do not install on $("$python" -V 2>&1) (built for CPython" \
         "$(sed -n 's/.*"python": "\([^"]*\)".*/\1/p' "$bundle/manifest.json")): rerun --prepare --python X.Y"
    echo "0 passed, 1 failed"
    exit 1
  fi
fi
PYTHONPATH="$PWD${site:+:$site}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  timeout 460 "$python" scripts/gpu_check.py --bundle "$bundle"
status=$?
if [ "$status" -eq 124 ]; then
  echo "gpu-check: stopped after 460 s (the checks printed above are the ones that ended)"
  echo "0 passed, 1 failed"
fi
exit "$status"
