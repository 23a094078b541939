// The cuda device on Node: loads its addon at first use and registers it with the selection (select.ts) as a device
// chosen by name only (RETNET_BACKEND=cuda, getBackend('cuda')), never as the default.

import { registerDevice } from '../select.js';
import { loadCudaAddon } from './addon.js';
import { type CudaDevice, createCudaDevice } from './device.js';

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

registerDevice('cuda', () => cudaBackend() ?? cudaUnavailableReason()!, { byNameOnly: true });
