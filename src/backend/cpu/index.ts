// The cpu device on Node: loads the addon at first use and registers the device with the selection (select.ts).
// RETNET_THREADS sets the thread count of the cpu kernels and OpenBLAS (default: all cores).

import { availableParallelism } from 'node:os';

import { BackendError } from '../../errors.js';
import { registerDevice } from '../select.js';
import type { CpuAddonInfo } from './addon.js';
import { type CpuDevice, createCpuDevice } from './device.js';
import { loadAddon } from './load.js';

let cpu: CpuDevice | null | undefined;
let cpuError: string | null = null;
let cpuPath: string | null = null;

/** The cpu device, or null when its addon is unavailable (see `cpuUnavailableReason`). */
export function cpuBackend(): CpuDevice | null {
  if (cpu === undefined) {
    const { addon, error, path } = loadAddon();
    cpuError = error;
    cpuPath = path;
    cpu = addon ? createCpuDevice(addon) : null;
    if (cpu) cpu.addon.setThreads(threadCount());
  }
  return cpu;
}

export function cpuUnavailableReason(): string | null {
  cpuBackend();
  return cpuError;
}

/**
 * Threads for cpu kernels: RETNET_THREADS, else the number of cores. Decode included: a `base` q4 decode step at
 * batch 1 measured 5.25 ms (median of 100) with 2 threads against 6.02 with 1 on this 2-core machine (timing lock,
 * other sessions' jobs at nice 19; /tmp driver timing model.step, 2026-12-02), and `bench lowp` measures both again.
 */
export function threadCount(): number {
  const env = process.env.RETNET_THREADS;
  if (env === undefined || env === '') return availableParallelism();
  const n = Number(env);
  if (!Number.isInteger(n) || n < 1) throw new BackendError(`RETNET_THREADS must be a positive integer, got '${env}'`);
  return n;
}

/** The addon's build facts, and the file it was loaded from (a prebuilt binary under prebuilds/, or a source build). */
export function cpuInfo(): (CpuAddonInfo & { path: string }) | null {
  const addon = cpuBackend()?.addon;
  return addon ? { ...addon.info(), path: cpuPath! } : null;
}

// Why the cpu device is unavailable, with the fix: the fallback still works, but training and generation run tens
// of times slower, so the one line says so loudly.
registerDevice(
  'cpu',
  () =>
    cpuBackend() ??
    `${cpuError}; the native cpu backend is many times faster. Fix: linux-x64 (glibc 2.34+) installs a prebuilt ` +
      'addon; elsewhere install a C++ compiler, make, pkg-config and OpenBLAS (Debian: apt-get install g++ make ' +
      "python3 pkg-config libopenblas-dev) and run 'npm rebuild retnet'; 'retnet info' shows the state",
);
