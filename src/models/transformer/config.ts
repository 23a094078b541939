// TransformerConfig: the decoder-only Transformer baseline, validated, with presets parameter-matched to the RetNet
// presets and the exact parameter count. On disk (config.json) it uses torchscale-style snake_case keys plus
// "arch": "transformer".

import type { AttentionAlgorithm } from '../../backend/kernels.js';
import { ConfigError } from '../../errors.js';
import { checkSize } from '../bounds.js';
import { PRESETS, type PresetShape } from '../presets.js';

export interface TransformerConfig {
  vocabSize: number;
  /** d: model width. */
  embedDim: number;
  layers: number;
  /** H: attention heads; the head dim K = d/H must be even (rotary pairs). */
  heads: number;
  /** Width of the GLU feed-forward (fc1 and gate out, fc2 in). */
  ffnDim: number;
  /** GLU activation: gelu (exact erf; GeGLU) or swish (SiLU; SwiGLU). */
  activation: 'gelu' | 'swish';
  /** eps of every RMSNorm. */
  normEps: number;
  /** Tie the output projection to the embedding table. */
  tiedEmbeddings: boolean;
  /** Attention algorithm of full-sequence passes: 'flash' (linear memory) or 'naive' (T×T probabilities). */
  attention: AttentionAlgorithm;
  /** Rotary base θ: pair j of each head rotates by position · θ^(−2j/K). */
  rotaryTheta: number;
  /** Dropout on the embeddings and on each residual branch while training (not on attention probabilities). */
  dropout: number;
}

export const TRANSFORMER_DEFAULTS: Omit<TransformerConfig, 'vocabSize' | 'embedDim' | 'layers' | 'heads' | 'ffnDim'> = {
  activation: 'gelu',
  normEps: 1e-6,
  tiedEmbeddings: false,
  attention: 'flash',
  rotaryTheta: 10000,
  dropout: 0,
};

type Shape = Pick<TransformerConfig, 'embedDim' | 'layers' | 'heads' | 'ffnDim'>;

/** Largest head dim of the matched presets. */
const MAX_HEAD_DIM = 128;

/**
 * The Transformer shape matched to a RetNet shape at equal size, as the paper compares the two.
 *
 * Both share the vocabulary, embeddings, output projection, final norm, the two RMSNorms of each block and the GLU
 * feed-forward; they differ in the token mixer and the FFN width. Per layer:
 *   RetNet      2d² (W_Q, W_K) + 3·d·dv (W_V, W_G, W_O) + 3·d·dffn (GLU fc1, gate, fc2) + 2d (norms)
 *   Transformer 4d² (W_Q, W_K, W_V, W_O)                + 3·d·f    (GLU fc1, gate, fc2) + 2d (norms)
 * so equal counts need f = dffn + dv − 2d/3, rounded to the nearest multiple of 8: the counts then differ by at most
 * 12·d per layer, under 1/d of the non-embedding count (0.45% for tiny, 0.03% for 1.3B; `bench/params.ts` prints both
 * counts for every preset). d and L are RetNet's. Heads do not change the count: the Transformer takes RetNet's head
 * count, raised where needed so that the head dim is at most 128 (as GPT-3 1.3B-6.7B and LLaMA).
 */
export function matchRetNetShape(r: PresetShape): Shape {
  const d = r.embedDim;
  const ffnDim = 8 * Math.round((r.ffnDim + r.valueDim - (2 * d) / 3) / 8);
  let heads = Math.max(r.heads, Math.ceil(d / MAX_HEAD_DIM));
  while (d % heads !== 0 || (d / heads) % 2 !== 0) heads++;
  return { embedDim: d, layers: r.layers, heads, ffnDim };
}

/** The Transformer shape parameter-matched to the RetNet preset `name` (see matchRetNetShape). */
export function transformerPresetFor(name: string): Shape {
  const retnet = PRESETS[name];
  if (!retnet)
    throw new ConfigError(
      `unknown preset '${name}' (expected one of the RetNet presets ${Object.keys(PRESETS).join(', ')})`,
    );
  return matchRetNetShape(retnet);
}

/** A validated config of the preset matched to RetNet preset `name`, with `overrides` (vocabSize required). */
export function transformerPreset(
  name: string,
  overrides: Partial<TransformerConfig> & { vocabSize: number },
): TransformerConfig {
  return validateTransformerConfig({ ...TRANSFORMER_DEFAULTS, ...transformerPresetFor(name), ...overrides });
}

/** Exact parameter count: per layer 4d² + 3·d·f + 2d, plus the embeddings (once if tied) and the final norm. */
export function transformerParameterCount(c: TransformerConfig): number {
  const d = c.embedDim;
  const perLayer = 4 * d * d + 3 * d * c.ffnDim + 2 * d;
  return c.layers * perLayer + c.vocabSize * d * (c.tiedEmbeddings ? 1 : 2) + d;
}

/** Checks every field; throws a ConfigError naming the first bad one. Returns the config. */
export function validateTransformerConfig(c: TransformerConfig, source = 'TransformerConfig'): TransformerConfig {
  const show = (v: unknown) => JSON.stringify(v) ?? String(v);
  for (const f of ['vocabSize', 'embedDim', 'layers', 'heads', 'ffnDim'] as const) checkSize(source, f, c[f]);
  if (c.embedDim % c.heads !== 0)
    throw new ConfigError(`${source}: embedDim ${c.embedDim} must be divisible by heads ${c.heads}`);
  if ((c.embedDim / c.heads) % 2 !== 0)
    throw new ConfigError(
      `${source}: the head dim embedDim/heads = ${c.embedDim / c.heads} must be even (rotary pairs)`,
    );
  if (c.activation !== 'gelu' && c.activation !== 'swish')
    throw new ConfigError(`${source}: activation must be gelu or swish, got ${show(c.activation)}`);
  if (!(typeof c.normEps === 'number' && c.normEps > 0 && Number.isFinite(c.normEps)))
    throw new ConfigError(`${source}: normEps must be a positive number less than 1, got ${show(c.normEps)}`);
  if (typeof c.tiedEmbeddings !== 'boolean')
    throw new ConfigError(`${source}: tiedEmbeddings must be true or false, got ${show(c.tiedEmbeddings)}`);
  if (c.attention !== 'naive' && c.attention !== 'flash')
    throw new ConfigError(`${source}: attention must be 'naive' or 'flash', got ${show(c.attention)}`);
  if (!(typeof c.rotaryTheta === 'number' && c.rotaryTheta > 0 && Number.isFinite(c.rotaryTheta)))
    throw new ConfigError(`${source}: rotaryTheta must be a positive number, got ${show(c.rotaryTheta)}`);
  if (!(typeof c.dropout === 'number' && c.dropout >= 0 && c.dropout < 1))
    throw new ConfigError(`${source}: dropout must be a number in [0, 1), got ${show(c.dropout)}`);
  return c;
}

// config.json keys (torchscale's DecoderConfig names where it has one) and ours. The first five are required.
const KEY_MAP: [keyof TransformerConfig, string][] = [
  ['vocabSize', 'vocab_size'],
  ['embedDim', 'decoder_embed_dim'],
  ['layers', 'decoder_layers'],
  ['heads', 'decoder_attention_heads'],
  ['ffnDim', 'decoder_ffn_embed_dim'],
  ['activation', 'activation_fn'],
  ['normEps', 'layernorm_eps'],
  ['tiedEmbeddings', 'share_decoder_input_output_embed'],
  ['attention', 'attention_algorithm'],
  ['rotaryTheta', 'rotary_theta'],
  ['dropout', 'dropout'],
];
const REQUIRED = 5;

/** Reads a config.json object; `source` names the file in errors. */
export function transformerConfigFromJSON(obj: unknown, source: string): TransformerConfig {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj))
    throw new ConfigError(`${source}: expected a JSON object`);
  const j = obj as Record<string, unknown>;
  if (j.arch !== 'transformer')
    throw new ConfigError(`${source}: arch is ${JSON.stringify(j.arch)}, expected "transformer"`);
  const known = new Set(['arch', ...KEY_MAP.map(([, k]) => k)]);
  for (const key of Object.keys(j))
    if (!known.has(key) && !key.startsWith('_'))
      throw new ConfigError(`${source}: unknown Transformer config key '${key}'`);
  const c: Record<string, unknown> = { ...TRANSFORMER_DEFAULTS };
  for (const [i, [ours, theirs]] of KEY_MAP.entries()) {
    if (theirs in j) c[ours] = j[theirs];
    else if (i < REQUIRED) throw new ConfigError(`${source}: missing required key '${theirs}'`);
  }
  if (c.activation === 'silu') c.activation = 'swish'; // PyTorch's name for swish
  return validateTransformerConfig(c as unknown as TransformerConfig, source);
}

/** The config.json object: every key, plus "arch": "transformer". */
export function transformerConfigToJSON(c: TransformerConfig): Record<string, unknown> {
  const j: Record<string, unknown> = { arch: 'transformer' };
  for (const [ours, theirs] of KEY_MAP) j[theirs] = c[ours];
  return j;
}
