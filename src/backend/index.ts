// Backend selection. The default is the native backend when its addon loads, else the reference backend (with one
// line on stderr saying why). RETNET_BACKEND=reference|native forces a choice; RETNET_THREADS sets the thread count
// of the native kernels and OpenBLAS (default: all cores).

import { availableParallelism } from 'node:os';

import { BackendError } from '../errors.js';
import { type NativeInfo, loadAddon } from './addon.js';
import type { Backend } from './backend.js';
import { CudaBackend } from './cuda/backend.js';
import { loadCudaAddon } from './cuda/addon.js';
import { NativeBackend } from './native.js';
import { ReferenceBackend } from './reference.js';

export type BackendName = 'native' | 'reference' | 'cuda';

let reference: ReferenceBackend | null = null;
let native: NativeBackend | null | undefined;
let nativeError: string | null = null;
let current: Backend | null = null;
let warned = false;

export function referenceBackend(): ReferenceBackend {
  reference ??= new ReferenceBackend();
  return reference;
}

/** The native backend, or null when its addon is unavailable (see `nativeUnavailableReason`). */
export function nativeBackend(): NativeBackend | null {
  if (native === undefined) {
    const { addon, error } = loadAddon();
    nativeError = error;
    native = addon ? new NativeBackend(addon) : null;
    if (native) native.addon.setThreads(threadCount());
  }
  return native;
}

let cuda: CudaBackend | null | undefined;

/** The cuda device, or null when its addon is not built or no CUDA device is present (see `cudaUnavailableReason`). */
export function cudaBackend(): CudaBackend | null {
  if (cuda === undefined) {
    const { addon } = loadCudaAddon();
    cuda = addon ? new CudaBackend(addon) : null;
  }
  return cuda;
}

export function cudaUnavailableReason(): string | null {
  return loadCudaAddon().error;
}

export function nativeUnavailableReason(): string | null {
  nativeBackend();
  return nativeError;
}

/** Threads for native kernels: RETNET_THREADS, else the number of cores. */
export function threadCount(): number {
  const env = process.env.RETNET_THREADS;
  if (env === undefined || env === '') return availableParallelism();
  const n = Number(env);
  if (!Number.isInteger(n) || n < 1) throw new BackendError(`RETNET_THREADS must be a positive integer, got '${env}'`);
  return n;
}

export function getBackend(name?: BackendName): Backend {
  if (name === 'reference') return referenceBackend();
  if (name === 'cuda') {
    const b = cudaBackend();
    if (!b) throw new BackendError(`the cuda device is unavailable: ${cudaUnavailableReason()}`);
    return b;
  }
  if (name === 'native') {
    const b = nativeBackend();
    if (!b) throw new BackendError(`the native backend is unavailable: ${nativeError}`);
    return b;
  }
  if (current) return current;
  const forced = process.env.RETNET_BACKEND;
  if (forced !== undefined && forced !== '') {
    if (forced !== 'native' && forced !== 'reference' && forced !== 'cuda')
      throw new BackendError(`RETNET_BACKEND must be 'native', 'reference' or 'cuda', got '${forced}'`);
    current = getBackend(forced);
    return current;
  }
  const b = nativeBackend();
  if (b) current = b;
  else {
    current = referenceBackend();
    if (!warned) {
      warned = true;
      process.stderr.write(`retnet: using the reference backend (${nativeError})\n`);
    }
  }
  return current;
}

/** Makes `name` the default backend for tensors created without an explicit backend. */
export function setBackend(name: BackendName): Backend {
  current = getBackend(name);
  return current;
}

export function nativeInfo(): NativeInfo | null {
  return nativeBackend()?.addon.info() ?? null;
}
