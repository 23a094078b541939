// Device selection. The default is the cpu device when its addon loads, else the reference device (with one line on
// stderr saying why). RETNET_BACKEND=reference|cpu forces a choice ('native', the cpu device's old name, is accepted
// for one release with a deprecation line); RETNET_THREADS sets the thread count of the cpu kernels and OpenBLAS
// (default: all cores).

import { availableParallelism } from 'node:os';

import { BackendError } from '../errors.js';
import type { CpuAddonInfo } from './cpu/addon.js';
import { type CpuDevice, createCpuDevice } from './cpu/device.js';
import { loadAddon } from './cpu/load.js';
import type { Device } from './device.js';
import type { HostDevice } from './host/device.js';
import { loadCudaAddon } from './cuda/addon.js';
import { type CudaDevice, createCudaDevice } from './cuda/device.js';
import { referenceDevice } from './reference/device.js';

/** The devices RETNET_BACKEND and `getBackend` name; 'native' is the deprecated alias of 'cpu'. */
export type BackendName = 'cpu' | 'reference' | 'cuda' | 'native';

let cpu: CpuDevice | null | undefined;
let cpuError: string | null = null;
let current: Device | null = null;
let warned = false;
let deprecationSaid = false;

export function referenceBackend(): HostDevice {
  return referenceDevice();
}

/** The cpu device, or null when its addon is unavailable (see `cpuUnavailableReason`). */
export function cpuBackend(): CpuDevice | null {
  if (cpu === undefined) {
    const { addon, error } = loadAddon();
    cpuError = error;
    cpu = addon ? createCpuDevice(addon) : null;
    if (cpu) cpu.addon.setThreads(threadCount());
  }
  return cpu;
}

export function cpuUnavailableReason(): string | null {
  cpuBackend();
  return cpuError;
}

let cuda: CudaDevice | null | undefined;

/** The cuda device, or null when its addon is not built or no CUDA device is present (see `cudaUnavailableReason`). */
export function cudaBackend(): CudaDevice | null {
  if (cuda === undefined) {
    const { addon } = loadCudaAddon();
    cuda = addon ? createCudaDevice(addon) : null;
  }
  return cuda;
}

export function cudaUnavailableReason(): string | null {
  return loadCudaAddon().error;
}

/** Threads for cpu kernels: RETNET_THREADS, else the number of cores. */
export function threadCount(): number {
  const env = process.env.RETNET_THREADS;
  if (env === undefined || env === '') return availableParallelism();
  const n = Number(env);
  if (!Number.isInteger(n) || n < 1) throw new BackendError(`RETNET_THREADS must be a positive integer, got '${env}'`);
  return n;
}

function canonical(name: string, where: string): 'cpu' | 'reference' | 'cuda' {
  if (name === 'native') {
    if (!deprecationSaid) {
      deprecationSaid = true;
      process.stderr.write(`retnet: ${where} 'native' is deprecated: the device is now called 'cpu'\n`);
    }
    return 'cpu';
  }
  if (name === 'cpu' || name === 'reference' || name === 'cuda') return name;
  throw new BackendError(`${where} must be 'cpu', 'reference' or 'cuda', got '${name}'`);
}

export function getBackend(name?: BackendName): Device {
  if (name !== undefined) {
    const which = canonical(name, 'the backend');
    if (which === 'reference') return referenceBackend();
    if (which === 'cuda') {
      const c = cudaBackend();
      if (!c) throw new BackendError(`the cuda device is unavailable: ${cudaUnavailableReason()}`);
      return c;
    }
    const b = cpuBackend();
    if (!b) throw new BackendError(`the cpu device is unavailable: ${cpuError}`);
    return b;
  }
  if (current) return current;
  const forced = process.env.RETNET_BACKEND;
  if (forced !== undefined && forced !== '') {
    current = getBackend(canonical(forced, 'RETNET_BACKEND'));
    return current;
  }
  const b = cpuBackend();
  if (b) current = b;
  else {
    current = referenceBackend();
    if (!warned) {
      warned = true;
      // Loud and once: everything still works, but training and generation run tens of times slower.
      process.stderr.write(
        `retnet: using the reference backend (${cpuError}); the native cpu backend is many times faster. ` +
          'Fix: install OpenBLAS, g++ and make (Debian: apt-get install libopenblas-dev g++ make) and run ' +
          "'npm rebuild retnet'; 'retnet info' shows the state\n",
      );
    }
  }
  return current;
}

/** Makes `name` the default device for tensors created without an explicit one. */
export function setBackend(name: BackendName): Device {
  current = getBackend(name);
  return current;
}

export function cpuInfo(): CpuAddonInfo | null {
  return cpuBackend()?.addon.info() ?? null;
}
