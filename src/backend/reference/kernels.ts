// The reference kernels: every kernel as a plain TypeScript loop, in float64 arithmetic, stored in the tensor's
// dtype (float32 or float64). They are the definition the other devices' kernels are tested against, the kernels
// that reproduce torchscale's float64 vectors, and the fallback of a device that lacks a kernel. Clarity over speed.
// They run on any host device's tensors and allocate their outputs on the inputs' device.

import { BackendError } from '../../errors.js';
import { type DataArray, type FloatArray, fromFloat16, toFloat16 } from '../../tensor/dtype.js';
import { type Tensor, shapeSize } from '../../tensor/tensor.js';
import type { HostDevice } from '../host/device.js';
import type {
  ActivationKind,
  AdamWParams,
  AttentionAlgorithm,
  BinaryOp,
  Kernels,
  RetentionForm,
  RetentionRun,
  RotaryPairs,
  RetentionState,
} from '../kernels.js';
import { backwardHead, forwardHead, headLayout, sequences } from './retention-math.js';

/** u of row `row` for `seed` (murmur3's fmix32 of seed ⊕ row·golden ratio), uniform in [0, 1); native's too. */
export function dropoutUniform(seed: number, row: number): number {
  let h = (seed ^ Math.imul(row, 0x9e3779b9)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return (h >>> 0) * 2 ** -32;
}

const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

/** erf with |error| < 1.2e-16 relative (W. J. Cody's rational approximations are overkill; this series/continued
 * fraction pair is accurate to double precision over the whole line). */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    // Maclaurin series: erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1)).
    let term = ax;
    let sum = ax;
    const x2 = ax * ax;
    for (let n = 1; n < 200; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    const r = (2 / Math.sqrt(Math.PI)) * sum;
    return x < 0 ? -r : r;
  }
  // Continued fraction for erfc(x), x >= 2.5 (Lentz's method).
  const tiny = 1e-300;
  let f = ax;
  let c = ax;
  let d = 0;
  for (let n = 1; n < 300; n++) {
    const an = n / 2;
    d = ax + an * d;
    d = d === 0 ? tiny : 1 / d;
    c = ax + an / c;
    if (c === 0) c = tiny;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-ax * ax) / (f * Math.sqrt(Math.PI));
  return x < 0 ? erfc - 1 : 1 - erfc;
}

export function activationValue(kind: ActivationKind, x: number): number {
  switch (kind) {
    case 'gelu':
      return 0.5 * x * (1 + erf(x * SQRT1_2));
    case 'silu':
      return x / (1 + Math.exp(-x));
    case 'relu':
      return x > 0 ? x : 0;
  }
}

export function activationDerivative(kind: ActivationKind, x: number): number {
  switch (kind) {
    case 'gelu':
      return 0.5 * (1 + erf(x * SQRT1_2)) + x * INV_SQRT_2PI * Math.exp(-0.5 * x * x);
    case 'silu': {
      const s = 1 / (1 + Math.exp(-x));
      return s * (1 + x * (1 - s));
    }
    case 'relu':
      return x > 0 ? 1 : 0;
  }
}

/** q·k / sqrt(K) for the K-vectors at Q[qOff] and Kk[kOff]. */
function attentionScore(Q: FloatArray, qOff: number, Kk: FloatArray, kOff: number, K: number): number {
  let s = 0;
  for (let x = 0; x < K; x++) s += Q[qOff + x]! * Kk[kOff + x]!;
  return s / Math.sqrt(K);
}

/**
 * Softmax of one query's scores against n keys (key j at Kk[kOff + j·kStride]) into p[0, n); returns the log-sum-exp
 * of the scores.
 */
function attentionSoftmax(
  Q: FloatArray,
  qOff: number,
  Kk: FloatArray,
  kOff: number,
  kStride: number,
  n: number,
  K: number,
  p: Float64Array,
): number {
  let mx = -Infinity;
  for (let j = 0; j < n; j++) {
    p[j] = attentionScore(Q, qOff, Kk, kOff + j * kStride, K);
    mx = Math.max(mx, p[j]!);
  }
  let sum = 0;
  for (let j = 0; j < n; j++) sum += Math.exp(p[j]! - mx);
  const lse = mx + Math.log(sum);
  for (let j = 0; j < n; j++) p[j] = Math.exp(p[j]! - lse);
  return lse;
}

const host = (t: Tensor) => t.device as HostDevice;

export class ReferenceKernels implements Omit<Kernels, 'cast'> {
  private raw(t: Tensor): DataArray {
    return host(t).raw(t);
  }

  private float(t: Tensor): FloatArray {
    return host(t).float(t);
  }

  private out(shape: readonly number[], like: Tensor): { t: Tensor; d: FloatArray } {
    const t = host(like).zeros(shape, like.dtype);
    return { t, d: this.float(t) };
  }

  matmul(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
    const ra = a.rank;
    const M = transA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
    const K = transA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
    const N = transB ? b.shape[b.rank - 2]! : b.shape[b.rank - 1]!;
    const batch = shapeSize(a.shape.slice(0, -2));
    const bBatched = b.rank > 2;
    const { t, d: c } = this.out([...a.shape.slice(0, -2), M, N], a);
    const A = this.float(a);
    const B = this.float(b);
    for (let bi = 0; bi < batch; bi++) {
      const ao = bi * M * K;
      const bo = bBatched ? bi * K * N : 0;
      const co = bi * M * N;
      for (let i = 0; i < M; i++)
        for (let j = 0; j < N; j++) {
          let s = 0;
          for (let k = 0; k < K; k++) {
            const av = transA ? A[ao + k * M + i]! : A[ao + i * K + k]!;
            const bv = transB ? B[bo + j * K + k]! : B[bo + k * N + j]!;
            s += av * bv;
          }
          c[co + i * N + j] = s;
        }
    }
    return t;
  }

  matmulShared(x: Tensor, ws: readonly Tensor[]): Tensor[] {
    return ws.map((w) => this.matmul(x, w, false, true));
  }

  binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
    const { t, d: o } = this.out(a.shape, a);
    const A = this.float(a);
    const B = this.float(b);
    const m = B.length;
    for (let i = 0; i < A.length; i++) o[i] = op === 'add' ? A[i]! + B[i % m]! : A[i]! * B[i % m]!;
    return t;
  }

  scale(a: Tensor, alpha: number): Tensor {
    const { t, d: o } = this.out(a.shape, a);
    const A = this.float(a);
    for (let i = 0; i < A.length; i++) o[i] = alpha * A[i]!;
    return t;
  }

  sumToShape(g: Tensor, shape: readonly number[]): Tensor {
    const { t, d: o } = this.out(shape, g);
    const G = this.float(g);
    const m = o.length;
    const acc = new Float64Array(m);
    for (let i = 0; i < G.length; i++) acc[i % m] += G[i]!;
    o.set(acc);
    return t;
  }

  activation(kind: ActivationKind, x: Tensor): Tensor {
    const { t, d: o } = this.out(x.shape, x);
    const X = this.float(x);
    for (let i = 0; i < X.length; i++) o[i] = activationValue(kind, X[i]!);
    return t;
  }

  activationBackward(kind: ActivationKind, x: Tensor, g: Tensor): Tensor {
    const { t, d: o } = this.out(x.shape, x);
    const X = this.float(x);
    const G = this.float(g);
    for (let i = 0; i < X.length; i++) o[i] = G[i]! * activationDerivative(kind, X[i]!);
    return t;
  }

  private rowsOf(x: Tensor): { rows: number; cols: number } {
    const cols = x.shape[x.rank - 1] ?? 1;
    return { rows: cols === 0 ? 0 : x.size / cols, cols };
  }

  rmsNorm(x: Tensor, w: Tensor | null, eps: number): { y: Tensor; rstd: Tensor } {
    return this.normRows(x, null, w, eps);
  }

  rmsNormBackward(x: Tensor, w: Tensor | null, rstd: Tensor, g: Tensor): { dx: Tensor; dw: Tensor | null } {
    const { dx, dw } = this.normRowsBackward(x, null, w, rstd, g);
    return { dx, dw };
  }

  gatedRmsNorm(x: Tensor, gate: Tensor, w: Tensor | null, eps: number): { y: Tensor; rstd: Tensor } {
    return this.normRows(x, gate, w, eps);
  }

  gatedRmsNormBackward(
    x: Tensor,
    gate: Tensor,
    w: Tensor | null,
    rstd: Tensor,
    g: Tensor,
  ): { dx: Tensor; dgate: Tensor; dw: Tensor | null } {
    const { dx, dgate, dw } = this.normRowsBackward(x, gate, w, rstd, g);
    return { dx, dgate: dgate!, dw };
  }

  /** y = x · rstd · w (w null: 1) per row of the last dim, times silu(gate) where a gate is given. */
  private normRows(x: Tensor, gate: Tensor | null, w: Tensor | null, eps: number): { y: Tensor; rstd: Tensor } {
    const { rows, cols } = this.rowsOf(x);
    const { t: y, d: Y } = this.out(x.shape, x);
    const { t: rstd, d: R } = this.out([rows], x);
    const X = this.float(x);
    const Z = gate ? this.float(gate) : null;
    const W = w ? this.float(w) : null;
    for (let r = 0; r < rows; r++) {
      let ss = 0;
      for (let j = 0; j < cols; j++) ss += X[r * cols + j]! ** 2;
      const s = 1 / Math.sqrt(ss / cols + eps);
      R[r] = s;
      for (let j = 0; j < cols; j++) {
        const i = r * cols + j;
        Y[i] = X[i]! * s * (W ? W[j]! : 1) * (Z ? activationValue('silu', Z[i]!) : 1);
      }
    }
    return { y, rstd };
  }

  /**
   * The backward of normRows. With a gate z, y = n ⊙ silu(z) for n = x·rstd·w: dz = g ⊙ n ⊙ silu'(z), and the norm
   * receives h = g ⊙ silu(z) (h = g without a gate): dx = rstd·h·w − x·rstd³·Σ(h·w·x)/cols, dw = Σ_rows h·x·rstd.
   */
  private normRowsBackward(
    x: Tensor,
    gate: Tensor | null,
    w: Tensor | null,
    rstd: Tensor,
    g: Tensor,
  ): { dx: Tensor; dgate: Tensor | null; dw: Tensor | null } {
    const { rows, cols } = this.rowsOf(x);
    const { t: dx, d: DX } = this.out(x.shape, x);
    const dz = gate ? this.out(x.shape, x) : null;
    const dwT = w ? this.out(w.shape, w) : null;
    const X = this.float(x);
    const Z = gate ? this.float(gate) : null;
    const G = this.float(g);
    const R = this.float(rstd);
    const W = w ? this.float(w) : null;
    const dwAcc = new Float64Array(cols);
    const h = new Float64Array(cols);
    for (let r = 0; r < rows; r++) {
      const s = R[r]!;
      let dot = 0;
      for (let j = 0; j < cols; j++) {
        const i = r * cols + j;
        h[j] = G[i]! * (Z ? activationValue('silu', Z[i]!) : 1);
        dot += h[j]! * (W ? W[j]! : 1) * X[i]!;
        if (Z) dz!.d[i] = G[i]! * X[i]! * s * (W ? W[j]! : 1) * activationDerivative('silu', Z[i]!);
      }
      const c = (s * s * s * dot) / cols;
      for (let j = 0; j < cols; j++) {
        const i = r * cols + j;
        DX[i] = s * h[j]! * (W ? W[j]! : 1) - c * X[i]!;
        dwAcc[j] += h[j]! * X[i]! * s;
      }
    }
    if (dwT) dwT.d.set(dwAcc);
    return { dx, dgate: dz ? dz.t : null, dw: dwT ? dwT.t : null };
  }

  softmax(x: Tensor): Tensor {
    const { rows, cols } = this.rowsOf(x);
    const { t, d: Y } = this.out(x.shape, x);
    const X = this.float(x);
    for (let r = 0; r < rows; r++) {
      let mx = -Infinity;
      for (let j = 0; j < cols; j++) mx = Math.max(mx, X[r * cols + j]!);
      let sum = 0;
      for (let j = 0; j < cols; j++) sum += Math.exp(X[r * cols + j]! - mx);
      for (let j = 0; j < cols; j++) Y[r * cols + j] = Math.exp(X[r * cols + j]! - mx) / sum;
    }
    return t;
  }

  softmaxBackward(y: Tensor, g: Tensor): Tensor {
    const { rows, cols } = this.rowsOf(y);
    const { t, d: DX } = this.out(y.shape, y);
    const Y = this.float(y);
    const G = this.float(g);
    for (let r = 0; r < rows; r++) {
      let dot = 0;
      for (let j = 0; j < cols; j++) dot += G[r * cols + j]! * Y[r * cols + j]!;
      for (let j = 0; j < cols; j++) DX[r * cols + j] = Y[r * cols + j]! * (G[r * cols + j]! - dot);
    }
    return t;
  }

  private checkIds(ids: Int32Array, limit: number, what: string, kernel: string): void {
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id < 0 || id >= limit)
        throw new BackendError(`${kernel}: ${what} ${id} at position ${i} is outside the vocabulary [0, ${limit})`);
    }
  }

  crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex: number): { loss: Tensor; lse: Tensor } {
    const [N, V] = logits.shape as [number, number];
    const { t: loss, d: L } = this.out([N], logits);
    const { t: lse, d: S } = this.out([N], logits);
    const X = this.float(logits);
    const T = this.raw(targets) as Int32Array;
    this.checkIds(
      T.filter((id) => id !== ignoreIndex),
      V,
      'target',
      'crossEntropy',
    );
    for (let r = 0; r < N; r++) {
      let mx = -Infinity;
      for (let j = 0; j < V; j++) mx = Math.max(mx, X[r * V + j]!);
      let sum = 0;
      for (let j = 0; j < V; j++) sum += Math.exp(X[r * V + j]! - mx);
      const l = mx + Math.log(sum);
      S[r] = l;
      L[r] = T[r] === ignoreIndex ? 0 : l - X[r * V + T[r]!]!;
    }
    return { loss, lse };
  }

  crossEntropyBackward(logits: Tensor, targets: Tensor, lse: Tensor, g: Tensor, ignoreIndex: number): Tensor {
    const [N, V] = logits.shape as [number, number];
    const { t, d: D } = this.out(logits.shape, logits);
    const X = this.float(logits);
    const T = this.raw(targets) as Int32Array;
    const S = this.float(lse);
    const G = this.float(g);
    for (let r = 0; r < N; r++) {
      if (T[r] === ignoreIndex) continue;
      for (let j = 0; j < V; j++) D[r * V + j] = G[r]! * Math.exp(X[r * V + j]! - S[r]!);
      D[r * V + T[r]!] -= G[r]!;
    }
    return t;
  }

  embedding(table: Tensor, ids: Tensor): Tensor {
    const [V, D] = table.shape as [number, number];
    const I = this.raw(ids) as Int32Array;
    this.checkIds(I, V, 'token id', 'embedding');
    const { t, d: O } = this.out([...ids.shape, D], table);
    const W = this.float(table);
    for (let i = 0; i < I.length; i++) O.set(W.subarray(I[i]! * D, I[i]! * D + D), i * D);
    return t;
  }

  embeddingBackward(g: Tensor, ids: Tensor, vocab: number): Tensor {
    const D = g.shape[g.rank - 1]!;
    const I = this.raw(ids) as Int32Array;
    this.checkIds(I, vocab, 'token id', 'embeddingBackward');
    const { t, d: O } = this.out([vocab, D], g);
    const G = this.float(g);
    for (let i = 0; i < I.length; i++) for (let j = 0; j < D; j++) O[I[i]! * D + j] += G[i * D + j]!;
    return t;
  }

  permute(x: Tensor, perm: readonly number[]): Tensor {
    const rank = x.rank;
    const inStride = new Array<number>(rank);
    let s = 1;
    for (let d = rank - 1; d >= 0; d--) {
      inStride[d] = s;
      s *= x.shape[d]!;
    }
    const outShape = perm.map((p) => x.shape[p]!);
    const out = host(x).alloc(x.dtype, outShape);
    const X = this.raw(x);
    const idx = new Array<number>(rank).fill(0);
    for (let o = 0; o < x.size; o++) {
      let src = 0;
      for (let d = 0; d < rank; d++) src += idx[d]! * inStride[perm[d]!]!;
      out[o] = X[src]!;
      for (let d = rank - 1; d >= 0; d--) {
        if (++idx[d]! < outShape[d]!) break;
        idx[d] = 0;
      }
    }
    return host(x).wrap(out, outShape, x.dtype);
  }

  copyBlocks(
    src: Tensor,
    srcOff: number,
    srcStride: number,
    dst: Tensor,
    dstOff: number,
    dstStride: number,
    blocks: number,
    len: number,
  ): void {
    const S = this.raw(src);
    const D = this.raw(dst);
    for (let b = 0; b < blocks; b++)
      for (let j = 0; j < len; j++) D[dstOff + b * dstStride + j] = S[srcOff + b * srcStride + j]!;
  }

  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, p: AdamWParams): void {
    const P = this.float(param);
    const G = this.float(grad);
    const Mm = this.float(m);
    const Vv = this.float(v);
    const c1 = 1 / (1 - p.beta1 ** p.step);
    const c2 = 1 / (1 - p.beta2 ** p.step);
    for (let i = 0; i < P.length; i++) {
      const g = G[i]! * p.gradScale;
      Mm[i] = p.beta1 * Mm[i]! + (1 - p.beta1) * g;
      Vv[i] = p.beta2 * Vv[i]! + (1 - p.beta2) * g * g;
      P[i] = P[i]! * (1 - p.lr * p.weightDecay) - (p.lr * (Mm[i]! * c1)) / (Math.sqrt(Vv[i]! * c2) + p.eps);
    }
  }

  dropout(x: Tensor, p: number, seed: number, rowSize: number): Tensor {
    const { t, d: Y } = this.out(x.shape, x);
    const X = this.float(x);
    const keep = 1 / (1 - p);
    for (let e = 0, row = 0; e < X.length; e += rowSize, row++) {
      const m = dropoutUniform(seed, row) >= p ? keep : 0;
      for (let i = e; i < Math.min(e + rowSize, X.length); i++) Y[i] = X[i]! * m;
    }
    return t;
  }

  sumSquares(xs: readonly Tensor[]): number {
    let s = 0;
    for (const x of xs) {
      const X = this.float(x);
      for (let i = 0; i < X.length; i++) s += X[i]! * X[i]!;
    }
    return s;
  }

  retentionForward(
    form: RetentionForm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gammas: readonly number[],
    run: RetentionRun,
  ): { o: Tensor; r: Tensor; finalState: RetentionState | null } {
    const [B, T, H, K] = q.shape as [number, number, number, number];
    const V = v.shape[3]!;
    const { t: o, d: O } = this.out([B, T, H, V], q);
    const { t: r, d: R } = this.out([B, H, T], q);
    const Q = this.float(q);
    const Kk = this.float(k);
    const Vv = this.float(v);
    const seqs = sequences(B, T, run.segments);
    const N = seqs.length;
    const final = run.returnFinalState ? { state: this.out([N, H, K, V], q), scale: this.out([N, H], q) } : null;
    const S0 = run.initialState ? this.float(run.initialState.state) : null;
    const s0 = run.initialState ? this.float(run.initialState.scale) : null;
    seqs.forEach(({ b, start, length }, i) =>
      gammas.forEach((gamma, h) => {
        const nh = i * H + h;
        // The kernels work on the raw state Z; a normalised state is S̃ = Z / sqrt(s).
        const unscale = (s: number) => (run.normalize ? Math.sqrt(s) : 1);
        const begin = S0
          ? {
              Z: Float64Array.from(S0.subarray(nh * K * V, (nh + 1) * K * V), (x) => x * unscale(s0![nh]!)),
              s: s0![nh]!,
            }
          : null;
        const layout = headLayout(b, h, T, H, K, V, start, length);
        const end = forwardHead(form, Q, Kk, Vv, O, R, layout, gamma, run.chunkSize, run.normalize, begin);
        if (!final) return;
        const div = end.s > 0 ? unscale(end.s) : 1;
        for (let e = 0; e < K * V; e++) final.state.d[nh * K * V + e] = end.Z[e]! / div;
        final.scale.d[nh] = end.s;
      }),
    );
    return { o, r, finalState: final ? { state: final.state.t, scale: final.scale.t } : null };
  }

  retentionBackward(
    _form: RetentionForm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gammas: readonly number[],
    r: Tensor,
    dO: Tensor,
    _chunkSize: number,
  ): { dq: Tensor; dk: Tensor; dv: Tensor } {
    // The reference computes every form's gradient by the one O(T²) definition.
    const [B, T, H, K] = q.shape as [number, number, number, number];
    const V = v.shape[3]!;
    const dq = this.out(q.shape, q);
    const dk = this.out(k.shape, k);
    const dv = this.out(v.shape, v);
    const args = [this.float(q), this.float(k), this.float(v), this.float(r), this.float(dO)] as const;
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++) backwardHead(...args, dq.d, dk.d, dv.d, headLayout(b, h, T, H, K, V), gammas[h]!);
    return { dq: dq.t, dk: dk.t, dv: dv.t };
  }

  retentionStep(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    state: Tensor,
    scale: Tensor,
    gammas: readonly number[],
    normalize: boolean,
  ): Tensor {
    const [B, H, K] = q.shape as [number, number, number];
    const V = v.shape[2]!;
    const { t: o, d: O } = this.out([B, H, V], q);
    const Q = this.float(q);
    const Kk = this.float(k);
    const Vv = this.float(v);
    // A float16 state: read as float32, updated in float32, stored back rounded to float16 (o from the float32 S').
    const bits = state.dtype === 'float16' ? (this.raw(state) as Uint16Array) : null;
    const St = bits ? Float32Array.from(bits, fromFloat16) : this.float(state);
    const Sc = this.float(scale);
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++) {
        const bh = b * H + h;
        const g = gammas[h]!;
        const prev = Sc[bh]!;
        const next = prev * g + 1;
        const decay = normalize ? (Math.sqrt(prev) * g) / Math.sqrt(next) : g;
        const inv = normalize ? 1 / Math.sqrt(next) : 1;
        Sc[bh] = next;
        for (let x = 0; x < K; x++)
          for (let y = 0; y < V; y++) {
            const e = bh * K * V + x * V + y;
            St[e] = St[e]! * decay + Kk[bh * K + x]! * Vv[bh * V + y]! * inv;
          }
        for (let y = 0; y < V; y++) {
          let acc = 0;
          for (let x = 0; x < K; x++) acc += Q[bh * K + x]! * St[bh * K * V + x * V + y]!;
          O[bh * V + y] = acc;
        }
      }
    if (bits) for (let e = 0; e < bits.length; e++) bits[e] = toFloat16(St[e]!);
    return o;
  }

  rotary(x: Tensor, cos: Tensor, sin: Tensor, pairs: RotaryPairs, inverse: boolean): Tensor {
    const [B, T, H, K] = x.shape as [number, number, number, number];
    const { t, d: Y } = this.out(x.shape, x);
    const X = this.float(x);
    const Cs = this.float(cos);
    const Sn = this.float(sin);
    const perBatch = cos.rank === 3;
    const sign = inverse ? -1 : 1;
    // Pair j rotates elements a = first(j) and b = a + offset.
    const halves = pairs === 'halves';
    const offset = halves ? K / 2 : 1;
    for (let b = 0; b < B; b++)
      for (let n = 0; n < T; n++) {
        const table = ((perBatch ? b * T : 0) + n) * K;
        for (let h = 0; h < H; h++) {
          const base = ((b * T + n) * H + h) * K;
          for (let j = 0; j < K / 2; j++) {
            const a = halves ? j : 2 * j;
            const c = Cs[table + a]!;
            const s = sign * Sn[table + a]!;
            const x0 = X[base + a]!;
            const x1 = X[base + a + offset]!;
            Y[base + a] = x0 * c - x1 * s;
            Y[base + a + offset] = x1 * c + x0 * s;
          }
        }
      }
    return t;
  }

  // Attention: both algorithms by the definition, row by row. 'flash' differs only in what it keeps for backward
  // (the log-sum-exp instead of P), which backward then uses to recompute P. Position t of head h of row b is at
  // ((b·T + t)·H + h)·W in a [B, T, H, W] tensor; statistics are indexed (b·H + h)·T + t.
  attentionForward(algorithm: AttentionAlgorithm, q: Tensor, k: Tensor, v: Tensor): { o: Tensor; stats: Tensor } {
    const [B, T, H, K] = q.shape as [number, number, number, number];
    const V = v.shape[3]!;
    const { t: o, d: O } = this.out([B, T, H, V], q);
    const { t: stats, d: S } = this.out(algorithm === 'naive' ? [B, H, T, T] : [B, H, T], q);
    const Q = this.float(q);
    const Kk = this.float(k);
    const Vv = this.float(v);
    const p = new Float64Array(T);
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++)
        for (let i = 0; i < T; i++) {
          const row = (b * H + h) * T + i;
          const lse = attentionSoftmax(Q, ((b * T + i) * H + h) * K, Kk, (b * T * H + h) * K, H * K, i + 1, K, p);
          if (algorithm === 'naive') S.set(p.subarray(0, i + 1), row * T);
          else S[row] = lse;
          for (let x = 0; x < V; x++) {
            let acc = 0;
            for (let j = 0; j <= i; j++) acc += p[j]! * Vv[((b * T + j) * H + h) * V + x]!;
            O[((b * T + i) * H + h) * V + x] = acc;
          }
        }
    return { o, stats };
  }

  attentionBackward(
    algorithm: AttentionAlgorithm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    _o: Tensor,
    stats: Tensor,
    dO: Tensor,
  ): { dq: Tensor; dk: Tensor; dv: Tensor } {
    const [B, T, H, K] = q.shape as [number, number, number, number];
    const V = v.shape[3]!;
    // Accumulated in float64, stored in the tensors' dtype at the end.
    const dQ = new Float64Array(q.size);
    const dK = new Float64Array(k.size);
    const dV = new Float64Array(v.size);
    const Q = this.float(q);
    const Kk = this.float(k);
    const Vv = this.float(v);
    const S = this.float(stats);
    const G = this.float(dO);
    const p = new Float64Array(T);
    const dP = new Float64Array(T);
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++)
        for (let i = 0; i < T; i++) {
          const row = (b * H + h) * T + i;
          const qi = ((b * T + i) * H + h) * K;
          const gi = ((b * T + i) * H + h) * V;
          // P_ij from what the forward kept: read (naive) or recomputed from the log-sum-exp (flash).
          for (let j = 0; j <= i; j++)
            p[j] =
              algorithm === 'naive'
                ? S[row * T + j]!
                : Math.exp(attentionScore(Q, qi, Kk, ((b * T + j) * H + h) * K, K) - S[row]!);
          let D = 0;
          for (let j = 0; j <= i; j++) {
            let g = 0;
            for (let x = 0; x < V; x++) g += G[gi + x]! * Vv[((b * T + j) * H + h) * V + x]!;
            dP[j] = g;
            D += p[j]! * g;
          }
          for (let j = 0; j <= i; j++) {
            const ds = (p[j]! * (dP[j]! - D)) / Math.sqrt(K);
            const kj = ((b * T + j) * H + h) * K;
            const vj = ((b * T + j) * H + h) * V;
            for (let x = 0; x < K; x++) {
              dQ[qi + x] += ds * Kk[kj + x]!;
              dK[kj + x] += ds * Q[qi + x]!;
            }
            for (let x = 0; x < V; x++) dV[vj + x] += p[j]! * G[gi + x]!;
          }
        }
    const store = (acc: Float64Array, like: Tensor) => {
      const { t, d } = this.out(like.shape, like);
      d.set(acc);
      return t;
    };
    return { dq: store(dQ, q), dk: store(dK, k), dv: store(dV, v) };
  }

  attentionDecode(q: Tensor, kCache: Tensor, vCache: Tensor, lengths: readonly number[]): Tensor {
    const [B, H, C, K] = kCache.shape as [number, number, number, number];
    const V = vCache.shape[3]!;
    const { t: o, d: O } = this.out([B, H, V], q);
    const Q = this.float(q);
    const Kc = this.float(kCache);
    const Vc = this.float(vCache);
    const p = new Float64Array(C);
    for (let bh = 0; bh < B * H; bh++) {
      const n = lengths[Math.floor(bh / H)]!;
      attentionSoftmax(Q, bh * K, Kc, bh * C * K, K, n, K, p);
      for (let x = 0; x < V; x++) {
        let acc = 0;
        for (let j = 0; j < n; j++) acc += p[j]! * Vc[(bh * C + j) * V + x]!;
        O[bh * V + x] = acc;
      }
    }
    return o;
  }
}
