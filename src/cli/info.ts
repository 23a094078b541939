// `retnet info`: which backend is in use, the BLAS library and its core type, threads and the addon's build flags.

import { getBackend, nativeInfo, nativeUnavailableReason, threadCount } from '../backend/index.js';
import { bool, defineCommand } from './command.js';

export const infoCommand = defineCommand({
  name: 'info',
  summary: 'print the backend, BLAS library, core type, threads and addon build flags',
  flags: { json: bool('print one JSON object') },
  async run({ values }) {
    const backend = getBackend();
    const native = nativeInfo();
    const report = {
      backend: backend.name,
      nativeAddon: native ? 'loaded' : `unavailable: ${nativeUnavailableReason()}`,
      threads: threadCount(),
      blas: native?.blas ?? null,
      blasConfig: native?.blasConfig ?? null,
      blasCoreType: native?.blasCoreType ?? null,
      OPENBLAS_CORETYPE: process.env.OPENBLAS_CORETYPE ?? null,
      blasThreads: native?.blasThreads ?? null,
      OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? null,
      addonBuild: native
        ? {
            compiler: `g++ ${native.compiler}`,
            flags: '-O3 -march=native -fopenmp',
            openmp: native.openmp,
            avx2: native.avx2,
            avx512: native.avx512,
          }
        : null,
      node: process.version,
    };
    if (values.json) process.stdout.write(`${JSON.stringify(report)}\n`);
    else
      for (const [k, v] of Object.entries(report))
        process.stdout.write(
          `${k.padEnd(18)} ${typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}\n`,
        );
    return 0;
  },
});
