// The package entry on Node: the portable core (index.ts) plus the cpu device (registered with the device selection
// on import) and the parts that need Node: tokenizer training and files, training data and the training loop, model
// directories, safetensors files and the server.
export * from './index.js';
export { cpuInfo, cpuUnavailableReason, threadCount } from './backend/index.js';
export { trainBpe } from './tokenizer/bpe.js';
export { HfTokenizer, type TokenizerContext } from './tokenizer/hf.js';
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
export { evaluate, type EvalResult } from './train/evaluate.js';
export {
  train,
  trainConfig,
  TrainingError,
  type TrainConfig,
  type TrainOptions,
  type TrainResult,
} from './train/trainer.js';
export {
  loadModelDir,
  saveModelDir,
  readTokenizerFile,
  type LoadedModelDir,
  type LoadOptions,
  type GenerationDefaults,
} from './io/model-dir.js';
export { startServer, type ServerOptions, type RunningServer } from './server/start.js';
export {
  readSafetensors,
  writeSafetensors,
  SafetensorsReader,
  Weights,
  openWeights,
  type LoadedTensor,
  type TensorToSave,
} from './io/safetensors.js';
