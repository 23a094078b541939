// Retention ops (RetNet's multi-scale retention core and its rotary positions). The normalisers of each form are
// detached (as in torchscale), so the gradient is that of the un-normalised retention scaled by the saved row factors.

import type { RetentionForm, RotaryPairs } from '../backend/kernels.js';
import { needsGrad, record } from '../autograd/tape.js';
import { ShapeError, formatShape } from '../errors.js';
import type { Tensor } from '../tensor/tensor.js';
import { deviceOf, expectFloat, expectShape, sameDType } from './check.js';
import { kernels } from '../backend/kernels.js';

export interface RetentionOptions {
  form: RetentionForm;
  /** Chunk size of the chunkwise form (any positive size; it need not divide T). */
  chunkSize?: number;
  /** torchscale's normalisers (default true); false: fla's plain retention, the same function in every form. */
  normalize?: boolean;
}

function checkGammas(op: string, gammas: readonly number[], H: number): void {
  if (gammas.length !== H) throw new ShapeError(`${op}: ${gammas.length} decay values for ${H} heads`);
  for (const g of gammas) if (!(g > 0 && g < 1)) throw new ShapeError(`${op}: decay ${g} is not in (0, 1)`);
}

/**
 * Multi-scale retention in the parallel (paper Eq. 5) or chunkwise (Eq. 7) form, with torchscale's normalisations.
 * q, k: [B, T, H, K] (rotated; k scaled by K^-0.5), v: [B, T, H, V], gammas: [H]. Returns o: [B, T, H, V].
 */
export function retention(q: Tensor, k: Tensor, v: Tensor, gammas: readonly number[], opts: RetentionOptions): Tensor {
  const be = deviceOf('retention', q, k, v);
  const kern = kernels(be, q.dtype);
  expectFloat('retention', 'q', q);
  sameDType('retention', q, k);
  sameDType('retention', q, v);
  if (q.rank !== 4) throw new ShapeError(`retention: q must be [B, T, H, K], got ${formatShape(q.shape)}`);
  const [B, T, H] = q.shape as [number, number, number];
  expectShape('retention', 'k', k, q.shape);
  if (v.rank !== 4 || v.shape[0] !== B || v.shape[1] !== T || v.shape[2] !== H)
    throw new ShapeError(`retention: v must be [${B}, ${T}, ${H}, V], got ${formatShape(v.shape)}`);
  checkGammas('retention', gammas, H);
  const chunkSize = opts.chunkSize ?? 0;
  if (opts.form === 'chunkwise' && (!Number.isInteger(chunkSize) || chunkSize < 1))
    throw new ShapeError(`retention: the chunkwise form needs a positive integer chunkSize, got ${opts.chunkSize}`);
  const { o, r } = kern.retentionForward(opts.form, q, k, v, gammas, chunkSize, opts.normalize ?? true);
  if (needsGrad(q, k, v))
    record(`retention.${opts.form}`, [q, k, v], [o], ([g]) => {
      const { dq, dk, dv } = kern.retentionBackward(opts.form, q, k, v, gammas, r, g!, chunkSize);
      return [dq, dk, dv];
    });
  else r.dispose();
  return o;
}

/**
 * Rotates pairs of x: [B, T, H, K] by per-position angles: cos, sin are [T, K] (shared by the batch) or [B, T, K] (per
 * row, for decoding rows at different positions). `pairs`: interleaved (x[2j], x[2j+1]) as torchscale's theta_shift,
 * or halves (x[i], x[i+K/2]) as fla's rotate_half; the tables hold each pair's angle at its first element's index.
 */
export function rotary(x: Tensor, cos: Tensor, sin: Tensor, pairs: RotaryPairs = 'interleaved'): Tensor {
  const be = deviceOf('rotary', x, cos, sin);
  const kern = kernels(be, x.dtype);
  expectFloat('rotary', 'x', x);
  sameDType('rotary', x, cos);
  if (x.rank !== 4 || x.shape[3]! % 2 !== 0)
    throw new ShapeError(`rotary: x must be [B, T, H, K] with even K, got ${formatShape(x.shape)}`);
  const [B, T, , K] = x.shape as [number, number, number, number];
  const table = cos.rank === 3 ? [B, T, K] : [T, K];
  expectShape('rotary', 'cos', cos, table);
  expectShape('rotary', 'sin', sin, table);
  const y = kern.rotary(x, cos, sin, pairs, false);
  if (needsGrad(x)) record('rotary', [x], [y], ([g]) => [kern.rotary(g!, cos, sin, pairs, true)]);
  return y;
}

/**
 * One recurrent retention step (inference only; updates state [B, H, K, V] and scale [B, H] in place); `normalize`
 * false: fla's S' = γS + kᵀv.
 */
export function retentionStep(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  state: Tensor,
  scale: Tensor,
  gammas: readonly number[],
  normalize = true,
): Tensor {
  const be = deviceOf('retentionStep', q, k, v, state, scale);
  const kern = kernels(be, q.dtype);
  if (q.rank !== 3) throw new ShapeError(`retentionStep: q must be [B, H, K], got ${formatShape(q.shape)}`);
  const [B, H, K] = q.shape as [number, number, number];
  expectShape('retentionStep', 'k', k, q.shape);
  if (v.rank !== 3 || v.shape[0] !== B || v.shape[1] !== H)
    throw new ShapeError(`retentionStep: v must be [${B}, ${H}, V], got ${formatShape(v.shape)}`);
  expectShape('retentionStep', 'state', state, [B, H, K, v.shape[2]!]);
  expectShape('retentionStep', 'scale', scale, [B, H]);
  checkGammas('retentionStep', gammas, H);
  return kern.retentionStep(q, k, v, state, scale, gammas, normalize);
}

/** The recurrent state after k: [B, T, H, K], v: [B, T, H, V] (inference only; `normalize` as retentionStep). */
export function retentionState(
  k: Tensor,
  v: Tensor,
  gammas: readonly number[],
  normalize = true,
): { state: Tensor; scale: Tensor } {
  const be = deviceOf('retentionState', k, v);
  const kern = kernels(be, k.dtype);
  if (k.rank !== 4 || v.rank !== 4 || k.shape.slice(0, 3).some((d, i) => d !== v.shape[i]))
    throw new ShapeError(`retentionState: k ${formatShape(k.shape)} and v ${formatShape(v.shape)} do not match`);
  checkGammas('retentionState', gammas, k.shape[2]!);
  return kern.retentionState(k, v, gammas, normalize);
}
