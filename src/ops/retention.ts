// Retention ops (RetNet's multi-scale retention core). The normalisers of each form are
// detached (as in torchscale), so the gradient is that of the un-normalised retention scaled by the saved row factors.

import type { RetentionForm } from '../backend/backend.js';
import { needsGrad, record } from '../autograd/tape.js';
import { ShapeError, formatShape } from '../errors.js';
import type { Tensor } from '../tensor/tensor.js';
import { backendOf, expectFloat, expectShape, sameDType } from './check.js';

export interface RetentionOptions {
  form: RetentionForm;
  /** Chunk size of the chunkwise form (any positive size; it need not divide T). */
  chunkSize?: number;
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
  const be = backendOf('retention', q, k, v);
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
  const { o, r } = be.retentionForward(opts.form, q, k, v, gammas, chunkSize);
  if (needsGrad(q, k, v))
    record(`retention.${opts.form}`, [q, k, v], [o], ([g]) => {
      const { dq, dk, dv } = be.retentionBackward(opts.form, q, k, v, gammas, r, g!, chunkSize);
      return [dq, dk, dv];
    });
  else r.dispose();
  return o;
}

/** One recurrent retention step (inference only; updates state [B, H, K, V] and scale [B, H] in place). */
export function retentionStep(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  state: Tensor,
  scale: Tensor,
  gammas: readonly number[],
): Tensor {
  const be = backendOf('retentionStep', q, k, v, state, scale);
  if (q.rank !== 3) throw new ShapeError(`retentionStep: q must be [B, H, K], got ${formatShape(q.shape)}`);
  const [B, H, K] = q.shape as [number, number, number];
  expectShape('retentionStep', 'k', k, q.shape);
  if (v.rank !== 3 || v.shape[0] !== B || v.shape[1] !== H)
    throw new ShapeError(`retentionStep: v must be [${B}, ${H}, V], got ${formatShape(v.shape)}`);
  expectShape('retentionStep', 'state', state, [B, H, K, v.shape[2]!]);
  expectShape('retentionStep', 'scale', scale, [B, H]);
  checkGammas('retentionStep', gammas, H);
  return be.retentionStep(q, k, v, state, scale, gammas);
}

/** The recurrent state after k: [B, T, H, K], v: [B, T, H, V] (inference only). */
export function retentionState(k: Tensor, v: Tensor, gammas: readonly number[]): { state: Tensor; scale: Tensor } {
  const be = backendOf('retentionState', k, v);
  if (k.rank !== 4 || v.rank !== 4 || k.shape.slice(0, 3).some((d, i) => d !== v.shape[i]))
    throw new ShapeError(`retentionState: k ${formatShape(k.shape)} and v ${formatShape(v.shape)} do not match`);
  checkGammas('retentionState', gammas, k.shape[2]!);
  return be.retentionState(k, v, gammas);
}
