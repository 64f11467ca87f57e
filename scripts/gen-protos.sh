#!/usr/bin/env bash
# Regenerate the gRPC stubs in emotune/v1 from proto/emotune/v1/*.proto.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$("$ROOT/scripts/bootstrap.sh")/bin/python}
exec "$PY" -m emotune.grpc.protogen "$ROOT/proto" "$ROOT"
