// RetNetConfig: the hyper-parameters of a RetNet, validated, with presets and the exact parameter count. On disk it
// is torchscale's RetNetConfig JSON (snake_case keys, spec §1) plus "arch": "retnet", so torchscale's own config.json
// loads as it is and ours loads in torchscale.

import type { ActivationKind, RetentionForm, RotaryPairs } from '../../backend/kernels.js';
import { ConfigError } from '../../errors.js';
import { checkSize } from '../bounds.js';
import { PRESETS } from '../presets.js';

export interface RetNetConfig {
  vocabSize: number;
  /** d: model width, also the total query/key width. */
  embedDim: number;
  /** dv: total value width (v_proj, g_proj out, out_proj in). */
  valueDim: number;
  heads: number;
  ffnDim: number;
  layers: number;
  /** GLU activation: gelu (exact erf), swish (SiLU) or relu. */
  activation: 'gelu' | 'swish' | 'relu';
  /** torchscale's gated FFN fc2(act(fc1 x) ⊙ gate x); false gives the paper's fc2(act(fc1 x)). */
  glu: boolean;
  /** Pre-norm (torchscale default) or post-norm blocks. */
  normalizeBefore: boolean;
  /** eps of every RMSNorm, the per-head group norm included. */
  normEps: number;
  /** Multiply embeddings by sqrt(d) (torchscale's no_scale_embedding = false). */
  scaleEmbedding: boolean;
  /** RMSNorm on the embeddings. */
  layernormEmbedding: boolean;
  /** DeepNet residual scaling α = (2L)^¼ (and init ÷ (8L)^¼). */
  deepnorm: boolean;
  dropout: number;
  activationDropout: number;
  dropPathRate: number;
  /** Tie the output projection to the embedding table. */
  tiedEmbeddings: boolean;
  /** Full-sequence forward uses the chunkwise form (torchscale's chunkwise_recurrent). */
  chunkwiseRecurrent: boolean;
  /** C: chunk size of the chunkwise form. */
  chunkSize: number;
  // The options below default to torchscale's RetNet; fla's RetNet (../shared/fla-spec.md, the format of the public
  // fla-hub checkpoints) sets them as `flaConfigFromJSON` (fla.ts) reads them from its config.json.
  /** Total key width (q_proj out; k_proj out × heads/kvHeads); torchscale: embedDim, fla: D·expand_k. */
  keyDim: number;
  /** Hkv: key/value heads; fewer than `heads` groups them (query head j reads kv head ⌊j·Hkv/H⌋). */
  kvHeads: number;
  /** Retention normalisation: torchscale's (each form its own) or none (fla: o = q·S in every form). */
  retentionNorm: 'torchscale' | 'none';
  /** Rotary pairing: torchscale's interleaved pairs or fla's halves (rotate_half). */
  rotaryPairs: RotaryPairs;
  /** Rotary angles θ_j: torchscale's 10000^−j/(K/2−1) or RoPE's 10000^−2j/K (fla). */
  rotaryAngles: 'retnet' | 'rope';
  /** A learned weight [V] in the per-head RMSNorm, shared by the heads (fla's elementwise_affine). */
  groupNormWeight: boolean;
  /** The swish output gate g_proj (fla's use_output_gate; torchscale always has it). */
  outputGate: boolean;
  /** An activation of q and k after the head split, before rotary (fla's feature_map); null: none. */
  featureMap: ActivationKind | null;
  /**
   * Parameter names and config.json keys: torchscale's, or fla's (model.layers.l.attn.q_proj, …; fla-spec §1, §3).
   * fla's layout also puts the K^−½ factor on q rather than k (the same product; placed as each reference does).
   */
  format: 'torchscale' | 'fla';
  /** config.json keys the model does not use, kept to be written back (fla's bos/eos ids, attn_mode, …). */
  extra: Record<string, unknown>;
}

export const RETNET_DEFAULTS: RetNetConfig = {
  vocabSize: -1,
  embedDim: 768,
  valueDim: 1280,
  heads: 3,
  ffnDim: 1280,
  layers: 12,
  activation: 'gelu',
  glu: true,
  normalizeBefore: true,
  normEps: 1e-6,
  scaleEmbedding: false,
  layernormEmbedding: false,
  deepnorm: false,
  dropout: 0,
  activationDropout: 0,
  dropPathRate: 0,
  tiedEmbeddings: false,
  chunkwiseRecurrent: false,
  chunkSize: 512,
  keyDim: -1, // -1: embedDim (filled in by validateRetNetConfig)
  kvHeads: -1, // -1: heads
  retentionNorm: 'torchscale',
  rotaryPairs: 'interleaved',
  rotaryAngles: 'retnet',
  groupNormWeight: false,
  outputGate: true,
  featureMap: null,
  format: 'torchscale',
  extra: {},
};

/** RetNet's presets: the shared sizes (../presets.ts) as they are. */
export const RETNET_PRESETS = PRESETS;

export function retnetPreset(name: string, overrides: Partial<RetNetConfig> & { vocabSize: number }): RetNetConfig {
  const shape = RETNET_PRESETS[name];
  if (!shape)
    throw new ConfigError(
      `unknown RetNet preset '${name}' (expected one of ${Object.keys(RETNET_PRESETS).join(', ')})`,
    );
  return validateRetNetConfig({ ...RETNET_DEFAULTS, ...shape, ...overrides });
}

function probability(c: RetNetConfig, field: keyof RetNetConfig, source: string): void {
  const v = c[field];
  if (typeof v !== 'number' || !(v >= 0 && v < 1))
    throw new ConfigError(`${source}: ${field} must be a number in [0, 1), got ${JSON.stringify(v)}`);
}

function oneOf<T>(c: RetNetConfig, field: keyof RetNetConfig, allowed: readonly T[], source: string): void {
  if (!allowed.includes(c[field] as T))
    throw new ConfigError(
      `${source}: ${field} must be one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${JSON.stringify(c[field])}`,
    );
}

/**
 * Checks every field; throws a ConfigError naming the first bad one. Returns the config, with keyDim and kvHeads
 * filled in when left at -1 (torchscale's: embedDim, heads).
 */
export function validateRetNetConfig(c: RetNetConfig, source = 'RetNetConfig'): RetNetConfig {
  if (c.keyDim === -1 || c.keyDim === undefined) c.keyDim = c.embedDim;
  if (c.kvHeads === -1 || c.kvHeads === undefined) c.kvHeads = c.heads;
  for (const f of ['vocabSize', 'embedDim', 'valueDim', 'heads', 'ffnDim', 'layers', 'chunkSize'] as const)
    checkSize(source, f, c[f]);
  for (const f of ['keyDim', 'kvHeads'] as const) checkSize(source, f, c[f]);
  for (const f of ['dropout', 'activationDropout', 'dropPathRate'] as const) probability(c, f, source);
  if (c.keyDim % c.heads !== 0) {
    const field = c.keyDim === c.embedDim ? 'embedDim' : 'keyDim'; // the key width is embedDim unless set
    throw new ConfigError(`${source}: ${field} ${c.keyDim} must be divisible by heads ${c.heads}`);
  }
  if (c.valueDim % c.heads !== 0)
    throw new ConfigError(`${source}: valueDim ${c.valueDim} must be divisible by heads ${c.heads}`);
  if (c.heads % c.kvHeads !== 0)
    throw new ConfigError(`${source}: heads ${c.heads} must be a multiple of kvHeads ${c.kvHeads}`);
  if ((c.keyDim / c.heads) % 2 !== 0)
    throw new ConfigError(`${source}: the key head dim keyDim/heads = ${c.keyDim / c.heads} must be even (rotation)`);
  if (!['gelu', 'swish', 'relu'].includes(c.activation))
    throw new ConfigError(`${source}: activation must be gelu, swish or relu, got ${JSON.stringify(c.activation)}`);
  if (!(typeof c.normEps === 'number' && c.normEps > 0 && c.normEps < 1))
    throw new ConfigError(`${source}: normEps must be a positive number less than 1, got ${JSON.stringify(c.normEps)}`);
  for (const f of [
    'glu',
    'normalizeBefore',
    'scaleEmbedding',
    'layernormEmbedding',
    'deepnorm',
    'tiedEmbeddings',
    'chunkwiseRecurrent',
    'groupNormWeight',
    'outputGate',
  ] as const)
    if (typeof c[f] !== 'boolean')
      throw new ConfigError(`${source}: ${f} must be true or false, got ${JSON.stringify(c[f])}`);
  oneOf(c, 'retentionNorm', ['torchscale', 'none'], source);
  oneOf(c, 'rotaryPairs', ['interleaved', 'halves'], source);
  oneOf(c, 'rotaryAngles', ['retnet', 'rope'], source);
  oneOf(c, 'featureMap', [null, 'gelu', 'silu', 'relu'], source);
  oneOf(c, 'format', ['torchscale', 'fla'], source);
  if (c.extra === null || typeof c.extra !== 'object' || Array.isArray(c.extra))
    throw new ConfigError(`${source}: extra must be an object of config.json keys`);
  return c;
}

/** The form of a config's full-sequence passes: chunkwise when chunkwiseRecurrent, else parallel. */
export function configuredForm(c: Pick<RetNetConfig, 'chunkwiseRecurrent'>): RetentionForm {
  return c.chunkwiseRecurrent ? 'chunkwise' : 'parallel';
}

/** Key head dim K and value head dim V. */
export function headDims(c: RetNetConfig): { K: number; V: number } {
  return { K: c.keyDim / c.heads, V: c.valueDim / c.heads };
}

/**
 * Exact parameter count: per layer the projections q (dk·d), k (dk·d·Hkv/H), v (dv·d·Hkv/H), g (dv·d, with the
 * output gate), out (d·dv), the FFN, 2d (norms) and V (the group-norm weight, if any); plus embeddings and norms.
 */
export function retnetParameterCount(c: RetNetConfig): number {
  const d = c.embedDim;
  const ffn = (c.glu ? 3 : 2) * d * c.ffnDim;
  const kv = c.kvHeads / c.heads;
  const mixer =
    d * c.keyDim * (1 + kv) +
    d * c.valueDim * (kv + (c.outputGate ? 1 : 0) + 1) +
    (c.groupNormWeight ? c.valueDim / c.heads : 0);
  const perLayer = mixer + ffn + 2 * d;
  const embeddings = c.vocabSize * d * (c.tiedEmbeddings ? 1 : 2);
  return c.layers * perLayer + embeddings + (c.normalizeBefore ? d : 0) + (c.layernormEmbedding ? d : 0);
}

// torchscale's RetNetConfig keys (spec §1) and ours. Keys torchscale has that do not change a RetNet's math are
// accepted and ignored; keys for features that do (MoE, multiway) are rejected unless off.
const KEY_MAP: [keyof RetNetConfig, string][] = [
  ['vocabSize', 'vocab_size'],
  ['embedDim', 'decoder_embed_dim'],
  ['valueDim', 'decoder_value_embed_dim'],
  ['heads', 'decoder_retention_heads'],
  ['ffnDim', 'decoder_ffn_embed_dim'],
  ['layers', 'decoder_layers'],
  ['activation', 'activation_fn'],
  ['normalizeBefore', 'decoder_normalize_before'],
  ['normEps', 'layernorm_eps'],
  ['layernormEmbedding', 'layernorm_embedding'],
  ['deepnorm', 'deepnorm'],
  ['dropout', 'dropout'],
  ['activationDropout', 'activation_dropout'],
  ['dropPathRate', 'drop_path_rate'],
  ['tiedEmbeddings', 'share_decoder_input_output_embed'],
  ['chunkwiseRecurrent', 'chunkwise_recurrent'],
  ['chunkSize', 'recurrent_chunk_size'],
];

const IGNORED_KEYS = new Set([
  'arch', 'glu', 'no_scale_embedding', 'subln', 'encoder_normalize_before', 'checkpoint_activations', 'fsdp',
  'ddp_rank', 'max_target_positions', 'rel_pos_buckets', 'max_rel_pos', 'xpos_rel_pos', 'xpos_scale_base',
  'moe_freq', 'moe_top1_expert', 'moe_expert_count', 'moe_gating_use_fp32', 'moe_eval_capacity_token_fraction',
  'moe_second_expert_policy', 'moe_normalize_gate_prob_before_dropping', 'use_xmoe', 'multiway', 'no_output_layer',
]); // prettier-ignore

/** Reads a config.json object (torchscale keys); `source` names the file in errors. */
export function retnetConfigFromJSON(obj: unknown, source: string): RetNetConfig {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj))
    throw new ConfigError(`${source}: expected a JSON object`);
  const j = obj as Record<string, unknown>;
  const known = new Set([...KEY_MAP.map(([, k]) => k), ...IGNORED_KEYS]);
  for (const key of Object.keys(j))
    if (!known.has(key) && !key.startsWith('_')) throw new ConfigError(`${source}: unknown RetNet config key '${key}'`);
  const unsupported: [string, unknown][] = [
    ['moe_expert_count', 0],
    ['use_xmoe', false],
    ['multiway', false],
    ['no_output_layer', false],
  ];
  for (const [key, off] of unsupported)
    if (key in j && j[key] !== off && j[key] !== null)
      throw new ConfigError(
        `${source}: '${key}' = ${JSON.stringify(j[key])} is not supported (only ${JSON.stringify(off)})`,
      );
  if (j.arch !== undefined && j.arch !== 'retnet')
    throw new ConfigError(`${source}: arch is ${JSON.stringify(j.arch)}, expected "retnet"`);
  const c: Record<string, unknown> = { ...RETNET_DEFAULTS };
  for (const [ours, theirs] of KEY_MAP) if (theirs in j) c[ours] = j[theirs];
  if ('no_scale_embedding' in j) c.scaleEmbedding = j.no_scale_embedding === false;
  if ('glu' in j) c.glu = j.glu;
  if (c.activation === 'silu') c.activation = 'swish'; // PyTorch's name for swish
  return validateRetNetConfig(c as unknown as RetNetConfig, source);
}

/**
 * The config.json object: every torchscale RetNetConfig key (so torchscale builds the same model) plus arch/glu.
 * Configs with fla's options are written by flaConfigToJSON (fla.ts); torchscale's keys cannot express them.
 */
export function retnetConfigToJSON(c: RetNetConfig): Record<string, unknown> {
  const fla = (Object.keys(RETNET_DEFAULTS) as (keyof RetNetConfig)[]).filter(
    (f) =>
      ['retentionNorm', 'rotaryPairs', 'rotaryAngles', 'groupNormWeight', 'outputGate', 'featureMap'].includes(f) &&
      c[f] !== RETNET_DEFAULTS[f],
  );
  if (c.keyDim !== c.embedDim) fla.push('keyDim');
  if (c.kvHeads !== c.heads) fla.push('kvHeads');
  if (fla.length > 0 || c.format !== 'torchscale')
    throw new ConfigError(
      `retnetConfigToJSON: torchscale's config keys cannot express ${[...fla, 'format'].slice(0, fla.length || 1).join(', ')}; use format 'fla'`,
    );
  const j: Record<string, unknown> = { arch: 'retnet' };
  for (const [ours, theirs] of KEY_MAP) j[theirs] = c[ours];
  j.no_scale_embedding = !c.scaleEmbedding;
  j.glu = c.glu;
  j.subln = !c.deepnorm;
  j.no_output_layer = false;
  j.multiway = false;
  j.moe_expert_count = 0;
  j.use_xmoe = false;
  return j;
}
