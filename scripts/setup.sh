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
# dependency ranges afresh from npm's cache (a user's install does not read our lock): the locked tarballs that
# `npm ci` cached are not enough once a transitive range has a newer release (fastify's fast-json-stringify 7.3.11,
# 2026-12-03). So install, online, a package with retnet's dependency fields into a scratch folder: that caches the
# registry metadata and every tarball that the offline install will resolve to.
deps=$(mktemp -d)
node -e 'const p = require("./package.json"); const f = ["dependencies", "peerDependencies", "peerDependenciesMeta"];
const out = { name: "retnet-deps", version: "0.0.0", private: true };
for (const k of f) if (p[k]) out[k] = p[k];
require("fs").writeFileSync(process.argv[1] + "/package.json", JSON.stringify(out))' "$deps"
(cd "$deps" && npm install --ignore-scripts --no-audit --no-fund --package-lock=false >/dev/null)
rm -rf "$deps"
node bin/retnet.js info
