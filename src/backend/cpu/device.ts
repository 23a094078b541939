// The cpu device: host typed arrays (float32 and int32) with the kernels of the C++ addon (native/cpu/, OpenBLAS and
// OpenMP). Node-only: the addon is a Node-API module.

import { HostDevice, hostCast } from '../host/device.js';
import { registerKernels } from '../kernels.js';
import type { CpuAddon } from './addon.js';
import { CpuKernels } from './kernels.js';

export class CpuDevice extends HostDevice {
  constructor(readonly addon: CpuAddon) {
    super('cpu', ['float32', 'int32']);
  }
}

/** The cpu device over a loaded addon, with its kernels registered. */
export function createCpuDevice(addon: CpuAddon): CpuDevice {
  const device = new CpuDevice(addon);
  const k = new CpuKernels(device, addon);
  registerKernels('cpu', ['float32', 'int32'], hostCast);
  registerKernels('cpu', ['float32'], k);
  // The layout kernels move 4-byte words, int32 and float32 alike.
  registerKernels('cpu', ['int32'], { permute: k.permute.bind(k), copyBlocks: k.copyBlocks.bind(k) });
  return device;
}
