#!/usr/bin/env bash
# Debian packages the tests run against for real: OpenStack Swift (S3 server), Prometheus, Chromium (and CJK
# fonts so screenshots and charts show Chinese), and the toolchain scripts/llamacpp.sh builds llama.cpp with.
# Installs only what is missing; needs root (CI and the dev machines run as root) or sudo.
set -euo pipefail
want=(swift-proxy swift-object swift-container swift-account prometheus chromium chromium-driver fonts-noto-cjk fonts-wqy-microhei
      fonts-noto-color-emoji cmake ninja-build g++)
missing=()
for p in "${want[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "[system-deps] installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
# Debian starts the packaged Prometheus as a daemon on :9090; the tests run their own instances.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
