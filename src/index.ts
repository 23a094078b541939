// The public API of retnet.
export * from './errors.js';
export type { DType } from './tensor/dtype.js';
export { Tensor } from './tensor/tensor.js';
export { MemoryTracker } from './tensor/memory.js';
export { tidy, keep } from './tensor/scope.js';
export { Rng } from './tensor/random.js';
export { backward, noGrad, clearTape } from './autograd/tape.js';
export type { Backend, ActivationKind, AdamWParams } from './backend/backend.js';
export { getBackend, setBackend, nativeInfo, nativeUnavailableReason, type BackendName } from './backend/index.js';
export * from './ops/index.js';
