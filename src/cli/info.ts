// `retnet info`: which backend is in use, the BLAS library and its core type, threads, the addon's build flags and
// the kernels each device implements.

import {
  cpuBackend,
  cpuInfo,
  cpuUnavailableReason,
  getBackend,
  referenceBackend,
  threadCount,
} from '../backend/index.js';
import { implementedKernels } from '../backend/kernels.js';
import type { Command } from './command.js';
import { parseFlags } from './command.js';

export const infoCommand: Command = {
  name: 'info',
  summary: 'print the backend, BLAS library, core type, threads, addon build flags and kernels per device',
  usage: 'retnet info [--json]',
  async run(argv) {
    const { values } = parseFlags('info', argv, { json: { type: 'boolean' } });
    const backend = getBackend();
    const native = cpuInfo();
    const devices = [referenceBackend(), cpuBackend()].filter((d) => d !== null);
    const report = {
      backend: backend.name,
      cpuAddon: native ? 'loaded' : `unavailable: ${cpuUnavailableReason()}`,
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
      kernels: Object.fromEntries(devices.map((d) => [d.name, implementedKernels(d.name)])),
    };
    if (values.json) process.stdout.write(`${JSON.stringify(report)}\n`);
    else {
      const { kernels, ...rest } = report;
      for (const [k, v] of Object.entries(rest))
        process.stdout.write(
          `${k.padEnd(18)} ${typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}\n`,
        );
      // One line per device and dtype: the kernels it implements itself (others run through a fallback).
      for (const [device, table] of Object.entries(kernels)) {
        const byDType = new Map<string, string[]>();
        for (const [name, dtypes] of Object.entries(table))
          for (const d of dtypes) byDType.set(d, [...(byDType.get(d) ?? []), name]);
        for (const [dtype, names] of byDType)
          process.stdout.write(`${`kernels ${device}`.padEnd(18)} ${dtype}: ${names.join(', ')}\n`);
      }
    }
    return 0;
  },
};
