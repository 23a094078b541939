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
# test/install.test.ts installs the packed package into an empty folder with --offline, which resolves retnet's
# dependency ranges from npm's cache; `npm ci` caches the locked tarballs but not the registry metadata that a range
# resolution reads, so cache it for the locked production dependencies (found missing on a fresh machine, 2026-12-02).
node -e 'const l = require("./package-lock.json"); const s = new Set();
for (const [p, e] of Object.entries(l.packages)) if (p && !e.dev && !e.link) s.add(p.slice(p.lastIndexOf("node_modules/") + 13) + "@" + e.version);
console.log([...s].join("\n"))' | xargs npm cache add --prefer-offline >/dev/null
node bin/retnet.js info
