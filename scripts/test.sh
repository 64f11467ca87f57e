#!/usr/bin/env bash
# The test command: installs what the tests need (Debian servers, virtualenv), then runs the whole suite.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/emotune -k store
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/system-deps.sh"
VENV=$("$ROOT/scripts/bootstrap.sh")
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$VENV/bin/python" -m pytest -ra "$@"
