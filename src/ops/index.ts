export { add, linear, linearShared, matmul, mul, scale, sum, type MatmulOptions } from './math.js';
export {
  activation,
  crossEntropy,
  dropout,
  embedding,
  gatedRmsNorm,
  gelu,
  relu,
  rmsNorm,
  silu,
  softmax,
  type CrossEntropyOptions,
} from './nn.js';
export { concat, permute, reshape, slice, transpose } from './shape.js';
export { full, ones, randn, tensor, uniform, zeros, type CreateOptions } from './create.js';
export { retention, retentionForward, retentionStep, type RetentionOptions, type RetentionState } from './retention.js';
export { rotary } from './rotary.js';
export { attentionDecode, causalAttention, type AttentionOptions } from './attention.js';
