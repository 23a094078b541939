// Holding a model's weights in a low-precision format: every Linear (projections, FFN, the LM head) gets its weight
// as a tensor of the format's dtype (src/tensor/dtype.ts), so linear() dispatches its product on that dtype and the
// device's memory accounting counts the stored bytes exactly. Embeddings and norms stay as they are; activations and
// the decode state stay float32.

import { Linear } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { kernelsOf } from '../backend/kernels.js';
import type { Tensor } from '../tensor/tensor.js';
import type { DType } from '../tensor/dtype.js';
import { WEIGHT_DTYPES, type WeightFormat } from './formats.js';

/**
 * Puts the weight of every Linear of `model` into `format` and frees the float copy (unless another parameter still
 * uses it: a head tied to the embedding keeps the embedding's table). Weights already in that dtype stay, and with
 * `from`, so do weights of any other dtype than `from`. Returns the number of weights converted.
 */
export function quantizeModel(model: Module, format: WeightFormat, from?: DType): number {
  const dtype = WEIGHT_DTYPES[format];
  const uses = new Map<Tensor, number>();
  for (const [, t] of model.namedParameters()) uses.set(t, (uses.get(t) ?? 0) + 1);
  let converted = 0;
  for (const [name, m] of model.namedModules()) {
    if (!(m instanceof Linear) || m.weight.dtype === dtype || (from !== undefined && m.weight.dtype !== from)) continue;
    const w = m.weight;
    let q: Tensor;
    try {
      q = kernelsOf(w).cast(w, dtype);
    } catch (e) {
      throw new Error(`quantize ${name}.weight to ${format}: ${(e as Error).message}`);
    }
    m.setWeight(q);
    const left = uses.get(w)! - 1;
    uses.set(w, left);
    if (left === 0) w.dispose();
    converted++;
  }
  return converted;
}

/** Bytes of every weight the model holds (each tensor once, in its stored dtype: the device's own accounting). */
export function weightBytes(model: Module): number {
  const seen = new Set<Tensor>();
  let bytes = 0;
  for (const [, t] of model.namedParameters())
    if (!seen.has(t)) {
      seen.add(t);
      bytes += t.storage.byteLength;
    }
  return bytes;
}
