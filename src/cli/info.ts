// `retnet info`: which backend is in use, the BLAS library and its core type, threads, the addon's build flags and
// the kernels each device implements; the GPU, driver and CUDA toolkit when the cuda device is present.

import {
  cpuBackend,
  cpuInfo,
  cpuUnavailableReason,
  cudaBackend,
  cudaUnavailableReason,
  getBackend,
  referenceBackend,
  threadCount,
} from '../backend/index.js';
import type { CudaInfo } from '../backend/cuda/addon.js';
import { implementedKernels } from '../backend/kernels.js';
import { bool, defineCommand } from './command.js';

/** The GPU, its driver and the toolkit the cuda addon was built with (versions as major.minor). */
function cudaSummary(i: CudaInfo) {
  const version = (v: number) => `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;
  return {
    gpu: i.name,
    computeCapability: i.computeCapability,
    memoryGiB: +(i.memoryBytes / 2 ** 30).toFixed(1),
    driverCuda: version(i.driver),
    runtime: version(i.runtime),
    cublas: i.cublas,
    compiledFor: i.compiledFor,
  };
}

export const infoCommand = defineCommand({
  name: 'info',
  summary: 'print the backend, BLAS library, core type, threads, addon build flags and kernels per device',
  flags: { json: bool('print one JSON object') },
  async run({ values }) {
    const backend = getBackend();
    const native = cpuInfo();
    const cuda = cudaBackend();
    const devices = [referenceBackend(), cpuBackend(), cuda].filter((d) => d !== null);
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
            path: native.path,
            variant: native.variant,
            cpuX86_64V3: native.cpuX86_64V3,
            compiler: `g++ ${native.compiler}`,
            openmp: native.openmp,
          }
        : null,
      cuda: cuda ? cudaSummary(cuda.info()) : `unavailable: ${cudaUnavailableReason()}`,
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
});
