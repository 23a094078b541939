// fla's RetNet (flash-linear-attention, ../shared/fla-spec.md): the format of the public fla-hub checkpoints
// (fla-hub/retnet-1.3B-100B, …) as a variant of our RetNet. Its config.json (`model_type: "retnet"`, HF keys) maps
// onto RetNetConfig options (§1, §2) and back; its state-dict names (§3) map onto ours name by name; the old fused
// `mlp.gate_proj` [2I, D] (fla before 2025-02-08, §10) splits exactly into our gate and up projections.

import { ConfigError, FormatError } from '../../errors.js';
import { RETNET_DEFAULTS, type RetNetConfig, validateRetNetConfig } from './config.js';

/** fla's chunk size for the chunk kernels (fla-spec §5); the math does not depend on it. */
export const FLA_CHUNK = 64;

/** fla's defaults (fla-spec §1) for the keys that shape the model. */
const FLA_DEFAULTS = {
  vocab_size: 32000,
  hidden_size: 2048,
  num_hidden_layers: 24,
  num_heads: 8,
  num_kv_heads: null,
  expand_k: 1,
  expand_v: 2,
  hidden_ratio: 2,
  intermediate_size: null,
  hidden_act: 'swish',
  attn_mode: 'chunk',
  use_output_gate: true,
  fuse_norm: true,
  elementwise_affine: true,
  norm_eps: 1e-6,
  feature_map: null,
  tie_word_embeddings: false,
} as const;

/** The keys above are read into the config; these are kept as they are (`extra`) and written back. */
const PASSED_THROUGH = new Set([
  'architectures', 'transformers_version', 'dtype', 'torch_dtype', 'bos_token_id', 'eos_token_id', 'pad_token_id',
  'use_cache', 'initializer_range', 'fuse_swiglu', 'fuse_cross_entropy', 'fuse_linear_cross_entropy', 'use_l2warp',
  'max_position_embeddings', 'use_short_conv', 'conv_size', 'attn_mode', 'fuse_norm', 'hidden_ratio', 'model_type',
]); // prettier-ignore

/** transformers' ACT2FN names fla accepts as feature_map, as our activations. */
const FEATURE_MAPS: Record<string, RetNetConfig['featureMap']> = {
  relu: 'relu',
  silu: 'silu',
  swish: 'silu',
  gelu: 'gelu',
};

/** fla's MLP width rule (fla-spec §2): I = 256·ceil(int(D·ratio·2/3) / 256), ratio null → 4. */
export function flaIntermediateSize(hidden: number, ratio: number | null): number {
  const m = Math.trunc((hidden * (ratio ?? 4) * 2) / 3);
  return 256 * Math.ceil(m / 256);
}

/** True when a config.json object is fla's format (HF-style, `model_type: "retnet"`). */
export function isFlaConfig(j: Record<string, unknown>): boolean {
  return j.model_type === 'retnet';
}

/** Reads fla's config.json (fla-spec §1, §2) as our RetNetConfig; `source` names the file in errors. */
export function flaConfigFromJSON(obj: Record<string, unknown>, source: string): RetNetConfig {
  const j: Record<string, unknown> = { ...FLA_DEFAULTS, ...obj };
  const num = (key: string, integer: boolean): number => {
    const v = j[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v)))
      throw new ConfigError(
        `${source}: '${key}' must be a positive ${integer ? 'integer' : 'number'}, got ${JSON.stringify(v)}`,
      );
    return v;
  };
  const bool = (key: string): boolean => {
    if (typeof j[key] !== 'boolean')
      throw new ConfigError(`${source}: '${key}' must be true or false, got ${JSON.stringify(j[key])}`);
    return j[key];
  };
  for (const key of ['attn', 'attnres_block_size'])
    if (j[key] !== undefined && j[key] !== null)
      throw new ConfigError(
        `${source}: '${key}' = ${JSON.stringify(j[key])} is not supported (hybrid layers; only null)`,
      );
  const act = j.hidden_act;
  if (act !== 'swish' && act !== 'silu')
    throw new ConfigError(`${source}: 'hidden_act' must be "swish", got ${JSON.stringify(act)}`);
  const D = num('hidden_size', true);
  const H = num('num_heads', true);
  const kvHeads = j.num_kv_heads === null ? H : num('num_kv_heads', true);
  const ratio = j.hidden_ratio === null ? null : num('hidden_ratio', false);
  const featureMap = j.feature_map === null ? null : FEATURE_MAPS[String(j.feature_map)];
  if (featureMap === undefined)
    throw new ConfigError(
      `${source}: 'feature_map' ${JSON.stringify(j.feature_map)} is not supported (expected null or one of ${Object.keys(FEATURE_MAPS).join(', ')})`,
    );
  const mode = j.attn_mode;
  if (!['chunk', 'fused_chunk', 'parallel', 'fused_recurrent'].includes(mode as string))
    throw new ConfigError(
      `${source}: 'attn_mode' must be "chunk", "fused_chunk", "parallel" or "fused_recurrent", got ${JSON.stringify(mode)}`,
    );
  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) if (PASSED_THROUGH.has(k)) extra[k] = v;
  const c: RetNetConfig = {
    ...RETNET_DEFAULTS,
    vocabSize: num('vocab_size', true),
    embedDim: D,
    layers: num('num_hidden_layers', true),
    heads: H,
    kvHeads,
    keyDim: Math.trunc(D * num('expand_k', false)),
    valueDim: Math.trunc(D * num('expand_v', false)),
    ffnDim: j.intermediate_size === null ? flaIntermediateSize(D, ratio) : num('intermediate_size', true),
    activation: 'swish',
    glu: true,
    normalizeBefore: true,
    normEps: num('norm_eps', false),
    tiedEmbeddings: bool('tie_word_embeddings'),
    // The forms are one function here (no normaliser); fla's parallel mode maps to ours, the rest to chunkwise.
    chunkwiseRecurrent: mode !== 'parallel',
    chunkSize: FLA_CHUNK,
    retentionNorm: 'none',
    rotaryPairs: 'halves',
    rotaryAngles: 'rope',
    groupNormWeight: bool('elementwise_affine'),
    outputGate: bool('use_output_gate'),
    featureMap,
    format: 'fla',
    extra,
  };
  bool('fuse_norm');
  const K = c.keyDim / H;
  if (c.keyDim % H !== 0 || c.valueDim % H !== 0)
    throw new ConfigError(
      `${source}: key width ${c.keyDim} and value width ${c.valueDim} must be divisible by num_heads ${H}`,
    );
  if (H % kvHeads !== 0)
    throw new ConfigError(`${source}: num_heads ${H} must be a multiple of num_kv_heads ${kvHeads}`);
  if (K % 2 !== 0) throw new ConfigError(`${source}: the key head dim ${K} must be even (rotary)`);
  return validateRetNetConfig(c, source);
}

/** fla's config.json for our config (format 'fla'): the §1 keys, then the passed-through ones as read. */
export function flaConfigToJSON(c: RetNetConfig): Record<string, unknown> {
  const fixed: [boolean, string][] = [
    [c.retentionNorm === 'none', 'retentionNorm "none"'],
    [c.rotaryPairs === 'halves' && c.rotaryAngles === 'rope', 'halves/rope rotary'],
    [c.activation === 'swish' && c.glu && c.normalizeBefore, 'a swish GLU in pre-norm blocks'],
    [!c.scaleEmbedding && !c.layernormEmbedding && !c.deepnorm, 'no embedding scale/norm, no deepnorm'],
  ];
  for (const [ok, what] of fixed)
    if (!ok) throw new ConfigError(`flaConfigToJSON: fla's RetNet needs ${what}; this config differs`);
  const extra = c.extra;
  const ratio = 'hidden_ratio' in extra ? (extra.hidden_ratio as number | null) : FLA_DEFAULTS.hidden_ratio;
  const j: Record<string, unknown> = {
    architectures: ['RetNetForCausalLM'],
    attn_mode: c.chunkwiseRecurrent ? 'chunk' : 'parallel',
    fuse_norm: true,
    hidden_ratio: ratio,
    ...extra,
    model_type: 'retnet',
    vocab_size: c.vocabSize,
    hidden_size: c.embedDim,
    num_hidden_layers: c.layers,
    num_heads: c.heads,
    num_kv_heads: c.kvHeads === c.heads ? null : c.kvHeads,
    expand_k: c.keyDim / c.embedDim,
    expand_v: c.valueDim / c.embedDim,
    intermediate_size: c.ffnDim === flaIntermediateSize(c.embedDim, ratio) ? null : c.ffnDim,
    hidden_act: 'swish',
    use_output_gate: c.outputGate,
    elementwise_affine: c.groupNormWeight,
    norm_eps: c.normEps,
    feature_map: c.featureMap,
    tie_word_embeddings: c.tiedEmbeddings,
  };
  // The attn_mode read from a file is kept unless it contradicts the form (parallel vs the chunk kernels).
  if ((j.attn_mode === 'parallel') === c.chunkwiseRecurrent) j.attn_mode = c.chunkwiseRecurrent ? 'chunk' : 'parallel';
  return Object.fromEntries(Object.entries(j).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** fla's name of the per-head norm weight: the fused norm+gate module when it exists (fla-spec §3). */
function groupNormName(c: RetNetConfig): string {
  const fused = c.outputGate && (c.extra.fuse_norm ?? true) === true;
  return fused ? 'g_norm_swish_gate' : 'g_norm';
}

// Our names (the left, torchscale's tree) → fla's, per layer and for the trunk.
const LAYER_NAMES: [string, string][] = [
  ['retention_layer_norm', 'attn_norm'],
  ['retention.q_proj', 'attn.q_proj'],
  ['retention.k_proj', 'attn.k_proj'],
  ['retention.v_proj', 'attn.v_proj'],
  ['retention.g_proj', 'attn.g_proj'],
  ['retention.out_proj', 'attn.o_proj'],
  ['final_layer_norm', 'mlp_norm'],
  ['ffn.fc1', 'mlp.gate_proj'], // fc2(act(fc1 x) ⊙ gate x) = down(silu(gate_proj x) ⊙ up_proj x)
  ['ffn.gate', 'mlp.up_proj'],
  ['ffn.fc2', 'mlp.down_proj'],
];
const TRUNK_NAMES: [string, string][] = [
  ['embed_tokens', 'model.embeddings'],
  ['layer_norm', 'model.norm'],
  ['output_projection', 'lm_head'],
];

/** fla's state-dict name of one of our parameter names (fla-spec §3). */
export function flaParamName(c: RetNetConfig, ours: string): string {
  const layer = /^layers\.(\d+)\.(.+)\.(weight)$/.exec(ours);
  if (layer) {
    const [, l, module, param] = layer;
    if (module === 'retention.group_norm') return `model.layers.${l}.attn.${groupNormName(c)}.${param}`;
    const hit = LAYER_NAMES.find(([o]) => o === module);
    if (hit) return `model.layers.${l}.${hit[1]}.${param}`;
  } else {
    const hit = TRUNK_NAMES.find(([o]) => `${o}.weight` === ours);
    if (hit) return `${hit[1]}.weight`;
  }
  throw new ConfigError(`flaParamName: no fla name for parameter '${ours}'`);
}

type Values = Map<string, { shape: readonly number[]; data: ArrayLike<number> }>;

/**
 * fla's older MLP layout (fla-spec §10): one `mlp.gate_proj.weight` [2I, D] and no `up_proj`; rows 0…I−1 are the
 * gate, rows I…2I−1 the up projection. Returns the values with every such tensor split into the current layout (the
 * other entries shared, not copied); `ffnDim` is I, `source` names the file in errors.
 */
export function splitFusedGateProj(values: Values, ffnDim: number, source: string): Values {
  const out: Values = new Map(values);
  for (const [name, t] of values) {
    const m = /^(model\.layers\.\d+\.mlp\.)gate_proj\.weight$/.exec(name);
    if (!m || values.has(`${m[1]}up_proj.weight`) || t.shape[0] !== 2 * ffnDim) continue;
    if (t.shape.length !== 2)
      throw new FormatError(`${source}: fused '${name}' must be [2·${ffnDim}, D], got [${t.shape.join(', ')}]`);
    const half = ffnDim * t.shape[1]!;
    const data = t.data;
    const rows = (from: number): ArrayLike<number> =>
      ArrayBuffer.isView(data)
        ? (data as unknown as Float64Array).subarray(from, from + half)
        : Array.from({ length: half }, (_, i) => data[from + i]!);
    out.set(name, { shape: [ffnDim, t.shape[1]!], data: rows(0) });
    out.set(`${m[1]}up_proj.weight`, { shape: [ffnDim, t.shape[1]!], data: rows(half) });
  }
  return out;
}

/**
 * Every parameter of a RetNet in fla's format as [fla name, shape], in the model's order, without building the model
 * (the 1.3B stand-in writes 1.35 B values it never holds as one model). Must list what RetNetModel.namedParameters
 * does; test/fla.test.ts checks that it does.
 */
export function flaParameterShapes(c: RetNetConfig): [string, number[]][] {
  const { embedDim: D, keyDim: dk, valueDim: dv, ffnDim: I, vocabSize } = c;
  const G = c.heads / c.kvHeads;
  const ours: [string, number[]][] = [['embed_tokens.weight', [vocabSize, D]]];
  for (let l = 0; l < c.layers; l++) {
    const p = `layers.${l}.`;
    ours.push(
      [`${p}retention.q_proj.weight`, [dk, D]],
      [`${p}retention.k_proj.weight`, [dk / G, D]],
      [`${p}retention.v_proj.weight`, [dv / G, D]],
      ...(c.outputGate ? [[`${p}retention.g_proj.weight`, [dv, D]] as [string, number[]]] : []),
      [`${p}retention.out_proj.weight`, [D, dv]],
      ...(c.groupNormWeight ? [[`${p}retention.group_norm.weight`, [dv / c.heads]] as [string, number[]]] : []),
      [`${p}retention_layer_norm.weight`, [D]],
      [`${p}ffn.fc1.weight`, [I, D]],
      [`${p}ffn.fc2.weight`, [D, I]],
      [`${p}ffn.gate.weight`, [I, D]],
      [`${p}final_layer_norm.weight`, [D]],
    );
  }
  ours.push(['layer_norm.weight', [D]]);
  if (!c.tiedEmbeddings) ours.push(['output_projection.weight', [vocabSize, D]]);
  return ours.map(([n, s]) => [flaParamName(c, n), s]);
}
