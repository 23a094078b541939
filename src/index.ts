// The public API of retnet: the portable core (no Node built-ins: it bundles for a browser). On Node the package
// entry is src/node.ts, which adds the cpu device and the parts that need Node (files, training data, the server).
export * from './errors.js';
export {
  type DType,
  type QuantizedDType,
  DTYPE_NAMES,
  bytesPerElement,
  storageBytes,
  toSafetensorsDType,
  fromSafetensorsDType,
} from './tensor/dtype.js';
export { Tensor } from './tensor/tensor.js';
export { MemoryTracker } from './tensor/memory.js';
export { tidy, keep } from './tensor/scope.js';
export { Rng } from './tensor/random.js';
export { backward, noGrad, clearTape } from './autograd/tape.js';
export type { Device, DeviceName } from './backend/device.js';
export {
  kernels,
  kernelsOf,
  registerKernels,
  supports,
  implementedKernels,
  type Kernels,
  type KernelName,
  type ActivationKind,
  type AdamWParams,
} from './backend/kernels.js';
export {
  getBackend,
  setBackend,
  registerDevice,
  deviceUnavailableReason,
  type BackendName,
  type DeviceLoader,
} from './backend/select.js';
export * from './ops/index.js';
export { ByteTokenizer, type Tokenizer } from './tokenizer/tokenizer.js';
export { AdamW, type AdamWConfig } from './train/optimizer.js';
export { learningRate, type LrSchedule, type DecayKind } from './train/schedule.js';
export type { CausalLM, DecodeState } from './models/lm.js';
export {
  ARCHS,
  createModel,
  modelFromConfig,
  modelConfigJSON,
  type Arch,
  type ModelOptions,
} from './models/registry.js';
export { WEIGHT_DTYPES, WEIGHT_FORMATS, type WeightFormat } from './quant/formats.js';
export { quantizeModel, weightBytes } from './quant/model.js';
export {
  type RetNetConfig,
  RETNET_PRESETS,
  retnetPreset,
  retnetParameterCount,
  retnetConfigFromJSON,
  retnetConfigToJSON,
} from './models/retnet/config.js';
export { RetNetModel, RetNetDecodeState, type ForwardOptions } from './models/retnet/model.js';
export { type TransformerConfig, transformerPreset, transformerParameterCount } from './models/transformer/config.js';
export { TransformerModel } from './models/transformer/model.js';
export { generate, type GenerateOptions } from './generate/generate.js';
export type { GenerationRequest, GenerationEvent, FinishReason } from './generate/sequence.js';
export type { SamplingOptions } from './generate/sampler.js';
