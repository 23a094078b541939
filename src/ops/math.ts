// Arithmetic ops: add and mul (with suffix broadcasting), scale, sum, matmul and linear.

import { needsGrad, record, recomputable } from '../autograd/tape.js';
import { DTypeError, ShapeError, formatShape } from '../errors.js';
import { computeDType, isQuantized } from '../tensor/dtype.js';
import { type Tensor, shapeSize } from '../tensor/tensor.js';
import { deviceOf, expectFloat, isSuffix, sameDType, sameShape } from './check.js';
import { kernels, supports } from '../backend/kernels.js';

function checkBroadcast(op: string, a: Tensor, b: Tensor): void {
  expectFloat(op, 'a', a);
  expectFloat(op, 'b', b);
  sameDType(op, a, b);
  if (!isSuffix(b.shape, a.shape))
    throw new ShapeError(
      `${op}: shape ${formatShape(b.shape)} of b must equal a's ${formatShape(a.shape)} or be a suffix of it`,
    );
}

/** a + b, where b's shape equals a's or is a suffix of it (broadcast over leading dims). */
export function add(a: Tensor, b: Tensor): Tensor {
  const be = deviceOf('add', a, b);
  const kern = kernels(be, a.dtype);
  checkBroadcast('add', a, b);
  const y = kern.binary('add', a, b);
  if (needsGrad(a, b))
    record(
      'add',
      [a, b],
      [y],
      ([g]) => [
        a.requiresGrad ? be.view(g!, a.shape) : null,
        b.requiresGrad ? (sameShape(a.shape, b.shape) ? be.view(g!, b.shape) : kern.sumToShape(g!, b.shape)) : null,
      ],
      { saved: [] },
    );
  return y;
}

/** a * b elementwise, with b broadcast as in `add`. */
export function mul(a: Tensor, b: Tensor): Tensor {
  const be = deviceOf('mul', a, b);
  const kern = kernels(be, a.dtype);
  checkBroadcast('mul', a, b);
  const y = kern.binary('mul', a, b);
  if (needsGrad(a, b))
    record(
      'mul',
      [a, b],
      [y],
      ([g]) => {
        let db: Tensor | null = null;
        if (b.requiresGrad) {
          const ga = kern.binary('mul', g!, a);
          db = sameShape(a.shape, b.shape) ? ga : kern.sumToShape(ga, b.shape);
          if (db !== ga) ga.dispose();
        }
        return [a.requiresGrad ? kern.binary('mul', g!, b) : null, db];
      },
      { saved: [a, b], recompute: () => kern.binary('mul', a, b) },
    );
  return y;
}

/** alpha * a. */
export function scale(a: Tensor, alpha: number): Tensor {
  const be = deviceOf('scale', a);
  const kern = kernels(be, a.dtype);
  expectFloat('scale', 'a', a);
  const y = kern.scale(a, alpha);
  // The backward reads nothing; the scaled copy of a recomputable tensor is recomputable too (as reshape's view).
  if (needsGrad(a))
    record('scale', [a], [y], ([g]) => [kern.scale(g!, alpha)], {
      saved: [],
      ...(recomputable(a) ? { recomputeFrom: [a], recompute: () => kern.scale(a, alpha) } : {}),
    });
  return y;
}

/** The sum of all elements, as a tensor of shape []. */
export function sum(a: Tensor): Tensor {
  const be = deviceOf('sum', a);
  const kern = kernels(be, a.dtype);
  expectFloat('sum', 'a', a);
  const y = kern.sumToShape(a, []);
  if (needsGrad(a))
    record(
      'sum',
      [a],
      [y],
      ([g]) => {
        const zeros = be.zeros(a.shape, a.dtype);
        const dx = kern.binary('add', zeros, g!);
        zeros.dispose();
        return [dx];
      },
      { saved: [] },
    );
  return y;
}

export interface MatmulOptions {
  transA?: boolean;
  transB?: boolean;
}

/**
 * Batched matrix product. a: [..., M, K] (or [..., K, M] with transA); b: [..., K, N] (or [..., N, K] with transB),
 * either with a's leading dims or rank 2, shared by every batch entry (then transA is not allowed). Result [..., M, N].
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const be = deviceOf('matmul', a, b);
  const kern = kernels(be, a.dtype);
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  expectFloat('matmul', 'a', a);
  expectFloat('matmul', 'b', b);
  sameDType('matmul', a, b);
  if (a.rank < 2 || b.rank < 2)
    throw new ShapeError(`matmul: operands need rank >= 2, got ${formatShape(a.shape)} and ${formatShape(b.shape)}`);
  const K = transA ? a.shape[a.rank - 2]! : a.shape[a.rank - 1]!;
  const Kb = transB ? b.shape[b.rank - 1]! : b.shape[b.rank - 2]!;
  const shared = b.rank === 2;
  if (K !== Kb || (!shared && !sameShape(a.shape.slice(0, -2), b.shape.slice(0, -2))))
    throw new ShapeError(
      `matmul: cannot multiply ${formatShape(a.shape)}${transA ? 'ᵀ' : ''} by ${formatShape(b.shape)}${transB ? 'ᵀ' : ''}`,
    );
  if (shared && transA && a.rank > 2)
    throw new ShapeError('matmul: transA with a batched a and a rank-2 b is not supported');
  const y = kern.matmul(a, b, transA, transB);
  if (needsGrad(a, b))
    record('matmul', [a, b], [y], ([g]) => {
      // C = op(A) op(B): d op(A) = G op(B)ᵀ, d op(B) = op(A)ᵀ G, transposed back where A or B was transposed.
      const da = !a.requiresGrad
        ? null
        : transA
          ? kern.matmul(b, g!, transB, true)
          : kern.matmul(g!, b, false, !transB);
      let db: Tensor | null = null;
      if (b.requiresGrad) {
        if (shared && a.rank > 2) {
          // b was shared by every batch entry: its gradient sums over them, one GEMM on the flattened rows.
          const a2 = be.view(a, [a.size / K, K]);
          const g2 = be.view(g!, [g!.size / g!.shape[g!.rank - 1]!, g!.shape[g!.rank - 1]!]);
          db = transB ? kern.matmul(g2, a2, true, false) : kern.matmul(a2, g2, true, false);
          a2.dispose();
          g2.dispose();
        } else db = transB ? kern.matmul(g!, a, true, transA) : kern.matmul(a, g!, !transA, false);
      }
      return [da, db];
    });
  return y;
}

/** The checks of linear (op: its name in errors); whether w is held in a storage dtype (stored or quantized). */
function checkLinear(op: string, x: Tensor, w: Tensor, b: Tensor | null): boolean {
  expectFloat(op, 'x', x);
  const stored = w.dtype !== x.dtype && (isQuantized(w.dtype) || computeDType(w.dtype) === x.dtype);
  if (!stored) sameDType(op, x, w);
  if ((isQuantized(w.dtype) || stored) && (x.dtype !== 'float32' || w.requiresGrad))
    throw new DTypeError(
      `${op}: a ${w.dtype} weight takes float32 inputs and no gradient (got ${x.dtype}${w.requiresGrad ? ', requiresGrad' : ''})`,
    );
  if (w.rank !== 2 || x.rank < 1 || x.shape[x.rank - 1] !== w.shape[1])
    throw new ShapeError(
      `${op}: input ${formatShape(x.shape)} does not fit weight ${formatShape(w.shape)} ([out, in])`,
    );
  if (b && (b.rank !== 1 || b.shape[0] !== w.shape[0]))
    throw new ShapeError(`${op}: bias ${formatShape(b.shape)} does not fit weight ${formatShape(w.shape)}`);
  return stored;
}

/**
 * y = x wᵀ + b, PyTorch's nn.Linear layout. x: [..., in], w: [out, in], b: [out] or null. One tape node. w may be
 * held in a storage dtype (bfloat16, float16, qint8, qint4) under float32 x: the product dispatches on w's dtype
 * (the native low-precision kernels on the cpu device), and w takes no gradient. With `recompute`, y is not kept for
 * a later backward once its owner releases it: it is recomputed from x (which this node keeps anyway) when one
 * reads it, one more product of the same size (out floats per row freed against 2·in·out FLOPs per row).
 */
export function linear(x: Tensor, w: Tensor, b: Tensor | null = null, recompute = false): Tensor {
  const be = deviceOf('linear', x, w, ...(b ? [b] : []));
  const kern = kernels(be, x.dtype);
  const stored = checkLinear('linear', x, w, b);
  const wk = stored ? kernels(be, w.dtype) : kern;
  const [out, inp] = w.shape as [number, number];
  const rows = shapeSize(x.shape.slice(0, -1));
  const product = () => {
    const x2 = be.view(x, [rows, inp]); // x2: [R, in]
    const xw = wk.matmul(x2, w, false, true); // [R, out]
    const y2 = b ? kern.binary('add', xw, b) : xw;
    if (b) xw.dispose();
    const y = be.view(y2, [...x.shape.slice(0, -1), out]);
    y2.dispose();
    x2.dispose();
    return y;
  };
  const y = product();
  if (needsGrad(x, w, b))
    record(
      'linear',
      b ? [x, w, b] : [x, w],
      [y],
      ([g]) => {
        const g2 = be.view(g!, [rows, out]);
        const gx = x.requiresGrad ? wk.matmul(g2, w, false, false) : null; // [R, in]
        const dx = gx ? be.view(gx, x.shape) : null;
        gx?.dispose();
        let dw: Tensor | null = null;
        if (w.requiresGrad) {
          const xr = be.view(x, [rows, inp]);
          dw = kern.matmul(g2, xr, true, false); // [out, in]
          xr.dispose();
        }
        const db = b?.requiresGrad ? kern.sumToShape(g2, [out]) : null;
        g2.dispose();
        return b ? [dx, dw, db] : [dx, dw];
      },
      { saved: [x, w], ...(recompute ? { recomputeFrom: b ? [b] : [], recompute: product } : {}) },
    );
  return y;
}

/**
 * linear(x, wᵢ) for several weights [Nᵢ, in] of one dtype with no bias (a decode step's q, k, v and g projections;
 * the FFN's fc1 and gate): the same values, through the kernel table's matmulShared, which may read x once and run
 * the products as one job. Where a gradient is wanted, or the device has no matmulShared of its own, it is linear()
 * weight by weight.
 */
export function linearShared(x: Tensor, ws: readonly Tensor[]): Tensor[] {
  const be = deviceOf('linearShared', x, ...ws);
  const w0 = ws[0];
  if (
    w0 === undefined ||
    needsGrad(x, ...ws) ||
    x.rank < 1 ||
    ws.some((w) => w.dtype !== w0.dtype) ||
    !supports('matmulShared', be.name, [w0.dtype])
  )
    return ws.map((w) => linear(x, w));
  for (const w of ws) checkLinear('linearShared', x, w, null);
  const inp = w0.shape[1]!;
  const rows = shapeSize(x.shape.slice(0, -1));
  const x2 = be.view(x, [rows, inp]);
  const ys = kernels(be, w0.dtype).matmulShared(x2, ws);
  x2.dispose();
  return ys.map((y2, i) => {
    const y = be.view(y2, [...x.shape.slice(0, -1), ws[i]!.shape[0]!]);
    y2.dispose();
    return y;
  });
}
