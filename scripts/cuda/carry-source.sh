#!/usr/bin/env bash
# Packs this tree's sources (no compiled output) into CARRY/source.tar.gz for building on the device machine
# (device-run.sh's `build` stage: tsc and the CUDA addon there, whose nvcc and PyTorch's cuBLAS need no toolkit
# here): native/, src/, test/, bench/, examples/, scripts/, the TypeScript compiler, Node's Node-API headers and
# node-addon-api. The production dependencies come from tree.tar.xz (carry.sh), which must exist. Light on CPU
# (gzip -1), for when this machine is busy with timing runs or lacks cuBLAS.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
carry=${CARRY:-/work/main/.cuda-carry}
[ -f "$carry/tree.tar.xz" ] || { echo "carry-source: run carry.sh once first (tree.tar.xz: Node's dependencies)"; exit 1; }
inc=$(mktemp -d)
mkdir -p "$inc/node-include"
for h in node_api.h node_api_types.h js_native_api.h js_native_api_types.h; do cp /usr/include/node/$h "$inc/node-include/"; done
cd "$root"
tar czf "$carry/source.tar.gz" --transform 's,^,tree/,' --exclude='*.md' native src test bench examples scripts \
  tsconfig.json package.json node_modules/typescript/package.json node_modules/typescript/bin \
  node_modules/typescript/lib/tsc.js node_modules/typescript/lib/_tsc.js $(cd "$root" && ls node_modules/typescript/lib/lib.*.d.ts) \
  node_modules/@types/node node_modules/node-addon-api -C "$inc" --transform 's,^tree/node-include,tree/.node-include,' node-include
rm -rf "$inc"
du -sh "$carry/source.tar.gz"
