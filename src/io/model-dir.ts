// The model directory (Node only): `config.json` (the architecture's config, with "arch") + `model.safetensors`
// (parameters under torchscale/PyTorch names) + `tokenizer.json` when there is one.

import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { getBackend } from '../backend/index.js';
import { retentionGammas } from '../backend/reference/retention-math.js';
import { FormatError } from '../errors.js';
import type { CausalLM } from '../models/lm.js';
import { type ModelOptions, modelConfigJSON, modelFromConfig } from '../models/registry.js';
import type { WeightFormat } from '../quant/formats.js';
import { quantizeModel } from '../quant/model.js';
import { RetNetModel, rotaryAngles } from '../models/retnet/model.js';
import { loadTokenizer } from '../tokenizer/load.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { writeFileAtomic } from './atomic.js';
import { type TensorToSave, readSafetensors, writeSafetensors } from './safetensors.js';

/** Buffers torchscale keeps in its state_dict (persistent, so `load_state_dict(strict=True)` needs them). */
function torchscaleBuffers(model: RetNetModel): Map<string, TensorToSave> {
  const H = model.config.heads;
  const K = model.config.embedDim / H;
  // torchscale computes both in float32; store them as it would.
  const f32 = (xs: ArrayLike<number>) => Array.from(Float32Array.from(xs));
  return new Map<string, TensorToSave>([
    ['retnet_rel_pos.angle', { dtype: 'F32', shape: [K], data: f32(rotaryAngles(K)) }],
    ['retnet_rel_pos.decay', { dtype: 'F32', shape: [H], data: f32(retentionGammas(H).map(Math.log)) }],
  ]);
}

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

export function readJSON(path: string): unknown {
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

export interface LoadOptions extends ModelOptions {
  /** Converts every Linear's weight to this format after loading (src/quant/model.ts; `--weights`). */
  weights?: WeightFormat;
}

/**
 * Loads a model directory. Tensors of F64/F32/F16/BF16 load into the requested dtype (default float32); with
 * `weights`, every Linear is then quantised to that format.
 */
export function loadModelDir(dir: string, opts: LoadOptions = {}): { model: CausalLM; tokenizer: Tokenizer | null } {
  if (!existsSync(dir)) throw new FormatError(`${dir}: model directory does not exist`);
  const configPath = join(dir, 'config.json');
  const weightsPath = join(dir, 'model.safetensors');
  for (const p of [configPath, weightsPath]) if (!existsSync(p)) throw new FormatError(`${dir}: missing ${p}`);
  const model = modelFromConfig(readJSON(configPath), configPath, { ...opts, backend: opts.backend ?? getBackend() });
  const { tensors } = readSafetensors(weightsPath);
  model.loadValues(tensors, weightsPath, (name) => name.startsWith('retnet_rel_pos.'));
  if (opts.weights) quantizeModel(model, opts.weights);
  const tokPath = join(dir, 'tokenizer.json');
  const tokenizer = existsSync(tokPath) ? loadTokenizer(readFileSync(tokPath, 'utf8'), tokPath) : null;
  return { model, tokenizer };
}
