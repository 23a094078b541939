// Model directories (Node only). Two layouts:
// - ours / torchscale's: `config.json` (the architecture's config, with "arch", or torchscale's RetNet keys) +
//   `model.safetensors` (torchscale/PyTorch names) + `tokenizer.json` when there is one;
// - Hugging Face's (recognised by config.json's `model_type`, e.g. fla's RetNet): `config.json` with `torch_dtype` or
//   `dtype`, `model.safetensors` or shards behind `model.safetensors.index.json`, `tokenizer.json`,
//   `tokenizer_config.json`, `special_tokens_map.json`, `generation_config.json`.
//
// Loading checks before it allocates: the config is parsed and validated, the checkpoint headers are read, and the
// parameter count the config implies must equal what the checkpoint holds, so a config that contradicts the weights
// (decoder_layers 65536 over a 2-layer file) fails in milliseconds. Then the model is allocated without a random
// initialisation and filled tensor by tensor from the files (no whole-file buffer), each tensor checked for its
// shape and for non-finite values.

import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { getBackend } from '../backend/index.js';
import { retentionGammas } from '../backend/reference/retention-math.js';
import { ConfigError, FormatError, ShapeError, formatShape } from '../errors.js';
import type { CausalLM } from '../models/lm.js';
import {
  type ModelOptions,
  type ModelSpec,
  buildModel,
  modelConfigJSON,
  parseModelConfig,
  specParameterCount,
} from '../models/registry.js';
import { RetNetModel } from '../models/retnet/model.js';
import { retnetAngles } from '../nn/rotary.js';
import type { WeightFormat } from '../quant/formats.js';
import { quantizeModel } from '../quant/model.js';
import type { TokenizerContext } from '../tokenizer/hf.js';
import { loadTokenizer } from '../tokenizer/load.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { Tensor } from '../tensor/tensor.js';
import { writeFileAtomic } from './atomic.js';
import { type LoadedTensor, type TensorToSave, Weights, tensorValues, writeSafetensors } from './safetensors.js';

/** Buffers torchscale keeps in its state_dict (persistent, so `load_state_dict(strict=True)` needs them). */
function torchscaleBuffers(model: RetNetModel): Map<string, TensorToSave> {
  const H = model.config.heads;
  const K = model.config.embedDim / H;
  // torchscale computes both in float32; store them as it would.
  const f32 = (xs: ArrayLike<number>) => Array.from(Float32Array.from(xs));
  return new Map<string, TensorToSave>([
    ['retnet_rel_pos.angle', { dtype: 'F32', shape: [K], data: f32(retnetAngles(K)) }],
    ['retnet_rel_pos.decay', { dtype: 'F32', shape: [H], data: f32(retentionGammas(H).map(Math.log)) }],
  ]);
}
const LOADER_KEYS = new Set(['torch_dtype', 'dtype', 'transformers_version', 'architectures', '_name_or_path']);
const isTorchscaleBuffer = (name: string) => name.startsWith('retnet_rel_pos.');

/** Writes config.json, model.safetensors (atomically) and tokenizer.json (when given) into dir. */
export function saveModelDir(dir: string, model: CausalLM, tokenizer?: Tokenizer): void {
  mkdirSync(dir, { recursive: true });
  const tensors = new Map<string, TensorToSave>();
  for (const [name, t] of model.namedParameters())
    tensors.set(name, { dtype: t.dtype === 'float64' ? 'F64' : 'F32', shape: t.shape, data: t.data() });
  if (model instanceof RetNetModel && model.config.format === 'torchscale')
    for (const [n, t] of torchscaleBuffers(model)) tensors.set(n, t);
  writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt', arch: model.arch });
  if (tokenizer) writeFileAtomic(join(dir, 'tokenizer.json'), tokenizer.toJSON());
  writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(modelConfigJSON(model), null, 2)}\n`);
}

/** A JSON file; numbers that overflow to ±Infinity (1e400) are rejected with their key path. */
export function readJSON(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new FormatError(`${path}: cannot read (${(e as Error).message})`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new FormatError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  const walk = (v: unknown, at: string): void => {
    if (typeof v === 'number' && !Number.isFinite(v))
      throw new ConfigError(`${path}: ${at} is too large for a number (it reads as ${v}); expected a finite value`);
    if (v !== null && typeof v === 'object')
      for (const [k, x] of Object.entries(v)) walk(x, at === '' ? JSON.stringify(k) : `${at}.${k}`);
  };
  walk(value, '');
  return value;
}

/** A tokenizer.json file (and the configs of its directory when given). */
export function readTokenizerFile(path: string, ctx: TokenizerContext = {}): Tokenizer {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new FormatError(`${path}: cannot read (${(e as Error).message})`);
  }
  return loadTokenizer(text, path, ctx);
}

function readOptionalJSON(path: string): Record<string, unknown> | null {
  if (!existsSync(path)) return null;
  const v = readJSON(path);
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new FormatError(`${path}: expected a JSON object`);
  return v as Record<string, unknown>;
}

/** Defaults a Hugging Face directory sets for generation (generation_config.json, else config.json). */
export interface GenerationDefaults {
  bosTokenId: number | null;
  /** Every id that ends a generation (generation_config's eos_token_id may be a list). */
  eosTokenIds: number[];
  padTokenId: number | null;
  /** Sampling defaults the checkpoint's authors chose (absent keys: not set). */
  sampling: { doSample?: boolean; temperature?: number; topP?: number; topK?: number; maxNewTokens?: number };
}

export interface LoadedModelDir {
  model: CausalLM;
  tokenizer: Tokenizer | null;
  /** config.json as read. */
  config: Record<string, unknown>;
  /** config.json's `model_type` for a Hugging Face directory; null for ours/torchscale's. */
  modelType: string | null;
  /** The weights' dtype as config.json states it (`torch_dtype` or `dtype`), null when it does not. */
  storedDType: string | null;
  generation: GenerationDefaults;
  /** tokenizer_config.json's chat template (Jinja text), for the server's chat endpoint; null when none. */
  chatTemplate: string | null;
}

export interface LoadOptions extends Omit<ModelOptions, 'init' | 'seed'> {
  /** Accept NaN/Inf weights (default false: rejected with the tensor's name). */
  allowNonFinite?: boolean;
  /** Converts every Linear's weight to this format after loading (src/quant/model.ts; `--weights`). */
  weights?: WeightFormat;
}

function tokenId(v: unknown, field: string, source: string): number | null {
  if (v === undefined || v === null) return null;
  if (!Number.isSafeInteger(v) || (v as number) < 0)
    throw new ConfigError(`${source}: ${field} must be a non-negative integer token id, got ${JSON.stringify(v)}`);
  return v as number;
}

function generationDefaults(
  config: Record<string, unknown>,
  gen: Record<string, unknown> | null,
  configPath: string,
  genPath: string,
): GenerationDefaults {
  const from = (key: string) =>
    gen && key in gen ? ([gen[key], genPath] as const) : ([config[key], configPath] as const);
  const [bos, bosSrc] = from('bos_token_id');
  const [eos, eosSrc] = from('eos_token_id');
  const [pad, padSrc] = from('pad_token_id');
  const eosIds = (Array.isArray(eos) ? eos : [eos])
    .map((v, i) => tokenId(v, Array.isArray(eos) ? `eos_token_id[${i}]` : 'eos_token_id', eosSrc))
    .filter((v): v is number => v !== null);
  const sampling: GenerationDefaults['sampling'] = {};
  if (gen) {
    const num = (key: string, ok: (x: number) => boolean) => {
      const v = gen[key];
      if (v === undefined || v === null) return undefined;
      if (typeof v !== 'number' || !ok(v))
        throw new ConfigError(`${genPath}: ${key} is out of range: ${JSON.stringify(v)}`);
      return v;
    };
    if (gen.do_sample !== undefined && typeof gen.do_sample !== 'boolean')
      throw new ConfigError(`${genPath}: do_sample must be true or false, got ${JSON.stringify(gen.do_sample)}`);
    const set = <K extends keyof GenerationDefaults['sampling']>(k: K, v: GenerationDefaults['sampling'][K]) => {
      if (v !== undefined) sampling[k] = v;
    };
    set('doSample', gen.do_sample as boolean | undefined);
    set(
      'temperature',
      num('temperature', (x) => x >= 0),
    );
    set(
      'topP',
      num('top_p', (x) => x > 0 && x <= 1),
    );
    set(
      'topK',
      num('top_k', (x) => Number.isInteger(x) && x >= 0),
    );
    set(
      'maxNewTokens',
      num('max_new_tokens', (x) => Number.isInteger(x) && x > 0),
    );
  }
  return {
    bosTokenId: tokenId(bos, 'bos_token_id', bosSrc),
    eosTokenIds: eosIds,
    padTokenId: tokenId(pad, 'pad_token_id', padSrc),
    sampling,
  };
}

/** The layer count a checkpoint's names show (`layers.<n>.` or `model.layers.<n>.`), for messages. */
function checkpointLayers(names: string[]): number {
  let max = -1;
  for (const n of names) {
    const m = /(?:^|\.)layers\.(\d+)\./.exec(n);
    if (m) max = Math.max(max, Number(m[1]));
  }
  return max + 1;
}

/** Why a config cannot describe a checkpoint's tensors: the layer count or vocabulary when those differ. */
function sizeMismatch(
  spec: ModelSpec,
  config: Record<string, unknown>,
  configPath: string,
  weights: Weights,
  stored: string[],
  wanted: number,
  held: number,
): string {
  const c = spec.config;
  const reasons: string[] = [];
  const layers = checkpointLayers(stored);
  if (layers > 0 && layers !== c.layers)
    reasons.push(
      `${keyFor(config, ['decoder_layers', 'num_hidden_layers', 'layers'])} is ${c.layers} but the checkpoint has ` +
        `${layers} layers`,
    );
  const embedding = stored.find((n) => /embed/.test(n) && weights.entry(n)!.shape.length === 2);
  const rows = embedding ? weights.entry(embedding)!.shape[0]! : c.vocabSize;
  if (rows !== c.vocabSize)
    reasons.push(
      `${keyFor(config, ['vocab_size', 'vocabSize'])} is ${c.vocabSize} but '${embedding}' has ${rows} rows`,
    );
  return (
    `${configPath} does not describe ${weights.readers.map((r) => r.path).join(', ')}: ` +
    `${reasons.length > 0 ? `${reasons.join('; ')}; ` : ''}the config implies ${wanted} parameters, the checkpoint ` +
    `holds ${held}`
  );
}

/** Which config key a message should name for a config field (HF, torchscale or ours). */
function keyFor(config: Record<string, unknown>, candidates: string[]): string {
  return candidates.find((k) => k in config) ?? candidates[0]!;
}

function nonFiniteIndex(t: LoadedTensor): number {
  if (t.bits) {
    const expMask = t.dtype === 'BF16' ? 0x7f80 : 0x7c00;
    return t.bits.findIndex((b) => (b & expMask) === expMask);
  }
  if (t.data instanceof Float64Array || t.data instanceof Float32Array)
    return t.data.findIndex((x) => !Number.isFinite(x));
  return -1;
}

/**
 * Loads a model directory (either layout; see the top of this file). Tensors of F64/F32/F16/BF16 load into the
 * requested dtype (default float32). Everything is checked against everything else before the model exists.
 */
export function loadModelDir(dir: string, opts: LoadOptions = {}): LoadedModelDir {
  if (!existsSync(dir)) throw new FormatError(`${dir}: model directory does not exist`);
  if (!statSync(dir).isDirectory()) throw new FormatError(`${dir}: not a directory (expected a model directory)`);
  const configPath = join(dir, 'config.json');
  if (!existsSync(configPath)) throw new FormatError(`${dir}: missing ${configPath}`);
  const raw = readJSON(configPath);
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new ConfigError(`${configPath}: expected a JSON object`);
  const config = raw as Record<string, unknown>;
  const modelType = typeof config.model_type === 'string' ? config.model_type : null;
  if (config.model_type !== undefined && modelType === null)
    throw new ConfigError(`${configPath}: model_type must be a string, got ${JSON.stringify(config.model_type)}`);
  // Keys every Hugging Face config carries about the files, not the model; the loader reads them itself.
  const archConfig = Object.fromEntries(Object.entries(config).filter(([k]) => !LOADER_KEYS.has(k)));
  const spec = parseModelConfig(archConfig, configPath);
  const storedDType = config.torch_dtype ?? config.dtype ?? null;
  if (storedDType !== null && typeof storedDType !== 'string')
    throw new ConfigError(`${configPath}: torch_dtype/dtype must be a string, got ${JSON.stringify(storedDType)}`);

  const weights = Weights.open(dir);
  try {
    // 1. Header against config, before anything is allocated. The parameter count the config implies is compared
    // with what the files hold: a config asking for more than twice that (decoder_layers 65536 over 2 layers,
    // vocab_size 1e6 over 300) fails here; closer mismatches are named tensor by tensor in step 2, whose allocation
    // is then bounded by the checkpoint's own size.
    const names = weights.names();
    const stored = names.filter((n) => !isTorchscaleBuffer(n));
    const held = stored.reduce((a, n) => a + weights.entry(n)!.shape.reduce((x, y) => x * y, 1), 0);
    const wanted = specParameterCount(spec);
    if (wanted > 2 * held) throw new ShapeError(sizeMismatch(spec, config, configPath, weights, stored, wanted, held));
    if (spec.arch === 'retnet' && names.some(isTorchscaleBuffer)) checkTorchscaleBuffers(spec.config, weights, config);

    // 2. Allocate (no random init) and fill tensor by tensor.
    const model = buildModel(spec, { ...opts, backend: opts.backend ?? getBackend(), init: false });
    try {
      fill(model, weights, opts.allowNonFinite ?? false, config, configPath);
      if (opts.weights) quantizeModel(model, opts.weights);
    } catch (e) {
      model.dispose();
      throw e;
    }

    const tokenizerConfig = readOptionalJSON(join(dir, 'tokenizer_config.json'));
    const specialTokensMap = readOptionalJSON(join(dir, 'special_tokens_map.json'));
    const tokPath = join(dir, 'tokenizer.json');
    let tokenizer: Tokenizer | null = null;
    if (existsSync(tokPath)) {
      tokenizer = readTokenizerFile(tokPath, { tokenizerConfig, specialTokensMap });
      if (tokenizer.vocabSize > model.vocabSize) {
        model.dispose();
        throw new ConfigError(
          `${tokPath}: the tokenizer has ${tokenizer.vocabSize} ids but the model's vocabulary (${configPath} ` +
            `${keyFor(config, ['vocab_size', 'vocabSize'])}) is ${model.vocabSize}`,
        );
      }
    }
    const genPath = join(dir, 'generation_config.json');
    const template = tokenizerConfig?.chat_template;
    return {
      model,
      tokenizer,
      config,
      modelType,
      storedDType: storedDType as string | null,
      generation: generationDefaults(config, readOptionalJSON(genPath), configPath, genPath),
      chatTemplate: chatTemplateOf(template, join(dir, 'tokenizer_config.json')),
    };
  } finally {
    weights.close();
  }
}

/** tokenizer_config.json's chat_template: a string, or a list of {name, template} (the "default" one is used). */
function chatTemplateOf(v: unknown, source: string): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    const named = v.find((t) => t && typeof t === 'object' && (t as { name?: unknown }).name === 'default') as
      { template?: unknown } | undefined;
    if (named && typeof named.template === 'string') return named.template;
  }
  throw new ConfigError(`${source}: chat_template must be a string or a list with a "default" {name, template}`);
}

/** torchscale's saved buffers must match the config: decay has one entry per head, angle one per key dim. */
function checkTorchscaleBuffers(
  c: { heads: number; embedDim: number },
  weights: Weights,
  config: Record<string, unknown>,
): void {
  const heads = keyFor(config, ['decoder_retention_heads', 'heads']);
  const decay = weights.entry('retnet_rel_pos.decay');
  if (decay && (decay.shape.length !== 1 || decay.shape[0] !== c.heads))
    throw new ShapeError(
      `${weights.fileOf('retnet_rel_pos.decay')}: retnet_rel_pos.decay has shape ${formatShape(decay.shape)} ` +
        `(one decay per head), but config.json sets ${heads} ${c.heads}`,
    );
  const angle = weights.entry('retnet_rel_pos.angle');
  const K = c.embedDim / c.heads;
  if (angle && (angle.shape.length !== 1 || angle.shape[0] !== K))
    throw new ShapeError(
      `${weights.fileOf('retnet_rel_pos.angle')}: retnet_rel_pos.angle has shape ${formatShape(angle.shape)}, ` +
        `but config.json's ${heads} ${c.heads} gives a key head dim of ${K}`,
    );
}

/** Copies every parameter from the files, one tensor in memory at a time. */
function fill(
  model: CausalLM,
  weights: Weights,
  allowNonFinite: boolean,
  config: Record<string, unknown>,
  configPath: string,
): void {
  const params = model.namedParameters();
  const files = weights.readers.map((r) => r.path).join(', ');
  const missing = params.filter(([n]) => !weights.entry(n)).map(([n]) => n);
  const built = `the model that ${configPath} describes`;
  if (missing.length > 0)
    throw new FormatError(`${files}: missing tensors ${missing.join(', ')} (${built} has them; do the files match?)`);
  const known = new Set(params.map(([n]) => n));
  const extra = weights.names().filter((n) => !known.has(n) && !isTorchscaleBuffer(n));
  if (extra.length > 0)
    throw new FormatError(`${files}: unexpected tensors ${extra.join(', ')} (${built} has none; do the files match?)`);
  const firstName = new Map<Tensor, string>();
  for (const [n, t] of params) {
    const e = weights.entry(n)!;
    if (e.shape.length !== t.shape.length || e.shape.some((d, i) => d !== t.shape[i]))
      throw new ShapeError(
        `${weights.fileOf(n)}: tensor '${n}' has shape ${formatShape(e.shape)}, ${built} expects ${formatShape(t.shape)}`,
      );
    const v = weights.read(n);
    if (!allowNonFinite) {
      const i = nonFiniteIndex(v);
      if (i >= 0)
        throw new FormatError(
          `${weights.fileOf(n)}: tensor '${n}' holds a non-finite value (${tensorValues(v)[i]}) at flat index ${i} ` +
            `(pass allowNonFinite to load it anyway)`,
        );
    }
    const values = tensorValues(v);
    const first = firstName.get(t);
    if (first !== undefined) {
      // A tensor shared under two names (tied embeddings): the file's copies must agree, else the config is wrong.
      const firstValues = tensorValues(weights.read(first));
      if (values.some((x, i) => x !== firstValues[i]))
        throw new ConfigError(
          `${configPath}: ${keyFor(config, ['tie_word_embeddings', 'share_decoder_input_output_embed', 'tiedEmbeddings'])} ` +
            `is true (ties '${n}' to '${first}'), but ${weights.fileOf(n)} holds different values for them`,
        );
      continue;
    }
    firstName.set(t, n);
    t.device.write(t, values);
  }
}
