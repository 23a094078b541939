// Model directories (Node only). Two layouts:
// - ours / torchscale's: `config.json` (the architecture's config, with "arch", or torchscale's RetNet keys) +
//   `model.safetensors` (torchscale/PyTorch names) + `tokenizer.json` when there is one;
// - Hugging Face's (recognised by config.json's `model_type`, e.g. fla's RetNet): `config.json` with `torch_dtype` or
//   `dtype`, `model.safetensors` or shards behind `model.safetensors.index.json`, `tokenizer.json`,
//   `tokenizer_config.json`, `special_tokens_map.json`, `generation_config.json`.
//
// Loading checks before it allocates (src/io/model-load.ts, shared with the browser's loader): the config is parsed
// and validated, the checkpoint headers are read, and the parameter count the config implies must equal what the
// checkpoint holds, so a config that contradicts the weights (decoder_layers 65536 over a 2-layer file) fails in
// milliseconds. Then the model is allocated without a random initialisation and filled tensor by tensor from the
// files (no whole-file buffer), each tensor checked for its shape and for non-finite values.

import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { getBackend } from '../backend/index.js';
import { retentionGammas } from '../backend/reference/retention-math.js';
import { FormatError } from '../errors.js';
import type { CausalLM } from '../models/lm.js';
import { modelConfigJSON } from '../models/registry.js';
import { RetNetModel } from '../models/retnet/model.js';
import { retnetAngles } from '../nn/rotary.js';
import { weightFormatOf } from '../quant/formats.js';
import { type QuantPart, isQuantized, quantParts, toSafetensorsDType } from '../tensor/dtype.js';
import type { TokenizerContext } from '../tokenizer/hf.js';
import { loadTokenizer } from '../tokenizer/load.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { writeFileAtomic } from './atomic.js';
import {
  type GenerationDefaults,
  type LoadOptions,
  QUANTIZED_KEY,
  buildCheckpointModel,
  chatTemplateOf,
  checkTokenizerFits,
  checkpointSpec,
  generationDefaults,
  parseJSON,
} from './model-load.js';
import { type TensorToSave, openWeights, writeSafetensors } from './safetensors.js';

export { type GenerationDefaults, type LoadOptions, QUANTIZED_KEY } from './model-load.js';

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

/**
 * Writes config.json, model.safetensors (atomically) and tokenizer.json (when given) into dir. Every parameter is
 * written as held: float32/float64, bfloat16/float16 as their bits, quantized weights as their scales and codes (named
 * in the metadata under QUANTIZED_KEY), so the directory loads again without the float checkpoint.
 */
export function saveModelDir(dir: string, model: CausalLM, tokenizer?: Tokenizer): void {
  mkdirSync(dir, { recursive: true });
  const tensors = new Map<string, TensorToSave>();
  const quantized: Record<string, string> = {};
  for (const [name, t] of model.namedParameters()) {
    if (isQuantized(t.dtype)) {
      const bytes = t.device.readStorage(t) as Uint8Array;
      for (const part of quantParts(t.dtype, t.shape))
        tensors.set(`${name}.${part.name}`, {
          dtype: part.dtype,
          shape: part.shape,
          data:
            part.dtype === 'F32' || part.dtype === 'F16'
              ? partArray(bytes, part)
              : bytes.subarray(part.offset, part.offset + part.bytes),
        });
      quantized[name] = weightFormatOf(t.dtype)!;
      continue;
    }
    const st = toSafetensorsDType(t.dtype) as TensorToSave['dtype'];
    const bits = t.dtype === 'bfloat16' || t.dtype === 'float16';
    tensors.set(name, { dtype: st, shape: t.shape, data: bits ? t.device.readStorage(t) : t.data() });
  }
  if (model instanceof RetNetModel && model.config.format === 'torchscale')
    for (const [n, t] of torchscaleBuffers(model)) tensors.set(n, t);
  const metadata: Record<string, string> = { format: 'pt', arch: model.arch };
  if (Object.keys(quantized).length > 0) metadata[QUANTIZED_KEY] = JSON.stringify(quantized);
  writeSafetensors(join(dir, 'model.safetensors'), tensors, metadata);
  if (tokenizer) writeFileAtomic(join(dir, 'tokenizer.json'), tokenizer.toJSON());
  writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(modelConfigJSON(model), null, 2)}\n`);
}

/** A part of a quantized tensor's bytes as its float array (float32 values, or float16 bits). */
function partArray(bytes: Uint8Array, part: QuantPart): Float32Array | Uint16Array {
  const copy = bytes.slice(part.offset, part.offset + part.bytes);
  return part.dtype === 'F32' ? new Float32Array(copy.buffer) : new Uint16Array(copy.buffer);
}

/** A JSON file; numbers that overflow to ±Infinity (1e400) are rejected with their key path. */
export function readJSON(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new FormatError(`${path}: cannot read (${(e as Error).message})`);
  }
  return parseJSON(text, path);
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

/**
 * Loads a model directory (either layout; see the top of this file). Tensors of F64/F32/F16/BF16 load into the
 * requested dtype (default float32). Everything is checked against everything else before the model exists.
 */
export function loadModelDir(dir: string, opts: LoadOptions = {}): LoadedModelDir {
  if (!existsSync(dir)) throw new FormatError(`${dir}: model directory does not exist`);
  if (!statSync(dir).isDirectory()) throw new FormatError(`${dir}: not a directory (expected a model directory)`);
  const configPath = join(dir, 'config.json');
  if (!existsSync(configPath)) throw new FormatError(`${dir}: missing ${configPath}`);
  const checked = checkpointSpec(readJSON(configPath), configPath);
  const { config } = checked;
  const weights = openWeights(dir);
  try {
    const model = buildCheckpointModel(checked, configPath, weights, {
      ...opts,
      backend: opts.backend ?? getBackend(),
    });
    try {
      const tokenizerConfig = readOptionalJSON(join(dir, 'tokenizer_config.json'));
      const specialTokensMap = readOptionalJSON(join(dir, 'special_tokens_map.json'));
      const tokPath = join(dir, 'tokenizer.json');
      let tokenizer: Tokenizer | null = null;
      if (existsSync(tokPath)) {
        tokenizer = readTokenizerFile(tokPath, { tokenizerConfig, specialTokensMap });
        checkTokenizerFits(tokenizer, model, tokPath, configPath, config);
      }
      const genPath = join(dir, 'generation_config.json');
      return {
        model,
        tokenizer,
        config,
        modelType: checked.modelType,
        storedDType: checked.storedDType,
        generation: generationDefaults(config, readOptionalJSON(genPath), configPath, genPath),
        chatTemplate: chatTemplateOf(tokenizerConfig?.chat_template, join(dir, 'tokenizer_config.json')),
      };
    } catch (e) {
      model.dispose();
      throw e;
    }
  } finally {
    weights.close();
  }
}
