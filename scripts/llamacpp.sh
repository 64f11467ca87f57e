#!/usr/bin/env bash
# Build llama.cpp's `llama-server`, `llama-quantize` and `llama-export-lora` once per machine and print the install dir.
# llama.cpp is neither in Debian nor a binary wheel on PyPI; the llama-cpp-python sdist (MIT) vendors the whole
# tree (server, quantize, convert_hf_to_gguf.py, convert_lora_to_gguf.py, gguf-py), so it is the pinned source.
# The dir holds bin/ (the three tools), the convert scripts with their conversion/ and gguf-py/ packages; a stamp
# makes later calls instant.
# ~10 minutes on 2 cores the first time. EMOTUNE_LLAMACPP_NATIVE=OFF builds portable binaries (Docker images).
set -euo pipefail
VERSION=0.3.36
CACHE=${EMOTUNE_CACHE:-$HOME/.cache/emotune}
DEST=${EMOTUNE_LLAMACPP_DIR:-$CACHE/llama.cpp-$VERSION}
NATIVE=${EMOTUNE_LLAMACPP_NATIVE:-ON}
log() { echo "[llama.cpp] $*" >&2; }

if [ -f "$DEST/.built" ] && [ -x "$DEST/bin/llama-server" ] && [ -x "$DEST/bin/llama-quantize" ] && [ -x "$DEST/bin/llama-export-lora" ]; then
  echo "$DEST"; exit 0
fi
if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null || ! command -v g++ >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  log "installing the build toolchain (cmake ninja-build g++)"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cmake ninja-build g++ >&2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log "fetching the llama-cpp-python $VERSION sdist (llama.cpp source)"
"${EMOTUNE_PIP_PYTHON:-python3}" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
  "llama-cpp-python==$VERSION" -d "$work" >&2
tar -xzf "$work"/llama_cpp_python-"$VERSION".tar.gz -C "$work"
src="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"
log "building llama-server, llama-quantize, llama-export-lora into $DEST (first time only; ~10 min on 2 cores)"
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE="$NATIVE" \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DBUILD_SHARED_LIBS=OFF >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log" >&2; exit 1; }
# Ninja prints "[done/total] ..." per compiled file; a line every 20 s is the visible progress.
ninja -C "$work/build" -j"$(nproc)" llama-server llama-quantize llama-export-lora >"$work/ninja.log" 2>&1 &
ninja_pid=$!
while kill -0 "$ninja_pid" 2>/dev/null; do
  sleep 20
  step=$(grep -oE '^\[[0-9]+/[0-9]+\]' "$work/ninja.log" | tail -n 1)
  log "compiling ${step:-(configuring)} after ${SECONDS}s"
done
wait "$ninja_pid" || { tail -n 30 "$work/ninja.log" >&2; log "build failed"; exit 1; }
test -x "$work/build/bin/llama-server" || { log "build failed"; exit 1; }
rm -rf "$DEST.tmp"; mkdir -p "$DEST.tmp/bin"
cp "$work"/build/bin/{llama-server,llama-quantize,llama-export-lora} "$DEST.tmp/bin/"
cp "$src"/convert_hf_to_gguf.py "$src"/convert_lora_to_gguf.py "$DEST.tmp/"
cp -r "$src/gguf-py" "$src/conversion" "$DEST.tmp/"
echo "$VERSION native=$NATIVE" > "$DEST.tmp/.built"
rm -rf "$DEST"; mv "$DEST.tmp" "$DEST"
log "built in $DEST"
echo "$DEST"
