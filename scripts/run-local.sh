#!/usr/bin/env bash
# The main job on the embedded default (no GPU, no API key, no internet): installs what it needs, starts every
# service as a local process on loopback, fine-tunes two styles end to end and prints the evaluation.
# The API and UI stay up afterwards (`--exit` stops them); extra arguments go to `emotune local demo`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$("$ROOT/scripts/bootstrap.sh")
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$VENV/bin/python" -m emotune.cli local demo "$@"
