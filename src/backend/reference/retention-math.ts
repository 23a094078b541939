// Retention math shared by the backends' reference code: the decay sums and per-head constants of torchscale's
// RetNetRelPos and MultiScaleRetention (torchscale/architecture/retnet.py), and
// the plain-loop definition of each form used by the reference backend. Everything here is float64.

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

/** The layout of head h of batch row b for q, k: [B, T, H, K] and v: [B, T, H, V]. */
export function headLayout(b: number, h: number, T: number, H: number, K: number, V: number): HeadLayout {
  return { qo: (b * T * H + h) * K, ldk: H * K, vo: (b * T * H + h) * V, ldv: H * V, ro: (b * H + h) * T, T, K, V };
}

/**
 * Parallel form (torchscale's parallel_forward) for one head: A = (q kᵀ) ⊙ D̃, c = clamp(Σ_m |A_nm|, 1, 5e4), o = (A / c) v. Without
 * normalisation (fla-spec §4.3): A = (q kᵀ) ⊙ D with D_nm = γ^(n−m), o = A v, r = 1.
 */
export function parallelHead(q: F, k: F, v: F, o: F, r: F, L: HeadLayout, gamma: number, normalize = true): void {
  const { qo, ldk, vo, ldv, ro, T, K, V } = L;
  const lambda = Math.log(gamma);
  const S = decaySums(gamma, T);
  const A = new Float64Array(T);
  for (let n = 0; n < T; n++) {
    const sq = normalize ? Math.sqrt(S[n]!) : 1;
    let absSum = 0;
    for (let m = 0; m <= n; m++) {
      let dot = 0;
      for (let x = 0; x < K; x++) dot += q[qo + n * ldk + x]! * k[qo + m * ldk + x]!;
      A[m] = (dot * decayPow(lambda, n - m)) / sq;
      absSum += Math.abs(A[m]!);
    }
    const c = normalize ? Math.min(Math.max(absSum, 1), 5e4) : 1;
    for (let y = 0; y < V; y++) {
      let s = 0;
      for (let m = 0; m <= n; m++) s += A[m]! * v[vo + m * ldv + y]!;
      o[vo + n * ldv + y] = s / c;
    }
    r[ro + n] = 1 / (sq * c);
  }
}

/**
 * Chunkwise form (torchscale's chunk_recurrent_forward) for one (b, h) with chunk size C; a last chunk shorter than C gives the same outputs as
 * torchscale's zero padding (outputs are causal and the padded rows only feed the unused final state).
 */
export function chunkwiseHead(q: F, k: F, v: F, o: F, r: F, L0: HeadLayout, gamma: number, C: number): void {
  const { qo, ldk, vo, ldv, ro, T, K, V } = L0;
  const lambda = Math.log(gamma);
  const S = decaySums(gamma, C);
  const SC = S[C - 1]!;
  const Z = new Float64Array(K * V); // un-normalised cross-chunk state, [K, V]
  let sigma = 1;
  const A = new Float64Array(C);
  for (let s0 = 0; s0 < T; s0 += C) {
    const L = Math.min(C, T - s0);
    for (let i = 0; i < L; i++) {
      const n = s0 + i;
      const sq = Math.sqrt(S[i]!);
      let absSum = 0;
      for (let j = 0; j <= i; j++) {
        let dot = 0;
        for (let x = 0; x < K; x++) dot += q[qo + n * ldk + x]! * k[qo + (s0 + j) * ldk + x]!;
        A[j] = (dot * decayPow(lambda, i - j)) / sq;
        absSum += Math.abs(A[j]!);
      }
      const a = Math.max(absSum, 1);
      const qd = (decayPow(lambda, i + 1) * SC) / sq;
      const m = Math.max(a, sigma);
      for (let y = 0; y < V; y++) {
        let inner = 0;
        for (let j = 0; j <= i; j++) inner += A[j]! * v[vo + (s0 + j) * ldv + y]!;
        let cross = 0;
        for (let x = 0; x < K; x++) cross += q[qo + n * ldk + x]! * qd * Z[x * V + y]!;
        o[vo + n * ldv + y] = (inner + cross) / m;
      }
      r[ro + n] = 1 / (sq * m);
    }
    const cross = decayPow(lambda, C);
    for (let e = 0; e < K * V; e++) Z[e] *= cross;
    for (let j = 0; j < L; j++) {
      const vd = decayPow(lambda, C - 1 - j) / SC;
      for (let x = 0; x < K; x++)
        for (let y = 0; y < V; y++) Z[x * V + y] += k[qo + (s0 + j) * ldk + x]! * v[vo + (s0 + j) * ldv + y]! * vd;
    }
    sigma = 1;
    for (let y = 0; y < V; y++) {
      let col = 0;
      for (let x = 0; x < K; x++) col += Math.abs(Z[x * V + y]!);
      sigma = Math.max(sigma, col);
    }
  }
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
