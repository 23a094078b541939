// Neural-network ops: activations, normalisations, softmax, the fused cross-entropy loss and embedding lookup.

import type { ActivationKind } from '../backend/kernels.js';
import { needsGrad, record } from '../autograd/tape.js';
import { DTypeError, ShapeError, formatShape } from '../errors.js';
import type { DType } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';
import { deviceOf, expectDType, expectFloat, expectShape, sameDType } from './check.js';
import { kernels } from '../backend/kernels.js';
import type { Rng } from '../tensor/random.js';

export function activation(kind: ActivationKind, x: Tensor): Tensor {
  const kern = kernels(deviceOf(kind, x), x.dtype);
  expectFloat(kind, 'x', x);
  const y = kern.activation(kind, x);
  if (needsGrad(x))
    record(kind, [x], [y], ([g]) => [kern.activationBackward(kind, x, g!)], {
      saved: [x],
      recompute: () => kern.activation(kind, x),
    });
  return y;
}

/** GELU with the exact erf form (torchscale's F.gelu). */
export const gelu = (x: Tensor): Tensor => activation('gelu', x);
/** SiLU, also called swish: x * sigmoid(x). */
export const silu = (x: Tensor): Tensor => activation('silu', x);
export const relu = (x: Tensor): Tensor => activation('relu', x);

function lastDim(op: string, x: Tensor): number {
  if (x.rank < 1) throw new ShapeError(`${op}: input must have rank >= 1`);
  return x.shape[x.rank - 1]!;
}

/** RMSNorm over the last dim: x / sqrt(mean(x²) + eps) · w. With w = null it is the per-head "group norm". */
export function rmsNorm(x: Tensor, w: Tensor | null, eps: number): Tensor {
  const be = deviceOf('rmsNorm', x, ...(w ? [w] : []));
  const kern = kernels(be, x.dtype);
  expectFloat('rmsNorm', 'x', x);
  const d = lastDim('rmsNorm', x);
  if (w) {
    sameDType('rmsNorm', x, w);
    expectShape('rmsNorm', 'weight', w, [d]);
  }
  const { y, rstd } = kern.rmsNorm(x, w, eps);
  if (needsGrad(x, w))
    record(
      'rmsNorm',
      w ? [x, w] : [x],
      [y],
      ([g]) => {
        const { dx, dw } = kern.rmsNormBackward(x, w, rstd, g!);
        rstd.dispose();
        return w ? [dx, dw] : [dx];
      },
      {
        saved: w ? [x, w] : [x],
        recompute: () => {
          const again = kern.rmsNorm(x, w, eps);
          again.rstd.dispose();
          return again.y;
        },
      },
    );
  else rstd.dispose();
  return y;
}

/**
 * RetNet's gated per-head norm as one op: rmsNorm(x, w, eps) ⊙ silu(gate), x and gate of one shape [..., V] (the
 * norm over the last dim). Its backward needs only x, gate and the row factors: the normalised x and the swish are
 * recomputed there, and the output itself is recomputed when a later backward needs it after its owner released it.
 */
export function gatedRmsNorm(x: Tensor, gate: Tensor, w: Tensor | null, eps: number): Tensor {
  const be = deviceOf('gatedRmsNorm', x, gate, ...(w ? [w] : []));
  const kern = kernels(be, x.dtype);
  expectFloat('gatedRmsNorm', 'x', x);
  sameDType('gatedRmsNorm', x, gate);
  expectShape('gatedRmsNorm', 'gate', gate, x.shape);
  const d = lastDim('gatedRmsNorm', x);
  if (w) {
    sameDType('gatedRmsNorm', x, w);
    expectShape('gatedRmsNorm', 'weight', w, [d]);
  }
  const { y, rstd } = kern.gatedRmsNorm(x, gate, w, eps);
  if (needsGrad(x, gate, w))
    record(
      'gatedRmsNorm',
      w ? [x, gate, w] : [x, gate],
      [y],
      ([g]) => {
        const { dx, dgate, dw } = kern.gatedRmsNormBackward(x, gate, w, rstd, g!);
        rstd.dispose();
        return w ? [dx, dgate, dw] : [dx, dgate];
      },
      {
        saved: w ? [x, gate, w] : [x, gate],
        recompute: () => {
          const again = kern.gatedRmsNorm(x, gate, w, eps);
          again.rstd.dispose();
          return again.y;
        },
      },
    );
  else rstd.dispose();
  return y;
}

/** Softmax over the last dim. */
export function softmax(x: Tensor): Tensor {
  const be = deviceOf('softmax', x);
  const kern = kernels(be, x.dtype);
  expectFloat('softmax', 'x', x);
  lastDim('softmax', x);
  const y = kern.softmax(x);
  if (needsGrad(x)) record('softmax', [x], [y], ([g]) => [kern.softmaxBackward(y, g!)], { saved: [y] });
  return y;
}

export interface CrossEntropyOptions {
  /** Targets equal to this are skipped (PyTorch's default, -100). */
  ignoreIndex?: number;
  /**
   * How many targets are not ignoreIndex, when the caller counts them on its host copy of the batch (the trainer
   * does); otherwise they are read back from the device and counted here.
   */
  count?: number;
}

/** Targets that are not ignoreIndex. */
export function countTargets(targets: ArrayLike<number>, ignoreIndex = -100): number {
  let count = 0;
  for (let i = 0; i < targets.length; i++) if (targets[i] !== ignoreIndex) count++;
  return count;
}

/**
 * Mean cross-entropy of logits [..., V] against int32 targets [...], skipping ignored targets, as one fused op
 * (log-softmax, gather and mean; the softmax is never stored). Returns a tensor of shape [].
 */
export function crossEntropy(logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const ignoreIndex = opts.ignoreIndex ?? -100;
  const be = deviceOf('crossEntropy', logits, targets);
  const kern = kernels(be, logits.dtype);
  expectFloat('crossEntropy', 'logits', logits);
  expectDType('crossEntropy', 'targets', targets, 'int32');
  const V = lastDim('crossEntropy', logits);
  expectShape('crossEntropy', 'targets', targets, logits.shape.slice(0, -1));
  const N = targets.size;
  const logits2 = be.view(logits, [N, V]);
  const targets1 = be.view(targets, [N]);
  const { loss, lse } = kern.crossEntropy(logits2, targets1, ignoreIndex);
  const count = opts.count ?? countTargets(be.read(targets1), ignoreIndex);
  if (!Number.isInteger(count) || count < 0 || count > N)
    throw new ShapeError(`crossEntropy: count ${count} of non-ignored targets is not in [0, ${N}]`);
  const total = kern.sumToShape(loss, []);
  loss.dispose();
  const y = kern.scale(total, count > 0 ? 1 / count : 0);
  total.dispose();
  if (needsGrad(logits))
    record(
      'crossEntropy',
      [logits],
      [y],
      ([g]) => {
        // g: [] stays on the device; each row's gradient is g / count (the kernel zeroes the ignored rows).
        const perRow = be.fromData(new Array<number>(N).fill(count > 0 ? 1 / count : 0), [N], logits.dtype);
        const gRows = kern.binary('mul', perRow, g!);
        perRow.dispose();
        const d2 = kern.crossEntropyBackward(logits2, targets1, lse, gRows, ignoreIndex);
        gRows.dispose();
        const dx = be.view(d2, logits.shape);
        d2.dispose();
        return [dx];
      },
      { saved: [logits2, targets1] },
    );
  else {
    logits2.dispose();
    targets1.dispose();
    lse.dispose();
  }
  return y;
}

/**
 * Rows of table [V, D] picked by int32 ids [...] -> [..., D], in `dtype` (default the table's: a bfloat16 table under
 * a float32 model gives float32 rows, converted after the lookup; no gradient then).
 */
export function embedding(table: Tensor, ids: Tensor, dtype: DType = table.dtype): Tensor {
  const be = deviceOf('embedding', table, ids);
  const kern = kernels(be, table.dtype);
  expectFloat('embedding', 'table', table);
  expectDType('embedding', 'ids', ids, 'int32');
  if (table.rank !== 2) throw new ShapeError(`embedding: table must be [V, D], got ${formatShape(table.shape)}`);
  if (dtype !== table.dtype) {
    if (needsGrad(table))
      throw new DTypeError(`embedding: a ${table.dtype} table read as ${dtype} takes no gradient (train in ${dtype})`);
    const rows = kern.embedding(table, ids);
    const y = kern.cast(rows, dtype);
    rows.dispose();
    return y;
  }
  const y = kern.embedding(table, ids);
  if (needsGrad(table))
    record('embedding', [table], [y], ([g]) => [kern.embeddingBackward(g!, ids, table.shape[0]!)], { saved: [ids] });
  return y;
}

/**
 * Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1−p). With `perRow` the same
 * decision covers whole rows of the leading dim (stochastic depth / drop path). Identity when p = 0.
 */
export function dropout(x: Tensor, p: number, rng: Rng, perRow = false): Tensor {
  const be = deviceOf('dropout', x);
  const kern = kernels(be, x.dtype);
  expectFloat('dropout', 'x', x);
  if (!(p >= 0 && p < 1)) throw new ShapeError(`dropout: probability ${p} is not in [0, 1)`);
  // One 32-bit seed per mask from the caller's generator (host); the seeded kernel rebuilds the mask in backward.
  const rowSize = perRow && x.rank > 0 ? Math.max(1, x.size / (x.shape[0] || 1)) : 1;
  const seed = rng.nextU32();
  const y = kern.dropout(x, p, seed, rowSize);
  if (needsGrad(x))
    record('dropout', [x], [y], ([g]) => [kernels(be, g!.dtype).dropout(g!, p, seed, rowSize)], { saved: [] });
  return y;
}
