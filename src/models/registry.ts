// Model construction from an architecture name + preset or from a config object (a parsed config.json). Core code:
// no file I/O here; model directories are read and written by src/io/model-dir.ts.

import type { Device } from '../backend/device.js';
import { ConfigError } from '../errors.js';
import type { DType } from '../tensor/dtype.js';
import type { CausalLM } from './lm.js';
import { PRESETS } from './presets.js';
import {
  type RetNetConfig,
  retnetConfigFromJSON,
  retnetConfigToJSON,
  retnetParameterCount,
  retnetPreset,
} from './retnet/config.js';
import { RetNetModel } from './retnet/model.js';
import { flaConfigFromJSON, flaConfigToJSON, isFlaConfig } from './retnet/fla.js';
import {
  type TransformerConfig,
  transformerConfigFromJSON,
  transformerConfigToJSON,
  transformerParameterCount,
  transformerPreset,
} from './transformer/config.js';
import { TransformerModel } from './transformer/model.js';

export interface ModelOptions {
  backend?: Device;
  dtype?: DType;
  seed?: number;
  /** false: parameters start as zeros, not random draws (the loader fills them from a checkpoint). Default true. */
  init?: boolean;
}

/** What the project knows of one architecture: its config's on-disk form, its presets, and how to build it. */
export interface ArchEntry<C> {
  /** A config from a config.json object (`source` names the file in errors). */
  fromJSON(obj: unknown, source: string): C;
  toJSON(config: C): Record<string, unknown>;
  presets: readonly string[];
  /** A validated config of a preset with `overrides` (vocabSize required). */
  preset(name: string, overrides: { vocabSize: number } & Record<string, unknown>): C;
  build(config: C, opts: ModelOptions): CausalLM;
  /** The model's config when the model is of this architecture, else null. */
  configOf(model: CausalLM): C | null;
  /** Exact parameter count of a config (tied tensors once), without building the model. */
  parameterCount(config: C): number;
  /** Whether a config object without "arch" is this architecture's. */
  recognises(obj: Record<string, unknown>): boolean;
}

const retnet: ArchEntry<RetNetConfig> = {
  // Two on-disk forms: torchscale's keys (ours) and fla's (HF's retnet config.json).
  fromJSON: (obj, source) =>
    isFlaConfig(obj as Record<string, unknown>)
      ? flaConfigFromJSON(obj as Record<string, unknown>, source)
      : retnetConfigFromJSON(obj, source),
  toJSON: (c) => (c.format === 'fla' ? flaConfigToJSON(c) : retnetConfigToJSON(c)),
  presets: Object.keys(PRESETS),
  preset: (name, overrides) => retnetPreset(name, overrides as Partial<RetNetConfig> & { vocabSize: number }),
  build: (c, opts) => new RetNetModel(c, opts),
  configOf: (m) => (m instanceof RetNetModel ? m.config : null),
  parameterCount: retnetParameterCount,
  // torchscale's own config.json has no "arch"; fla's has model_type "retnet".
  recognises: (obj) => isFlaConfig(obj) || 'decoder_retention_heads' in obj,
};

const transformer: ArchEntry<TransformerConfig> = {
  fromJSON: transformerConfigFromJSON,
  toJSON: transformerConfigToJSON,
  presets: Object.keys(PRESETS), // parameter-matched to the RetNet shapes
  preset: (name, overrides) => transformerPreset(name, overrides as Partial<TransformerConfig> & { vocabSize: number }),
  build: (c, opts) => new TransformerModel(c, opts),
  configOf: (m) => (m instanceof TransformerModel ? m.config : null),
  parameterCount: transformerParameterCount,
  recognises: () => false,
};

/** The architectures by name (the "arch" of a config.json). */
export const ARCH_TABLE = { retnet, transformer } as const;
export type Arch = keyof typeof ARCH_TABLE;
export const ARCHS = Object.keys(ARCH_TABLE) as Arch[];

/** The entry of an architecture name; a ConfigError naming `source` for an unknown one. */
export function archEntry(arch: unknown, source: string): ArchEntry<unknown> {
  if (typeof arch !== 'string' || !Object.hasOwn(ARCH_TABLE, arch))
    throw new ConfigError(`${source}: unknown arch ${JSON.stringify(arch)} (expected one of ${ARCHS.join(', ')})`);
  return ARCH_TABLE[arch as Arch] as ArchEntry<unknown>;
}

/** A fresh model of a preset. `overrides` may change any config field (vocabSize is required). */
export function createModel<A extends Arch>(
  arch: A,
  preset: string,
  overrides: { vocabSize: number } & Record<string, unknown>,
  opts: ModelOptions = {},
): ArchModels[A] {
  const entry = archEntry(arch, 'createModel');
  return entry.build(entry.preset(preset, overrides), opts) as ArchModels[A];
}

/** The model class of each architecture: `createModel('retnet', …)` is a RetNetModel (forward takes its options). */
export interface ArchModels {
  retnet: RetNetModel;
  transformer: TransformerModel;
}

/** The entry and config of a model. */
function modelEntry(model: CausalLM): { entry: ArchEntry<unknown>; config: unknown } {
  const entry = archEntry(model.arch, 'model');
  const config = entry.configOf(model);
  if (config === null) throw new ConfigError(`unsupported model architecture '${model.arch}'`);
  return { entry, config };
}

/** The config.json object of a model (the inverse of modelFromConfig): fla's keys for a RetNet in fla's format. */
export function modelConfigJSON(model: CausalLM): Record<string, unknown> {
  const { entry, config } = modelEntry(model);
  return entry.toJSON(config);
}

/** The architecture of a config object: its "arch", else the one that recognises its keys (torchscale's or fla's RetNet), else HF's "model_type". */
function archOf(config: Record<string, unknown>, source: string): Arch {
  const named = config.arch ?? ARCHS.find((a) => ARCH_TABLE[a].recognises(config)) ?? config.model_type; // HF's name
  if (named === undefined) throw new ConfigError(`${source}: no "arch" field and no torchscale RetNet keys`);
  archEntry(named, source);
  return named as Arch;
}

/** A parsed config: the architecture and its validated config. */
export type ModelSpec = { arch: 'retnet'; config: RetNetConfig } | { arch: 'transformer'; config: TransformerConfig };

/** Parses and validates a config object (e.g. a parsed config.json) without building anything. */
export function parseModelConfig(config: unknown, source: string): ModelSpec {
  if (config === null || typeof config !== 'object' || Array.isArray(config))
    throw new ConfigError(`${source}: expected a JSON object`);
  const arch = archOf(config as Record<string, unknown>, source);
  return { arch, config: archEntry(arch, source).fromJSON(config, source) } as ModelSpec;
}

/** Number of scalar parameters the spec's model holds (tied tensors once), computed without building it. */
export function specParameterCount(spec: ModelSpec): number {
  return archEntry(spec.arch, 'model').parameterCount(spec.config);
}

export function buildModel(spec: ModelSpec, opts: ModelOptions = {}): CausalLM {
  return archEntry(spec.arch, 'model').build(spec.config, opts);
}

/** Builds a model from a config object (e.g. a parsed config.json). */
export function modelFromConfig(config: unknown, source: string, opts: ModelOptions = {}): CausalLM {
  return buildModel(parseModelConfig(config, source), opts);
}
