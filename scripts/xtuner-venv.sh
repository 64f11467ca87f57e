#!/usr/bin/env bash
# Build (once) the separate XTuner virtualenv and print its path.
# The venv lives under the cache dir, named by a hash of requirements/xtuner.txt and BUILD_STEPS, so a change of
# either builds a new one and an unchanged one is reused at once. Concurrent callers wait on a lock; a build
# that died half-way (no .complete marker) is thrown away and redone.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${EMOTUNE_CACHE_DIR:-${EMOTUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/emotune}}
PYTHON=${EMOTUNE_PYTHON:-python3.11}
REQ="$ROOT/requirements/xtuner.txt"
STANDIN="$ROOT/emotune/services/trainer/xtuner_standins"
# Bump when the build steps below change (the key must not move on a comment edit: a build takes ~5 min).
BUILD_STEPS=1
key=$( (cat "$REQ"; echo "steps=$BUILD_STEPS") | sha256sum | cut -c1-12)
VENV="$CACHE/xtuner-venv-$key"
log() { echo "[xtuner-venv] $*" >&2; }

install_standin() {  # cheap, so always refreshed from the checkout
  local site
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  rm -rf "$site/torchvision" && cp -r "$STANDIN/torchvision" "$site/torchvision"
}
if [ -f "$VENV/.complete" ]; then install_standin; echo "$VENV"; exit 0; fi
mkdir -p "$CACHE"
exec 9>"$CACHE/xtuner-venv.lock"
flock 9
if [ ! -f "$VENV/.complete" ]; then
  started=$(date +%s)
  log "building $VENV (first run: several minutes)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" >&2; }
  pip install -r "$REQ"
  # PyPI's torchvision is a CUDA build that fails to import beside the CPU torch, and xtuner imports it at module
  # load: replace it by the stand-in (CPU venv only; GPU images install the real one from requirements/gpu-*).
  pip uninstall -y torchvision
  install_standin
  # LMDeploy's chat-template code (pure Python) to check exported chat-template JSON; its engines need CUDA.
  pip install pydantic pybase64
  pip install --no-deps lmdeploy==0.18.0
  "$VENV/bin/python" -c 'import xtuner, transformers, lmdeploy.model; print("xtuner", xtuner.__version__, "transformers", transformers.__version__)' >&2
  touch "$VENV/.complete"
  log "built in $(( $(date +%s) - started ))s"
fi
echo "$VENV"
