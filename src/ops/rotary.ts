// Rotary positions (torchscale's theta_shift, spec §4): rotation of interleaved pairs of each head by per-position
// angles. Used by RetNet (xPos-free rotation of q and k) and the Transformer baseline (RoPE).

import { type RotaryPairs, kernels } from '../backend/kernels.js';
import { needsGrad, record, recomputable } from '../autograd/tape.js';
import { ShapeError, formatShape } from '../errors.js';
import type { Tensor } from '../tensor/tensor.js';
import { deviceOf, expectFloat, expectShape, sameDType } from './check.js';

/**
 * Rotates pairs of x: [B, T, H, K] by per-position angles: cos, sin are [T, K] (shared by the batch) or [B, T, K] (per
 * row, for decoding rows at different positions). `pairs`: interleaved (x[2j], x[2j+1]) as torchscale's theta_shift,
 * or halves (x[i], x[i+K/2]) as fla's rotate_half; the tables hold each pair's angle at its first element's index.
 */
export function rotary(x: Tensor, cos: Tensor, sin: Tensor, pairs: RotaryPairs = 'interleaved'): Tensor {
  const kern = kernels(deviceOf('rotary', x, cos, sin), x.dtype);
  expectFloat('rotary', 'x', x);
  sameDType('rotary', x, cos);
  if (x.rank !== 4 || x.shape[3]! % 2 !== 0)
    throw new ShapeError(`rotary: x must be [B, T, H, K] with even K, got ${formatShape(x.shape)}`);
  const [B, T, , K] = x.shape as [number, number, number, number];
  const table = cos.rank === 3 ? [B, T, K] : [T, K];
  expectShape('rotary', 'cos', cos, table);
  expectShape('rotary', 'sin', sin, table);
  const y = kern.rotary(x, cos, sin, pairs, false);
  // The backward reads only the tables; a rotation of a recomputable tensor is recomputable too (as reshape's view).
  if (needsGrad(x))
    record('rotary', [x], [y], ([g]) => [kern.rotary(g!, cos, sin, pairs, true)], {
      saved: [cos, sin],
      ...(recomputable(x) ? { recomputeFrom: [x], recompute: () => kern.rotary(x, cos, sin, pairs, false) } : {}),
    });
  return y;
}
