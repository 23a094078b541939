// Sane upper bounds for every size in a model config, checked before anything is allocated: a config.json (or a
// flag) with `decoder_layers: 65536` or `recurrent_chunk_size: 4294967296` must fail with a ConfigError naming the
// field, not reach a native allocation or loop with an unchecked size. The bounds are far above any published model
// (the largest RetNet, 6.7B, has d = 4096, 32 layers; Qwen's vocabulary is 151,936) and far below sizes that would
// overflow a 32-bit index or a typed array.

import { ConfigError } from '../errors.js';

export const SIZE_BOUNDS = {
  vocabSize: 1 << 22,
  embedDim: 1 << 16,
  keyDim: 1 << 16,
  valueDim: 1 << 17,
  ffnDim: 1 << 18,
  heads: 1 << 10,
  kvHeads: 1 << 10,
  layers: 1 << 10,
  /** The chunkwise form keeps C×C decay and score tiles per head: 8192² floats are 256 MiB. */
  chunkSize: 1 << 13,
} as const;

export type SizeField = keyof typeof SIZE_BOUNDS;

/** Checks that `value` is an integer in [1, SIZE_BOUNDS[field]]; the message names the field and the value. */
export function checkSize(source: string, field: SizeField, value: unknown): void {
  const max = SIZE_BOUNDS[field];
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1)
    throw new ConfigError(`${source}: ${field} must be a positive integer, got ${JSON.stringify(value)}`);
  if (value > max) throw new ConfigError(`${source}: ${field} must be at most ${max}, got ${value}`);
}
