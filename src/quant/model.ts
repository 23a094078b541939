// Quantising a model at load: every Linear (projections, FFN, the LM head) gets its weight in a low-precision format;
// embeddings and norms stay as they are, activations and the decode state stay float32.

import { Linear } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import type { Tensor } from '../tensor/tensor.js';
import { type WeightFormat, quantize } from './formats.js';
import { LowpWeight } from './linear.js';

/**
 * Replaces the float weight of every Linear of `model` by one in `format` and frees the float copy (unless another
 * parameter still uses it: a head tied to the embedding keeps the embedding's table). Returns the number of weights
 * converted.
 */
export function quantizeModel(model: Module, format: WeightFormat): number {
  const uses = new Map<Tensor, number>();
  for (const [, t] of model.namedParameters()) uses.set(t, (uses.get(t) ?? 0) + 1);
  let converted = 0;
  for (const [name, m] of model.namedModules()) {
    if (!(m instanceof Linear) || m.lowp) continue;
    const w = m.weight;
    const [N, K] = w.shape as [number, number];
    m.useLowp(new LowpWeight(w.device, quantize(format, w.device.read(w), N, K, `${name}.weight`)));
    const left = uses.get(w)! - 1;
    uses.set(w, left);
    if (left === 0) w.dispose();
    converted++;
  }
  return converted;
}

/** Bytes of every weight the model holds: float parameters (each tensor once) and low-precision weights. */
export function weightBytes(model: Module): number {
  const seen = new Set<Tensor>();
  let bytes = 0;
  for (const [, t] of model.namedParameters())
    if (!seen.has(t)) {
      seen.add(t);
      bytes += t.storage.byteLength;
    }
  for (const [, m] of model.namedModules()) if (m instanceof Linear && m.lowp) bytes += m.lowp.bytes;
  return bytes;
}
