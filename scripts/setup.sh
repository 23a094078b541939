#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks for retnet and its tests (patchelf: test/install.test.ts bundles the
# prebuilt addon), then the npm dependencies (which builds the native addon through node-gyp and compiles the
# TypeScript). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in libopenblas-dev g++ make python3 pkg-config patchelf fonts-dejavu-core; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "setup: retnet needs Node.js >= 20, found $(node --version)" >&2
  exit 1
fi

npm ci --no-audit --no-fund
node bin/retnet.js info
