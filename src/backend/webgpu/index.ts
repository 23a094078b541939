// The webgpu device in a browser (or any runtime with navigator.gpu): `requestWebGpu()` asks for an adapter and a
// device, registers the kernels and makes the device selectable by name ('webgpu', never the default). WebGPU's
// set-up is asynchronous, so it is requested once, before a model is built on it.

import { registerKernels } from '../kernels.js';
import { registerDevice } from '../select.js';
import { WEBGPU_DTYPES, WebGpuDevice } from './device.js';
import { WebGpuKernels } from './kernels.js';

export { WebGpuDevice, type GpuMemory, type WebGpuInfo } from './device.js';

let requested: Promise<WebGpuDevice | string> | null = null;
let ready: WebGpuDevice | string = 'call requestWebGpu() first (WebGPU starts asynchronously)';

registerDevice('webgpu', () => ready, { byNameOnly: true });

/** The webgpu device, or a sentence saying why there is none. Asks the browser once; later calls share the answer. */
export function requestWebGpu(): Promise<WebGpuDevice | string> {
  requested ??= open().then((d) => (ready = d));
  return requested;
}

async function open(): Promise<WebGpuDevice | string> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) return 'this browser exposes no WebGPU (navigator.gpu is missing; pages need https or localhost)';
  const adapter = await gpu.requestAdapter();
  if (!adapter) return 'the browser found no WebGPU adapter';
  // The adapter's own buffer limits (the defaults, 128/256 MiB, are below what a model's weights need).
  const limits = adapter.limits;
  const device = await adapter.requestDevice({
    requiredLimits: {
      maxBufferSize: limits.maxBufferSize,
      maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
      maxStorageBuffersPerShaderStage: limits.maxStorageBuffersPerShaderStage,
    },
  });
  const info = adapter.info;
  const d = new WebGpuDevice(device, {
    vendor: info.vendor,
    architecture: info.architecture,
    description: info.description,
    features: [...adapter.features],
  });
  const k = new WebGpuKernels(d);
  registerKernels('webgpu', ['float32'], k);
  registerKernels('webgpu', WEBGPU_DTYPES, { cast: k.cast.bind(k) });
  registerKernels('webgpu', ['int32'], { copyBlocks: k.copyBlocks.bind(k) });
  // A 16-bit checkpoint's weights: products and lookups read them packed (the other kernels cast them to float32).
  registerKernels('webgpu', ['bfloat16', 'float16'], { matmul: k.matmul.bind(k), embedding: k.embedding.bind(k) });
  return d;
}
