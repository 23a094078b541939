// Attention ops (the Transformer baseline): causal multi-head softmax attention over whole sequences, in the naive
// or the FlashAttention algorithm, and one decoding step against a KV cache.

import type { AttentionAlgorithm } from '../backend/kernels.js';
import { needsGrad, record } from '../autograd/tape.js';
import { ShapeError, formatShape } from '../errors.js';
import type { Tensor } from '../tensor/tensor.js';
import { deviceOf, expectFloat, expectShape, sameDType } from './check.js';
import { kernels } from '../backend/kernels.js';

export interface AttentionOptions {
  /** 'naive' keeps the T×T probabilities for backward; 'flash' keeps only the row log-sum-exp (linear memory). */
  algorithm: AttentionAlgorithm;
}

/**
 * o_i = Σ_{j≤i} softmax_j(q_i·k_j / sqrt(K)) v_j per head. q, k: [B, T, H, K] (already rotated), v: [B, T, H, V].
 * Returns o: [B, T, H, V].
 */
export function causalAttention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): Tensor {
  const be = deviceOf('causalAttention', q, k, v);
  const kern = kernels(be, q.dtype);
  expectFloat('causalAttention', 'q', q);
  sameDType('causalAttention', q, k);
  sameDType('causalAttention', q, v);
  if (q.rank !== 4 || q.shape[3] === 0)
    throw new ShapeError(`causalAttention: q must be [B, T, H, K] with K ≥ 1, got ${formatShape(q.shape)}`);
  const [B, T, H] = q.shape as [number, number, number];
  expectShape('causalAttention', 'k', k, q.shape);
  if (v.rank !== 4 || v.shape[0] !== B || v.shape[1] !== T || v.shape[2] !== H)
    throw new ShapeError(`causalAttention: v must be [${B}, ${T}, ${H}, V], got ${formatShape(v.shape)}`);
  if (opts.algorithm !== 'naive' && opts.algorithm !== 'flash')
    throw new ShapeError(`causalAttention: algorithm must be 'naive' or 'flash', got '${String(opts.algorithm)}'`);
  const { o, stats } = kern.attentionForward(opts.algorithm, q, k, v);
  if (needsGrad(q, k, v))
    record(
      `attention.${opts.algorithm}`,
      [q, k, v],
      [o],
      ([g]) => {
        const { dq, dk, dv } = kern.attentionBackward(opts.algorithm, q, k, v, o, stats, g!);
        stats.dispose();
        return [dq, dk, dv];
      },
      { saved: [q, k, v, o] },
    );
  else stats.dispose();
  return o;
}

/**
 * One decoding step (inference only): q: [B, H, K] attends to the first lengths[b] positions of the caches
 * kCache: [B, H, C, K] and vCache: [B, H, C, V] (the current token's k, v already written). Returns [B, H, V].
 */
export function attentionDecode(q: Tensor, kCache: Tensor, vCache: Tensor, lengths: readonly number[]): Tensor {
  const be = deviceOf('attentionDecode', q, kCache, vCache);
  const kern = kernels(be, q.dtype);
  expectFloat('attentionDecode', 'q', q);
  sameDType('attentionDecode', q, kCache);
  sameDType('attentionDecode', q, vCache);
  if (q.rank !== 3 || q.shape[2] === 0)
    throw new ShapeError(`attentionDecode: q must be [B, H, K] with K ≥ 1, got ${formatShape(q.shape)}`);
  const [B, H, K] = q.shape as [number, number, number];
  if (kCache.rank !== 4 || kCache.shape[0] !== B || kCache.shape[1] !== H || kCache.shape[3] !== K)
    throw new ShapeError(`attentionDecode: kCache must be [${B}, ${H}, C, ${K}], got ${formatShape(kCache.shape)}`);
  const C = kCache.shape[2]!;
  if (vCache.rank !== 4 || vCache.shape[0] !== B || vCache.shape[1] !== H || vCache.shape[2] !== C)
    throw new ShapeError(`attentionDecode: vCache must be [${B}, ${H}, ${C}, V], got ${formatShape(vCache.shape)}`);
  if (lengths.length !== B) throw new ShapeError(`attentionDecode: ${lengths.length} lengths for a batch of ${B}`);
  lengths.forEach((n, b) => {
    if (!Number.isInteger(n) || n < 1 || n > C)
      throw new ShapeError(`attentionDecode: length ${n} of row ${b} is outside [1, ${C}] (the cache capacity)`);
  });
  return kern.attentionDecode(q, kCache, vCache, lengths);
}
