// Model construction and the model directory: `config.json` (the architecture's config, with "arch") +
// `model.safetensors` (parameters under torchscale/PyTorch names) + `tokenizer.json` when there is one.

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import type { Backend } from '../backend/backend.js';
import { getBackend } from '../backend/index.js';
import { ConfigError, FormatError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { type TensorToSave, readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { DType } from '../tensor/dtype.js';
import { type Tokenizer } from '../tokenizer/tokenizer.js';
import { loadTokenizer } from '../tokenizer/load.js';
import type { CausalLM } from './lm.js';
import { type RetNetConfig, retnetConfigFromJSON, retnetConfigToJSON, retnetPreset } from './retnet/config.js';
import { RetNetModel } from './retnet/model.js';
import { retnetAngles } from '../nn/rotary.js';
import {
  type TransformerConfig,
  transformerConfigFromJSON,
  transformerConfigToJSON,
  transformerPreset,
} from './transformer/config.js';
import { TransformerModel } from './transformer/model.js';
import { retentionGammas } from '../backend/retention-math.js';

export type Arch = 'retnet' | 'transformer';
export const ARCHS: readonly Arch[] = ['retnet', 'transformer'];

export interface ModelOptions {
  backend?: Backend;
  dtype?: DType;
  seed?: number;
}

/** A fresh model of a preset. `overrides` may change any config field (vocabSize is required). */
export function createModel(
  arch: Arch,
  preset: string,
  overrides: { vocabSize: number } & Record<string, unknown>,
  opts: ModelOptions = {},
): CausalLM {
  switch (arch) {
    case 'retnet':
      return new RetNetModel(retnetPreset(preset, overrides as Partial<RetNetConfig> & { vocabSize: number }), opts);
    case 'transformer':
      return new TransformerModel(
        transformerPreset(preset, overrides as Partial<TransformerConfig> & { vocabSize: number }),
        opts,
      );
    default:
      throw new ConfigError(`unknown architecture '${String(arch)}' (expected one of ${ARCHS.join(', ')})`);
  }
}

function configJSON(model: CausalLM): Record<string, unknown> {
  if (model instanceof RetNetModel) return retnetConfigToJSON(model.config);
  if (model instanceof TransformerModel) return transformerConfigToJSON(model.config);
  throw new ConfigError(`saveModelDir: unsupported model architecture '${model.arch}'`);
}

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

/** Writes config.json, model.safetensors (atomically) and tokenizer.json (when given) into dir. */
export function saveModelDir(dir: string, model: CausalLM, tokenizer?: Tokenizer): void {
  mkdirSync(dir, { recursive: true });
  const tensors = new Map<string, TensorToSave>();
  for (const [name, t] of model.namedParameters())
    tensors.set(name, { dtype: t.dtype === 'float64' ? 'F64' : 'F32', shape: t.shape, data: t.data() });
  if (model instanceof RetNetModel) for (const [n, t] of torchscaleBuffers(model)) tensors.set(n, t);
  writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt', arch: model.arch });
  if (tokenizer) writeFileAtomic(join(dir, 'tokenizer.json'), tokenizer.toJSON());
  writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(configJSON(model), null, 2)}\n`);
}

function readJSON(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new FormatError(`${path}: cannot read (${(e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new FormatError(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

/** The architecture named by a config object: "arch" if present, else torchscale's RetNet keys. */
function archOf(config: Record<string, unknown>, source: string): Arch {
  const arch = config.arch ?? ('decoder_retention_heads' in config ? 'retnet' : undefined);
  if (arch === undefined) throw new ConfigError(`${source}: no "arch" field and no torchscale RetNet keys`);
  if (!ARCHS.includes(arch as Arch))
    throw new ConfigError(`${source}: unknown arch ${JSON.stringify(arch)} (expected one of ${ARCHS.join(', ')})`);
  return arch as Arch;
}

/** Builds a model from a config object (e.g. a parsed config.json). */
export function modelFromConfig(config: unknown, source: string, opts: ModelOptions = {}): CausalLM {
  if (config === null || typeof config !== 'object' || Array.isArray(config))
    throw new ConfigError(`${source}: expected a JSON object`);
  switch (archOf(config as Record<string, unknown>, source)) {
    case 'retnet':
      return new RetNetModel(retnetConfigFromJSON(config, source), opts);
    case 'transformer':
      return new TransformerModel(transformerConfigFromJSON(config, source), opts);
  }
}

/** Loads a model directory. Tensors of F64/F32/F16/BF16 load into the requested dtype (default float32). */
export function loadModelDir(dir: string, opts: ModelOptions = {}): { model: CausalLM; tokenizer: Tokenizer | null } {
  if (!existsSync(dir)) throw new FormatError(`${dir}: model directory does not exist`);
  const configPath = join(dir, 'config.json');
  const weightsPath = join(dir, 'model.safetensors');
  for (const p of [configPath, weightsPath]) if (!existsSync(p)) throw new FormatError(`${dir}: missing ${p}`);
  const model = modelFromConfig(readJSON(configPath), configPath, { ...opts, backend: opts.backend ?? getBackend() });
  const { tensors } = readSafetensors(weightsPath);
  model.loadValues(tensors, weightsPath, (name) => name.startsWith('retnet_rel_pos.'));
  const tokPath = join(dir, 'tokenizer.json');
  const tokenizer = existsSync(tokPath) ? loadTokenizer(readFileSync(tokPath, 'utf8'), tokPath) : null;
  return { model, tokenizer };
}
