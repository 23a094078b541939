// Layout ops: reshape (a view), permute/transpose (a copy), slice and concat along one axis (block copies).

import { type BackwardFn, needsGrad, record, recomputable } from '../autograd/tape.js';
import { ShapeError, formatShape } from '../errors.js';
import { type Tensor, shapeSize } from '../tensor/tensor.js';
import { deviceOf, normalizeAxis } from './check.js';
import { kernels } from '../backend/kernels.js';

/** Reshape to `shape` (one entry may be -1). Shares storage with x. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const b = deviceOf('reshape', x);
  const free = shape.indexOf(-1);
  const resolved = [...shape];
  if (free >= 0) {
    const known = shapeSize(shape.filter((_, i) => i !== free));
    if (known === 0 || x.size % known !== 0)
      throw new ShapeError(`reshape: cannot reshape ${formatShape(x.shape)} to ${formatShape(shape)}`);
    resolved[free] = x.size / known;
  }
  if (resolved.some((d) => !Number.isInteger(d) || d < 0) || shapeSize(resolved) !== x.size)
    throw new ShapeError(
      `reshape: cannot reshape ${formatShape(x.shape)} (${x.size} elements) to ${formatShape(shape)}`,
    );
  const y = b.view(x, resolved);
  // A view of a recomputable tensor is recomputable too (free once x has its values), so both can be freed.
  if (needsGrad(x))
    record('reshape', [x], [y], ([g]) => [b.view(g!, x.shape)], {
      saved: [],
      ...(recomputable(x) ? { recomputeFrom: [x], recompute: () => b.view(x, resolved) } : {}),
    });
  return y;
}

/** Reorders the axes: result axis i is x's axis perm[i]. */
export function permute(x: Tensor, perm: readonly number[]): Tensor {
  const b = deviceOf('permute', x);
  const kern = kernels(b, x.dtype);
  if (perm.length !== x.rank || [...perm].sort((p, q) => p - q).some((p, i) => p !== i))
    throw new ShapeError(
      `permute: [${perm.join(', ')}] is not a permutation of the ${x.rank} axes of ${formatShape(x.shape)}`,
    );
  const y = kern.permute(x, perm);
  if (needsGrad(x)) {
    const inverse = new Array<number>(perm.length);
    perm.forEach((p, i) => (inverse[p] = i));
    record('permute', [x], [y], ([g]) => [kern.permute(g!, inverse)], { saved: [] });
  }
  return y;
}

/** Swaps two axes. */
export function transpose(x: Tensor, a: number, c: number): Tensor {
  const perm = [...Array(x.rank).keys()];
  const i = normalizeAxis('transpose', a, x.rank);
  const j = normalizeAxis('transpose', c, x.rank);
  [perm[i], perm[j]] = [perm[j]!, perm[i]!];
  return permute(x, perm);
}

// For a contiguous tensor, moving a range along `axis` is `outer` block copies of `count * inner` elements.
function axisGeometry(shape: readonly number[], axis: number): { outer: number; inner: number } {
  return {
    outer: shapeSize(shape.slice(0, axis)),
    inner: shapeSize(shape.slice(axis + 1)),
  };
}

/** Elements [start, end) along `axis`. */
export function slice(x: Tensor, axis: number, start: number, end: number): Tensor {
  const b = deviceOf('slice', x);
  const kern = kernels(b, x.dtype);
  const ax = normalizeAxis('slice', axis, x.rank);
  const n = x.shape[ax]!;
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > n || start > end)
    throw new ShapeError(`slice: range [${start}, ${end}) is outside axis ${ax} of ${formatShape(x.shape)}`);
  const outShape = [...x.shape];
  outShape[ax] = end - start;
  const y = b.zeros(outShape, x.dtype);
  const { outer, inner } = axisGeometry(x.shape, ax);
  const len = (end - start) * inner;
  kern.copyBlocks(x, start * inner, n * inner, y, 0, len, outer, len);
  if (needsGrad(x))
    record(
      'slice',
      [x],
      [y],
      ([g]) => {
        const dx = b.zeros(x.shape, x.dtype);
        kern.copyBlocks(g!, 0, len, dx, start * inner, n * inner, outer, len);
        return [dx];
      },
      { saved: [] },
    );
  return y;
}

/** Joins tensors along `axis`; all other dims must agree. */
export function concat(xs: readonly Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new ShapeError('concat: no tensors given');
  const b = deviceOf('concat', ...xs);
  const kern = kernels(b, xs[0]!.dtype);
  const first = xs[0]!;
  const ax = normalizeAxis('concat', axis, first.rank);
  for (const t of xs) {
    if (t.dtype !== first.dtype) throw new ShapeError(`concat: dtypes differ (${first.dtype} and ${t.dtype})`);
    if (t.rank !== first.rank || t.shape.some((d, i) => i !== ax && d !== first.shape[i]))
      throw new ShapeError(
        `concat: shapes ${formatShape(first.shape)} and ${formatShape(t.shape)} differ outside axis ${ax}`,
      );
  }
  const total = xs.reduce((s, t) => s + t.shape[ax]!, 0);
  const outShape = [...first.shape];
  outShape[ax] = total;
  const y = b.zeros(outShape, first.dtype);
  const { outer, inner } = axisGeometry(first.shape, ax);
  let offset = 0;
  const offsets: number[] = [];
  for (const t of xs) {
    offsets.push(offset);
    const len = t.shape[ax]! * inner;
    kern.copyBlocks(t, 0, len, y, offset * inner, total * inner, outer, len);
    offset += t.shape[ax]!;
  }
  if (needsGrad(...xs)) {
    const backwardFn: BackwardFn = ([g]) =>
      xs.map((t, i) => {
        if (!t.requiresGrad) return null;
        const dx = b.zeros(t.shape, t.dtype);
        const len = t.shape[ax]! * inner;
        kern.copyBlocks(g!, offsets[i]! * inner, total * inner, dx, 0, len, outer, len);
        return dx;
      });
    record('concat', [...xs], [y], backwardFn, { saved: [] });
  }
  return y;
}
