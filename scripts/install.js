// The package's `install` script: node-gyp-build uses the prebuilt addon when one loads here (prebuilds/, see
// docs/packaging.md) and otherwise builds from source. The source build compiles the addon twice (binding.gyp: the
// baseline and the avx2 build), so it runs on every core unless JOBS says otherwise. When the build fails too, the
// install still succeeds: the library runs on the reference backend, and this line says how to get the fast one.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

const bin = createRequire(import.meta.url).resolve('node-gyp-build/bin.js');
const r = spawnSync(process.execPath, [bin], { stdio: 'inherit', env: { JOBS: 'max', ...process.env } });
if (r.status !== 0)
  console.warn(
    'retnet: no prebuilt native addon fits this system and building it from source failed, so retnet falls back to ' +
      'the much slower reference backend. Fix: install a C++ compiler, make, python3, pkg-config and OpenBLAS ' +
      "(Debian: apt-get install g++ make python3 pkg-config libopenblas-dev), then run 'npm rebuild retnet'.",
  );
