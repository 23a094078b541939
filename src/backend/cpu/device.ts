// The cpu device: host typed arrays with the kernels of the C++ addon (native/cpu/, OpenBLAS and OpenMP), float32.
// It also stores bfloat16, float16 and the quantized weight formats: products with weights in those dtypes run the
// native low-precision kernels (lowp.ts); other kernels compute through a cast to float32. Node-only: the addon is a Node-API module.

import { DTYPE_NAMES } from '../../tensor/dtype.js';
import { HostDevice, hostCast } from '../host/device.js';
import { registerStoredKernels } from '../host/stored.js';
import { registerKernels } from '../kernels.js';
import type { CpuAddon } from './addon.js';
import { CpuKernels } from './kernels.js';
import { LOWP_DTYPES, lowpKernels } from './lowp.js';

const CPU_DTYPES = DTYPE_NAMES.filter((d) => d !== 'float64');

export class CpuDevice extends HostDevice {
  constructor(readonly addon: CpuAddon) {
    super('cpu', CPU_DTYPES);
  }
}

/** The cpu device over a loaded addon, with its kernels registered. */
export function createCpuDevice(addon: CpuAddon): CpuDevice {
  const device = new CpuDevice(addon);
  const k = new CpuKernels(device, addon);
  registerKernels('cpu', CPU_DTYPES, hostCast);
  registerKernels('cpu', ['float32'], k);
  // The layout kernels move 4-byte words, int32 and float32 alike.
  registerKernels('cpu', ['int32'], { permute: k.permute.bind(k), copyBlocks: k.copyBlocks.bind(k) });
  // Weights held as stored or quantized: native decode products and tiled prefill (lowp.ts) over the host kernels.
  registerStoredKernels((dtypes, impl) => registerKernels('cpu', dtypes, impl));
  registerKernels('cpu', LOWP_DTYPES, lowpKernels(device, addon));
  return device;
}
