// Retention math shared by the backends' reference code: the decay sums and per-head constants of torchscale's
// RetNetRelPos and MultiScaleRetention (torchscale/architecture/retnet.py), and
// the plain-loop definition of each form used by the reference backend. Everything here is float64.

import type { RetentionForm } from '../kernels.js';

/** γ_h = 1 − 2^(−5−h) (paper Eq. 8; torchscale's RetNetRelPos). */
export function retentionGammas(heads: number): number[] {
  return Array.from({ length: heads }, (_, h) => 1 - 2 ** (-5 - h));
}

/** sqrtS[n] = sqrt(S(n)), S(n) = Σ_{t=0}^{n} γ^t, for n < T, built by summing exp(λt) terms as torchscale does. */
export function decaySums(gamma: number, T: number): Float64Array {
  const lambda = Math.log(gamma);
  const S = new Float64Array(T);
  let acc = 0;
  for (let t = 0; t < T; t++) {
    acc += Math.exp(lambda * t);
    S[t] = acc;
  }
  return S;
}

/** γ^e computed as exp(e·ln γ), the way torchscale builds its decay masks. */
export function decayPow(lambda: number, e: number): number {
  return Math.exp(lambda * e);
}

type F = Float32Array | Float64Array;

/**
 * Where one head's rows live in the time-major [B, T, H, W] layout: row n of the head starts at `off + n * ld`.
 * `ro` is the head's offset in r: [B, H, T].
 */
export interface HeadLayout {
  qo: number;
  ldk: number;
  vo: number;
  ldv: number;
  ro: number;
  T: number;
  K: number;
  V: number;
}

/**
 * The layout of head h of batch row b for q, k: [B, T, H, K] and v: [B, T, H, V]; with `start` and `length`, of the
 * sequence packed at positions [start, start + length) of that row.
 */
export function headLayout(
  b: number,
  h: number,
  T: number,
  H: number,
  K: number,
  V: number,
  start = 0,
  length = T,
): HeadLayout {
  const row = b * T + start;
  return {
    qo: (row * H + h) * K,
    ldk: H * K,
    vo: (row * H + h) * V,
    ldv: H * V,
    ro: (b * H + h) * T + start,
    T: length,
    K,
    V,
  };
}

/** The sequences of a retention call: each batch row, or the packed segments of row 0. */
export function sequences(
  B: number,
  T: number,
  segments: readonly number[] | null,
): { b: number; start: number; length: number }[] {
  if (!segments) return Array.from({ length: B }, (_, b) => ({ b, start: 0, length: T }));
  let start = 0;
  return segments.map((length) => {
    const seq = { b: 0, start, length };
    start += length;
    return seq;
  });
}

/** Where a sequence's head starts: its raw state Z₀ [K·V] (Σ_m γ^(−1−m) k_mᵀ v_m over the past) and decay sum s₀. */
export interface HeadStart {
  Z: Float64Array;
  s: number;
}

/**
 * One sequence of one head in the parallel (torchscale's parallel_forward) or chunkwise (chunk_recurrent_forward) form, continuing `start` (null: empty),
 * writing o and r; returns the raw state and decay sum after the sequence. `normalize` false drops every normaliser
 * (fla's RetNet): o_n = U_n, r_n = 1. With normalisation and a start, the decay sums continue the start's
 * (Ŝ(n) = s₀γ^(n+1) + S(n)) and U_n gains γ^(n+1) q_n Z₀; an empty start gives torchscale's forms exactly.
 *
 * Parallel: A_nm = (q_n·k_m) γ^(n−m) / √Ŝ(n), c = clamp(Σ_m |A_nm|, 1, 5e4), o = (A v + γ^(n+1) q Z₀ / √Ŝ(n)) / c.
 * Chunkwise: chunks of C rows from the sequence start, the cross-chunk state Z = Z_raw / S(C−1) with σ its largest
 * column abs-sum (at least 1); a continuation at a multiple of C from the sequence's first token is the same
 * computation as one pass. A last chunk shorter than C gives the same outputs as torchscale's zero padding.
 */
export function forwardHead(
  form: RetentionForm,
  q: F,
  k: F,
  v: F,
  o: F,
  r: F,
  L0: HeadLayout,
  gamma: number,
  C: number,
  normalize: boolean,
  start: HeadStart | null,
): HeadStart {
  const { qo, ldk, vo, ldv, ro, T, K, V } = L0;
  const lambda = Math.log(gamma);
  const Zraw = start ? Float64Array.from(start.Z) : new Float64Array(K * V);
  const s0 = start?.s ?? 0;
  const chunk = form === 'parallel' ? Math.max(T, 1) : C;
  const S = decaySums(gamma, chunk);
  const SC = normalize ? S[chunk - 1]! : 1;
  const A = new Float64Array(chunk);
  // Each row n: its chunk's start c0, i = n − c0; the parallel form is one chunk that also carries the start.
  for (let c0 = 0; c0 < T; c0 += chunk) {
    const len = Math.min(chunk, T - c0);
    // Cross term of this chunk: Z_raw (decayed to the chunk start) and, chunkwise, σ of Z_raw / S(C−1).
    let sigma = 1;
    if (form === 'chunkwise' && normalize)
      for (let y = 0; y < V; y++) {
        let col = 0;
        for (let x = 0; x < K; x++) col += Math.abs(Zraw[x * V + y]! / SC);
        sigma = Math.max(sigma, col);
      }
    for (let i = 0; i < len; i++) {
      const n = c0 + i;
      // √ of the row's decay sum: chunkwise counts from the chunk start, parallel from the sequence's first token.
      const sq = !normalize
        ? 1
        : form === 'parallel'
          ? Math.sqrt(s0 * decayPow(lambda, i + 1) + S[i]!)
          : Math.sqrt(S[i]!);
      let absSum = 0;
      for (let j = 0; j <= i; j++) {
        let dot = 0;
        for (let x = 0; x < K; x++) dot += q[qo + n * ldk + x]! * k[qo + (c0 + j) * ldk + x]!;
        A[j] = (dot * decayPow(lambda, i - j)) / sq;
        absSum += Math.abs(A[j]!);
      }
      const m = !normalize ? 1 : form === 'parallel' ? Math.min(Math.max(absSum, 1), 5e4) : Math.max(absSum, 1, sigma);
      const qd = decayPow(lambda, i + 1) / sq;
      for (let y = 0; y < V; y++) {
        let inner = 0;
        for (let j = 0; j <= i; j++) inner += A[j]! * v[vo + (c0 + j) * ldv + y]!;
        let cross = 0;
        for (let x = 0; x < K; x++) cross += q[qo + n * ldk + x]! * Zraw[x * V + y]!;
        o[vo + n * ldv + y] = (inner + qd * cross) / m;
      }
      r[ro + n] = normalize ? 1 / (sq * m) : 1;
    }
    // Z_raw = γ^len Z_raw + Σ_j γ^(len−1−j) k_jᵀ v_j: the state after the chunk.
    const cross = decayPow(lambda, len);
    for (let e = 0; e < K * V; e++) Zraw[e] *= cross;
    for (let j = 0; j < len; j++) {
      const w = decayPow(lambda, len - 1 - j);
      for (let x = 0; x < K; x++)
        for (let y = 0; y < V; y++) Zraw[x * V + y] += k[qo + (c0 + j) * ldk + x]! * v[vo + (c0 + j) * ldv + y]! * w;
    }
  }
  return { Z: Zraw, s: s0 * decayPow(lambda, T) + (T > 0 ? decaySums(gamma, T)[T - 1]! : 0) };
}

/** Backward of o = r ⊙ U for one (b, h), the O(T²) definition: accumulates into dq, dk, dv. */
export function backwardHead(q: F, k: F, v: F, r: F, dO: F, dq: F, dk: F, dv: F, L: HeadLayout, gamma: number): void {
  const { qo, ldk, vo, ldv, ro, T, K, V } = L;
  const lambda = Math.log(gamma);
  for (let n = 0; n < T; n++) {
    const rn = r[ro + n]!;
    for (let m = 0; m <= n; m++) {
      const w = decayPow(lambda, n - m) * rn;
      let gv = 0; // dO_n · v_m
      for (let y = 0; y < V; y++) gv += dO[vo + n * ldv + y]! * v[vo + m * ldv + y]!;
      let qk = 0;
      for (let x = 0; x < K; x++) qk += q[qo + n * ldk + x]! * k[qo + m * ldk + x]!;
      for (let x = 0; x < K; x++) {
        dq[qo + n * ldk + x] += w * gv * k[qo + m * ldk + x]!;
        dk[qo + m * ldk + x] += w * gv * q[qo + n * ldk + x]!;
      }
      for (let y = 0; y < V; y++) dv[vo + m * ldv + y] += w * qk * dO[vo + n * ldv + y]!;
    }
  }
}
