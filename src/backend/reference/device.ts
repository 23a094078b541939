// The reference device: host typed arrays of every dtype, with the reference kernels (plain TypeScript loops in
// float64 arithmetic, for float32 and float64 tensors; the other dtypes compute through a cast to float32). It is also
// the device whose kernels another device falls back to (kernels.ts).

import { DTYPE_NAMES } from '../../tensor/dtype.js';
import { HostDevice, hostCast } from '../host/device.js';
import { registerStoredKernels } from '../host/stored.js';
import { registerKernels, setReferenceDevice } from '../kernels.js';
import { ReferenceKernels } from './kernels.js';

let device: HostDevice | null = null;

export function referenceDevice(): HostDevice {
  device ??= new HostDevice('reference', DTYPE_NAMES);
  return device;
}

registerKernels('reference', DTYPE_NAMES, hostCast);
const kernels = new ReferenceKernels();
registerKernels('reference', ['float32', 'float64'], kernels);
// The layout kernels move elements of any dtype.
registerKernels('reference', ['int32'], {
  permute: kernels.permute.bind(kernels),
  copyBlocks: kernels.copyBlocks.bind(kernels),
});
// Stored and quantized weights: products through float32 copies (the definition), 16-bit embedding rows as stored.
registerStoredKernels((dtypes, impl) => registerKernels('reference', dtypes, impl));
setReferenceDevice(referenceDevice);
