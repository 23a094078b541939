// Loading a model from a checkpoint, the portable half (no Node built-ins; Node's loadModelDir in model-dir.ts and the
// browser's loadModel in src/web/model.ts both use it). The config is parsed and validated first (`checkpointSpec`);
// then, with the checkpoint's headers open, the parameter count the config implies must agree with what the
// checkpoint holds, so a config that contradicts the weights (decoder_layers 65536 over a 2-layer file) fails in
// milliseconds; then the model is allocated without a random initialisation and filled tensor by tensor, each
// tensor checked for its shape, its dtype and for non-finite values: BF16/F16 weights held as read (where the device
// holds them), quantized weights (`<name>.scales`/`<name>.codes`) read back checked. The reads come in file order (each
// file's tensors by offset), served from files by `buildCheckpointModel` (Node) or from streams as the bytes arrive by
// `streamCheckpointModel` (a browser).

import { getBackend } from '../backend/select.js';
import { ConfigError, FormatError, ShapeError, formatShape } from '../errors.js';
import type { CausalLM } from '../models/lm.js';
import {
  type ModelOptions,
  type ModelSpec,
  buildModel,
  parseModelConfig,
  specParameterCount,
} from '../models/registry.js';
import type { Device } from '../backend/device.js';
import { HostDevice } from '../backend/host/device.js';
import { Embedding, Linear } from '../nn/layers.js';
import { WEIGHT_DTYPES, WEIGHT_FORMATS, type WeightFormat, isWeightFormat, weightFormatOf } from '../quant/formats.js';
import { quantizeModel } from '../quant/model.js';
import {
  type DType,
  type QuantizedDType,
  arrayOver,
  decode,
  isQuantized,
  quantParts,
  storageBytes,
} from '../tensor/dtype.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { Tensor } from '../tensor/tensor.js';
import { type TensorEntry, type TensorFile, type Weights, entryBuffer, tensorValues } from './safetensors-format.js';

export const LOADER_KEYS = new Set(['torch_dtype', 'dtype', 'transformers_version', 'architectures', '_name_or_path']);
export const isTorchscaleBuffer = (name: string) => name.startsWith('retnet_rel_pos.');

/**
 * The metadata key of a checkpoint with quantized weights: a JSON object naming the format of each (`{"<name>":
 * "q4"}`), whose bytes are stored as `<name>.scales` and `<name>.codes` (the parts of src/tensor/dtype.ts).
 */
export const QUANTIZED_KEY = 'retnet.quantized';

/** JSON text (`path` names it); numbers that overflow to ±Infinity (1e400) are rejected with their key path. */
export function parseJSON(text: string, path: string): unknown {
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

/** Defaults a Hugging Face directory sets for generation (generation_config.json, else config.json). */
export interface GenerationDefaults {
  bosTokenId: number | null;
  /** Every id that ends a generation (generation_config's eos_token_id may be a list). */
  eosTokenIds: number[];
  padTokenId: number | null;
  /** Sampling defaults the checkpoint's authors chose (absent keys: not set). */
  sampling: { doSample?: boolean; temperature?: number; topP?: number; topK?: number; maxNewTokens?: number };
}

export interface LoadOptions extends Omit<ModelOptions, 'init' | 'seed'> {
  /** Accept NaN/Inf weights (default false: rejected with the tensor's name). */
  allowNonFinite?: boolean;
  /**
   * The format every Linear's weight is held in (src/quant; `--weights`). Default: as the checkpoint holds them —
   * under a float32 model the BF16/F16 weights of Linear and Embedding modules keep their 16-bit bytes as read
   * (widening them would double the memory and halve decode speed for no accuracy: the products compute in float32
   * on the exact values either way), quantized weights stay quantized, the rest is float32. 'f32' widens everything.
   * A format of its own converts after loading (from the 16-bit values where the file holds those).
   */
  weights?: WeightFormat;
}

function tokenId(v: unknown, field: string, source: string): number | null {
  if (v === undefined || v === null) return null;
  if (!Number.isSafeInteger(v) || (v as number) < 0)
    throw new ConfigError(`${source}: ${field} must be a non-negative integer token id, got ${JSON.stringify(v)}`);
  return v as number;
}

export function generationDefaults(
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
    `${configPath} does not describe ${weights.files.join(', ')}: ` +
    `${reasons.length > 0 ? `${reasons.join('; ')}; ` : ''}the config implies ${wanted} parameters, the checkpoint ` +
    `holds ${held}`
  );
}

/** Which config key a message should name for a config field (HF, torchscale or ours). */
function keyFor(config: Record<string, unknown>, candidates: string[]): string {
  return candidates.find((k) => k in config) ?? candidates[0]!;
}

/** tokenizer_config.json's chat_template: a string, or a list of {name, template} (the "default" one is used). */
export function chatTemplateOf(v: unknown, source: string): string | null {
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

/** The quantized weights a checkpoint names in its metadata (QUANTIZED_KEY), with their dtypes. */
function quantizedWeights(weights: Weights): Map<string, QuantizedDType> {
  const out = new Map<string, QuantizedDType>();
  for (const r of weights.readers) {
    const text = r.metadata[QUANTIZED_KEY];
    if (text === undefined) continue;
    let map: unknown;
    try {
      map = JSON.parse(text);
    } catch (e) {
      throw new FormatError(`${r.path}: __metadata__ '${QUANTIZED_KEY}' is not valid JSON (${(e as Error).message})`);
    }
    if (map === null || typeof map !== 'object' || Array.isArray(map))
      throw new FormatError(`${r.path}: __metadata__ '${QUANTIZED_KEY}' must be an object of tensor name -> format`);
    for (const [name, format] of Object.entries(map)) {
      const dtype = typeof format === 'string' && isWeightFormat(format) ? WEIGHT_DTYPES[format] : null;
      if (dtype === null || !isQuantized(dtype)) {
        const formats = WEIGHT_FORMATS.filter((f) => isQuantized(WEIGHT_DTYPES[f]));
        throw new FormatError(
          `${r.path}: __metadata__ '${QUANTIZED_KEY}' gives tensor '${name}' the format ${JSON.stringify(format)}, ` +
            `not a quantized one (expected ${formats.join(', ')})`,
        );
      }
      out.set(name, dtype);
    }
  }
  return out;
}

/** The names a checkpoint stores a quantized weight under (src/tensor/dtype.ts's parts). */
const partNames = (name: string, dtype: QuantizedDType, shape: readonly number[]) =>
  quantParts(dtype, shape).map((p) => `${name}.${p.name}`);

/** One tensor's bytes the loader asks for: `entry` of `file`, read into `into` (exactly its stored size). */
export interface TensorRead {
  file: TensorFile;
  entry: TensorEntry;
  into: Uint8Array;
}

/** What one stored tensor fills: `into()` gives the bytes to read it into, `done` takes them once read. */
interface Sink {
  into(): Uint8Array;
  done(bytes: Uint8Array): void;
}

/**
 * Sinks for the stored parts of one tensor of dtype and shape (a 16-bit weight: one part; a quantized weight: its
 * scales and codes), read straight into its storage on a host device, else into one host buffer that goes to the
 * device once every part is in. `check` sees the whole storage before the tensor is used, `place` gets the tensor
 * (at once on a host device, so that a failure later disposes it with the model).
 */
function storedSinks(
  device: Device,
  dtype: DType,
  shape: readonly number[],
  parts: readonly { name: string; offset: number; bytes: number }[],
  check: (storage: Uint8Array) => void,
  place: (t: Tensor) => void,
): Map<string, Sink> {
  let storage: Uint8Array | null = null;
  let left = parts.length;
  const open = (): Uint8Array => {
    if (storage) return storage;
    if (device instanceof HostDevice) {
      const t = device.empty(shape, dtype);
      place(t);
      const a = device.raw(t);
      return (storage = new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
    }
    return (storage = new Uint8Array(storageBytes(dtype, shape)));
  };
  const sinks = new Map<string, Sink>();
  for (const p of parts)
    sinks.set(p.name, {
      into: () => open().subarray(p.offset, p.offset + p.bytes),
      done: () => {
        if (--left > 0) return;
        check(storage!);
        if (!(device instanceof HostDevice))
          place(device.fromStorage(arrayOver(dtype, storage!.buffer as ArrayBuffer), shape, dtype));
      },
    });
  return sinks;
}

/** A quantized weight's parts must have the dtypes and shapes its format stores. */
function checkQuantParts(weights: Weights, name: string, dtype: QuantizedDType, shape: readonly number[]): void {
  for (const part of quantParts(dtype, shape)) {
    const n = `${name}.${part.name}`;
    const e = weights.entry(n)!;
    if (e.dtype !== part.dtype || e.shape.length !== part.shape.length || e.shape.some((d, i) => d !== part.shape[i]))
      throw new ShapeError(
        `${weights.fileOf(n)}: tensor '${n}' is ${e.dtype} ${formatShape(e.shape)}; a ${weightFormatOf(dtype)} weight ` +
          `${formatShape(shape)} stores its ${part.name} as ${part.dtype} ${formatShape(part.shape)}`,
      );
  }
}

/** A quantized weight's scales must be finite. */
function checkScales(
  weights: Weights,
  name: string,
  dtype: QuantizedDType,
  shape: readonly number[],
  storage: Uint8Array,
) {
  const scales = quantParts(dtype, shape).find((p) => p.name === 'scales')!;
  const bytes = storage.slice(scales.offset, scales.offset + scales.bytes);
  const values =
    scales.dtype === 'F32'
      ? new Float32Array(bytes.buffer)
      : decode('float16', new Uint16Array(bytes.buffer), scales.shape);
  const i = (values as Float32Array).findIndex((x) => !Number.isFinite(x));
  if (i >= 0)
    throw new FormatError(
      `${weights.fileOf(`${name}.scales`)}: tensor '${name}.scales' holds a non-finite scale (${values[i]}) at flat ` +
        `index ${i} (pass allowNonFinite to load it anyway)`,
    );
}

/** The Linear and Embedding modules holding each tensor as their weight. */
function weightHolders(model: CausalLM): Map<Tensor, (Linear | Embedding)[]> {
  const out = new Map<Tensor, (Linear | Embedding)[]>();
  for (const [, m] of model.namedModules())
    if (m instanceof Linear || m instanceof Embedding) out.set(m.weight, [...(out.get(m.weight) ?? []), m]);
  return out;
}

interface FillOptions {
  allowNonFinite: boolean;
  /** Keep BF16/F16 tensors of Linear and Embedding weights as read (under a float32 model, on a device holding them). */
  keep16: boolean;
}

/** The safetensors dtypes a parameter may be stored in. */
const FLOAT_STORED = new Set(['F64', 'F32', 'F16', 'BF16']);

/**
 * Fills every parameter from the files: after checking the headers against the model (names, shapes, dtypes), yields
 * the reads it needs in file order (each file's tensors by offset, so a stream can serve them as they arrive; the
 * caller fills `into`, then resumes), one tensor in host memory at a time. Quantized weights (named in the metadata)
 * and, with keep16, the 16-bit weights of Linear and Embedding modules are read straight into tensors of their own
 * dtype, which take the place of the float32 parameters built for them.
 */
function* fillReads(
  model: CausalLM,
  weights: Weights,
  opts: FillOptions,
  config: Record<string, unknown>,
  configPath: string,
): Generator<TensorRead, void, undefined> {
  const params = model.namedParameters();
  const files = weights.files.join(', ');
  const built = `the model that ${configPath} describes`;
  const quantized = quantizedWeights(weights);
  for (const name of quantized.keys())
    if (!params.some(([n]) => n === name))
      throw new FormatError(`${files}: __metadata__ '${QUANTIZED_KEY}' names '${name}', which ${built} does not have`);
  const stored = (n: string, t: Tensor) => {
    const q = quantized.get(n);
    return q ? partNames(n, q, t.shape) : [n];
  };
  const missing = params.flatMap(([n, t]) => stored(n, t).filter((s) => !weights.entry(s)));
  if (missing.length > 0)
    throw new FormatError(`${files}: missing tensors ${missing.join(', ')} (${built} has them; do the files match?)`);
  const known = new Set(params.flatMap(([n, t]) => stored(n, t)));
  const extra = weights.names().filter((n) => !known.has(n) && !isTorchscaleBuffer(n));
  if (extra.length > 0)
    throw new FormatError(`${files}: unexpected tensors ${extra.join(', ')} (${built} has none; do the files match?)`);

  const holders = weightHolders(model);
  const originals = new Set<Tensor>();
  const hold = (t: Tensor, nt: Tensor, only?: typeof Linear) => {
    for (const m of holders.get(t) ?? []) if ((!only || m instanceof only) && m.weight === t) m.setWeight(nt);
    originals.add(t);
  };
  const sinks = new Map<string, Sink>();
  const add = (more: Map<string, Sink>) => more.forEach((sink, n) => sinks.set(n, sink));
  // Quantized weights (a head tied to the embedding may be quantized while the table is not).
  for (const [n, t] of params) {
    const q = quantized.get(n);
    if (!q) continue;
    if (!(holders.get(t) ?? []).some((m) => m instanceof Linear))
      throw new FormatError(
        `${weights.fileOf(`${n}.codes`)}: '${n}' is stored quantized, but only Linear weights can be`,
      );
    checkQuantParts(weights, n, q, t.shape);
    const parts = quantParts(q, t.shape).map((p) => ({ ...p, name: `${n}.${p.name}` }));
    const check = (storage: Uint8Array) => {
      if (!opts.allowNonFinite) checkScales(weights, n, q, t.shape, storage);
    };
    add(storedSinks(t.device, q, t.shape, parts, check, (nt) => hold(t, nt, Linear)));
  }
  // A tensor shared under two names (tied embeddings): the file's copies must agree, else the config is wrong. The
  // first copy read waits for the other.
  const firstName = new Map<Tensor, string>();
  const tiedNames = new Map<Tensor, string[]>();
  for (const [n, t] of params) if (!quantized.has(n)) tiedNames.set(t, [...(tiedNames.get(t) ?? []), n]);
  const waiting = new Map<Tensor, { name: string; values: ArrayLike<number> }>();
  const compareTied = (t: Tensor, n: string, values: ArrayLike<number>) => {
    if ((tiedNames.get(t) ?? []).length < 2) return;
    const other = waiting.get(t);
    if (!other) return void waiting.set(t, { name: n, values });
    waiting.delete(t);
    const first = firstName.get(t)!;
    const second = n === first ? other.name : n;
    for (let i = 0; i < values.length; i++)
      if (values[i] !== other.values[i])
        throw new ConfigError(
          `${configPath}: ${keyFor(config, ['tie_word_embeddings', 'share_decoder_input_output_embed', 'tiedEmbeddings'])} ` +
            `is true (ties '${second}' to '${first}'), but ${weights.fileOf(second)} holds different values for them`,
        );
  };
  for (const [n, t] of params) {
    if (quantized.has(n)) continue;
    const e = weights.entry(n)!;
    if (e.shape.length !== t.shape.length || e.shape.some((d, i) => d !== t.shape[i]))
      throw new ShapeError(
        `${weights.fileOf(n)}: tensor '${n}' has shape ${formatShape(e.shape)}, ${built} expects ${formatShape(t.shape)}`,
      );
    if (!FLOAT_STORED.has(e.dtype))
      throw new FormatError(
        `${weights.fileOf(n)}: tensor '${n}' is stored as ${e.dtype}; ${built} holds it in ${t.dtype} (expected one ` +
          `of ${[...FLOAT_STORED].join(', ')})`,
      );
    const valuesOf16 = (storage: Uint8Array) =>
      decode(
        e.dtype === 'BF16' ? 'bfloat16' : 'float16',
        new Uint16Array(storage.buffer, storage.byteOffset, t.size),
        t.shape,
      );
    if (firstName.has(t)) {
      // The other copy of a tied tensor: only compared.
      const buf = entryBuffer(e);
      sinks.set(n, { into: () => buf.bytes, done: () => compareTied(t, n, tensorValues(buf.tensor())) });
      continue;
    }
    firstName.set(t, n);
    const dtype16 = e.dtype === 'BF16' ? 'bfloat16' : e.dtype === 'F16' ? 'float16' : null;
    // A device that holds no tensors of that dtype gets them widened to float32.
    if (opts.keep16 && dtype16 && t.dtype === 'float32' && holders.has(t) && t.device.supportsDType(dtype16)) {
      const part = [{ name: n, offset: 0, bytes: e.end - e.begin }];
      const check = (storage: Uint8Array) => {
        const bits = new Uint16Array(storage.buffer, storage.byteOffset, t.size);
        if (!opts.allowNonFinite) checkFinite(weights, n, bits, e.dtype);
        compareTied(t, n, valuesOf16(storage));
      };
      add(storedSinks(t.device, dtype16, t.shape, part, check, (nt) => hold(t, nt)));
      continue;
    }
    const buf = entryBuffer(e);
    sinks.set(n, {
      into: () => buf.bytes,
      done: () => {
        const v = buf.tensor();
        if (!opts.allowNonFinite) checkFinite(weights, n, v.bits ?? v.data, e.dtype);
        const values = tensorValues(v);
        compareTied(t, n, values);
        t.device.write(t, values);
      },
    });
  }

  for (const file of weights.readers)
    for (const entry of [...file.header.entries.values()].sort((a, b) => a.begin - b.begin)) {
      const sink = sinks.get(entry.name);
      if (!sink) continue; // torchscale's buffers: derived from the config, not read
      const into = sink.into();
      yield { file, entry, into };
      sink.done(into);
    }
  // The float32 tensors built for weights now held otherwise (untouched zeros: no resident memory) go.
  const live = new Set(model.parameters());
  for (const t of originals) if (!live.has(t)) t.dispose();
}

/** A tensor's stored values must be finite (16-bit patterns checked by their exponent bits). */
function checkFinite(weights: Weights, n: string, data: ArrayLike<number>, dtype: string): void {
  let i = -1;
  if (data instanceof Uint16Array) {
    const expMask = dtype === 'BF16' ? 0x7f80 : 0x7c00;
    i = data.findIndex((b) => (b & expMask) === expMask);
  } else if (data instanceof Float64Array || data instanceof Float32Array)
    i = data.findIndex((x) => !Number.isFinite(x));
  if (i < 0) return;
  const value =
    data instanceof Uint16Array
      ? decode(dtype === 'BF16' ? 'bfloat16' : 'float16', data.subarray(i, i + 1), [1])[0]
      : data[i];
  throw new FormatError(
    `${weights.fileOf(n)}: tensor '${n}' holds a non-finite value (${value}) at flat index ${i} ` +
      `(pass allowNonFinite to load it anyway)`,
  );
}

/** A config.json as parsed and validated, before any weights are read. */
export interface CheckpointSpec {
  config: Record<string, unknown>;
  spec: ModelSpec;
  /** config.json's `model_type` for a Hugging Face directory; null for ours/torchscale's. */
  modelType: string | null;
  /** The weights' dtype as config.json states it (`torch_dtype` or `dtype`), null when it does not. */
  storedDType: string | null;
}

/** Parses and validates a config.json (`raw`, from `configPath`). */
export function checkpointSpec(raw: unknown, configPath: string): CheckpointSpec {
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
  return { config, spec, modelType, storedDType: storedDType as string | null };
}

/**
 * The model of a checked config, allocated (no random init), and the reads that fill it from its checkpoint (dtypes as
 * LoadOptions.weights says), for a caller to serve: buildCheckpointModel reads them from files, a browser from streams.
 */
function startCheckpointModel(
  { config, spec }: CheckpointSpec,
  configPath: string,
  weights: Weights,
  opts: LoadOptions,
): { model: CausalLM; reads: Generator<TensorRead, void, undefined> } {
  // 1. Header against config, before anything is allocated. The parameter count the config implies is compared
  // with what the files hold: a config asking for more than twice that (decoder_layers 65536 over 2 layers,
  // vocab_size 1e6 over 300) fails here; closer mismatches are named tensor by tensor in step 2, whose allocation
  // is then bounded by the checkpoint's own size.
  const names = weights.names();
  const stored = names.filter((n) => !isTorchscaleBuffer(n));
  // Quantized weights count their codes (two per byte for q4).
  const held = stored.reduce((a, n) => {
    const count = weights.entry(n)!.shape.reduce((x, y) => x * y, 1);
    return (
      a + (n.endsWith('.scales') ? 0 : n.endsWith('.codes') && weights.entry(n)!.dtype === 'U8' ? 2 * count : count)
    );
  }, 0);
  const wanted = specParameterCount(spec);
  if (wanted > 2 * held) throw new ShapeError(sizeMismatch(spec, config, configPath, weights, stored, wanted, held));
  if (spec.arch === 'retnet' && names.some(isTorchscaleBuffer)) checkTorchscaleBuffers(spec.config, weights, config);

  // 2. Allocate (no random init); the reads fill it tensor by tensor.
  const model = buildModel(spec, { ...opts, backend: opts.backend ?? getBackend(), init: false });
  // Weights stay in the checkpoint's 16-bit dtype unless a format is asked for (see LoadOptions.weights).
  const fill = { allowNonFinite: opts.allowNonFinite ?? false, keep16: opts.weights !== 'f32' };
  function* reads(): Generator<TensorRead, void, undefined> {
    yield* fillReads(model, weights, fill, config, configPath);
    if (opts.weights) quantizeModel(model, opts.weights);
  }
  return { model, reads: reads() };
}

/** The model of a checked config filled from its checkpoint's files (dtypes as LoadOptions.weights says). */
export function buildCheckpointModel(
  checked: CheckpointSpec,
  configPath: string,
  weights: Weights,
  opts: LoadOptions = {},
): CausalLM {
  const { model, reads } = startCheckpointModel(checked, configPath, weights, opts);
  try {
    for (const r of reads) r.file.readInto(r.entry.name, r.into);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

/**
 * The same, with the tensors' bytes served by `read` (a browser: each file's stream, the reads coming in file order).
 */
export async function streamCheckpointModel(
  checked: CheckpointSpec,
  configPath: string,
  weights: Weights,
  opts: LoadOptions,
  read: (r: TensorRead) => Promise<void>,
): Promise<CausalLM> {
  const { model, reads } = startCheckpointModel(checked, configPath, weights, opts);
  try {
    for (const r of reads) await read(r);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

/** A tokenizer must not have more ids than the model's vocabulary. */
export function checkTokenizerFits(
  tokenizer: Tokenizer,
  model: CausalLM,
  tokPath: string,
  configPath: string,
  config: Record<string, unknown>,
): void {
  if (tokenizer.vocabSize > model.vocabSize)
    throw new ConfigError(
      `${tokPath}: the tokenizer has ${tokenizer.vocabSize} ids but the model's vocabulary (${configPath} ` +
        `${keyFor(config, ['vocab_size', 'vocabSize'])}) is ${model.vocabSize}`,
    );
}
