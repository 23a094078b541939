// The public API of retnet.
export * from './errors.js';
export type { DType } from './tensor/dtype.js';
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
export { getBackend, setBackend, cpuInfo, cpuUnavailableReason, type BackendName } from './backend/index.js';
export * from './ops/index.js';
export { ByteTokenizer, type Tokenizer } from './tokenizer/tokenizer.js';
export { BpeTokenizer, trainBpe } from './tokenizer/bpe.js';
export { loadTokenizer } from './tokenizer/load.js';
export { DataError, type DataProblem } from './train/sources.js';
export {
  prepareData,
  BatchSampler,
  ShardReader,
  type Manifest,
  type PrepareOptions,
  type PreparedData,
} from './train/data.js';
export { AdamW, type AdamWConfig } from './train/optimizer.js';
export { learningRate, type LrSchedule, type DecayKind } from './train/schedule.js';
export { evaluate, type EvalResult } from './train/evaluate.js';
export {
  train,
  trainConfig,
  TrainingError,
  type TrainConfig,
  type TrainOptions,
  type TrainResult,
} from './train/trainer.js';
export type { CausalLM, DecodeState } from './models/lm.js';
export {
  ARCHS,
  createModel,
  modelFromConfig,
  modelConfigJSON,
  type Arch,
  type ModelOptions,
} from './models/registry.js';
export { loadModelDir, saveModelDir, type LoadOptions } from './io/model-dir.js';
export { WEIGHT_FORMATS, type WeightFormat, quantize, dequantize } from './quant/formats.js';
export { quantizeModel, weightBytes } from './quant/model.js';
export { LowpWeight, lowpLinear } from './quant/linear.js';
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
export { startServer, type ServerOptions, type RunningServer } from './server/server.js';
export { readSafetensors, writeSafetensors } from './io/safetensors.js';
