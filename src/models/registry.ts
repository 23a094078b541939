// Model construction from an architecture name + preset or from a config object (a parsed config.json). Core code:
// no file I/O here; model directories are read and written by src/io/model-dir.ts.

import type { Device } from '../backend/device.js';
import { ConfigError } from '../errors.js';
import type { DType } from '../tensor/dtype.js';
import type { CausalLM } from './lm.js';
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

export type Arch = 'retnet' | 'transformer';
export const ARCHS: readonly Arch[] = ['retnet', 'transformer'];

export interface ModelOptions {
  backend?: Device;
  dtype?: DType;
  seed?: number;
  /** false: parameters start as zeros, not random draws (the loader fills them from a checkpoint). Default true. */
  init?: boolean;
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

/** The config.json object of a model (the inverse of modelFromConfig): fla's keys for a RetNet in fla's format. */
export function modelConfigJSON(model: CausalLM): Record<string, unknown> {
  if (model instanceof RetNetModel)
    return model.config.format === 'fla' ? flaConfigToJSON(model.config) : retnetConfigToJSON(model.config);
  if (model instanceof TransformerModel) return transformerConfigToJSON(model.config);
  throw new ConfigError(`unsupported model architecture '${model.arch}'`);
}

/** The architecture named by a config object: "arch" or HF's "model_type" if present, else torchscale's RetNet keys. */
function archOf(config: Record<string, unknown>, source: string): Arch {
  const arch =
    config.arch ?? (isFlaConfig(config) || 'decoder_retention_heads' in config ? 'retnet' : config.model_type);
  if (arch === undefined) throw new ConfigError(`${source}: no "arch" field and no torchscale RetNet keys`);
  if (!ARCHS.includes(arch as Arch))
    throw new ConfigError(`${source}: unknown arch ${JSON.stringify(arch)} (expected one of ${ARCHS.join(', ')})`);
  return arch as Arch;
}

/** A parsed config: the architecture and its validated config. */
export type ModelSpec = { arch: 'retnet'; config: RetNetConfig } | { arch: 'transformer'; config: TransformerConfig };

/** Parses and validates a config object (e.g. a parsed config.json) without building anything. */
export function parseModelConfig(config: unknown, source: string): ModelSpec {
  if (config === null || typeof config !== 'object' || Array.isArray(config))
    throw new ConfigError(`${source}: expected a JSON object`);
  switch (archOf(config as Record<string, unknown>, source)) {
    case 'retnet':
      return {
        arch: 'retnet',
        config: isFlaConfig(config as Record<string, unknown>)
          ? flaConfigFromJSON(config as Record<string, unknown>, source)
          : retnetConfigFromJSON(config, source),
      };
    case 'transformer':
      return { arch: 'transformer', config: transformerConfigFromJSON(config, source) };
  }
}

/** Number of scalar parameters the spec's model holds (tied tensors once), computed without building it. */
export function specParameterCount(spec: ModelSpec): number {
  return spec.arch === 'retnet' ? retnetParameterCount(spec.config) : transformerParameterCount(spec.config);
}

export function buildModel(spec: ModelSpec, opts: ModelOptions = {}): CausalLM {
  return spec.arch === 'retnet' ? new RetNetModel(spec.config, opts) : new TransformerModel(spec.config, opts);
}

/** Builds a model from a config object (e.g. a parsed config.json). */
export function modelFromConfig(config: unknown, source: string, opts: ModelOptions = {}): CausalLM {
  return buildModel(parseModelConfig(config, source), opts);
}
