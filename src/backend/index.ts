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
import { referenceDevice } from './reference/device.js';

/** The devices RETNET_BACKEND and `getBackend` name; 'native' is the deprecated alias of 'cpu'. */
export type BackendName = 'cpu' | 'reference' | 'native';

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

/** Threads for cpu kernels: RETNET_THREADS, else the number of cores. */
export function threadCount(): number {
  const env = process.env.RETNET_THREADS;
  if (env === undefined || env === '') return availableParallelism();
  const n = Number(env);
  if (!Number.isInteger(n) || n < 1) throw new BackendError(`RETNET_THREADS must be a positive integer, got '${env}'`);
  return n;
}

function canonical(name: string, where: string): 'cpu' | 'reference' {
  if (name === 'native') {
    if (!deprecationSaid) {
      deprecationSaid = true;
      process.stderr.write(`retnet: ${where} 'native' is deprecated: the device is now called 'cpu'\n`);
    }
    return 'cpu';
  }
  if (name === 'cpu' || name === 'reference') return name;
  throw new BackendError(`${where} must be 'cpu' or 'reference', got '${name}'`);
}

export function getBackend(name?: BackendName): Device {
  if (name !== undefined) {
    if (canonical(name, 'the backend') === 'reference') return referenceBackend();
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
      process.stderr.write(`retnet: using the reference backend (${cpuError})\n`);
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
