#!/usr/bin/env bash
# The main job on the embedded default (no GPU, no API key, no internet): installs what it needs, starts every
# service as a local process on loopback, fine-tunes two styles end to end and prints the evaluation.
# The API and UI stay up afterwards (`--exit` stops them); extra arguments go to `emotune local demo`.
# With `--voice EXPORT` it runs the voice job instead (docs/voice.md): fine-tune on the person's own replies in a
# WeChat or ChatGPT export; the other arguments go to `emotune voice local`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$("$ROOT/scripts/bootstrap.sh")
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
ARGS=() VOICE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --voice) VOICE="${2:?--voice needs an export: a folder, a zip, a CSV or conversations.json}"; shift 2 ;;
    --voice=*) VOICE="${1#--voice=}"; shift ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
if [ -n "$VOICE" ]; then
  exec "$VENV/bin/python" -m emotune.cli.main voice local "$VOICE" "${ARGS[@]}"
fi
exec "$VENV/bin/python" -m emotune.cli.main local demo "${ARGS[@]}"
