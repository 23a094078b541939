// The kernel interface. An op (src/ops) validates shapes, calls one forward kernel here and records the matching
// backward kernel on the tape. Each backend implements every kernel: `reference` in plain TypeScript (float32 and
// float64), `native` through the C++ addon (float32). Kernels allocate their outputs; inputs are never modified
// except by the explicitly in-place kernels (copyBlocks, adamw).

import type { DType, DataArray } from '../tensor/dtype.js';
import type { MemoryTracker } from '../tensor/memory.js';
import type { Tensor } from '../tensor/tensor.js';

export type BinaryOp = 'add' | 'mul';
export type ActivationKind = 'gelu' | 'silu' | 'relu';

export type RetentionForm = 'parallel' | 'chunkwise';

/**
 * Which elements of a head the rotary op rotates together: 'interleaved' pairs (x[2j], x[2j+1]) (torchscale's
 * theta_shift, RoPE's original layout) or 'halves' (x[i], x[i+K/2]) (GPT-NeoX's rotate_half, fla's RetNet).
 */
export type RotaryPairs = 'interleaved' | 'halves';

export type AttentionAlgorithm = 'naive' | 'flash';

/** A retention state per sequence: state [N, H, K, V] and its decay sum scale [N, H] (0: empty). */
export interface RetentionState {
  state: Tensor;
  scale: Tensor;
}

/**
 * How a retention call runs (docs/retention.md). A sequence is a batch row, or with `segments` one of the packed
 * sequences of a batch of one row (fla's cu_seqlens, as lengths summing to T).
 */
export interface RetentionRun {
  /** Chunk size of the chunkwise form. */
  chunkSize: number;
  /**
   * torchscale's normalisers (the state carries S̃ = Z/sqrt(s), Z = Σ_m γ^(n−m) k_mᵀ v_m), or none (fla's RetNet:
   * o = q S, S_t = γ S_{t−1} + k_tᵀ v_t, r = 1; the state is Z itself). Without them every form is the same function.
   */
  normalize: boolean;
  /** The state each sequence continues ([N, H, K, V], [N, H]); null: empty states. */
  initialState: RetentionState | null;
  segments: readonly number[] | null;
  returnFinalState: boolean;
}

export interface AdamWParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step count, for bias correction. */
  step: number;
  /** Multiplies the gradient first (global-norm clipping folded into the update). */
  gradScale: number;
}

export interface Backend {
  readonly name: 'native' | 'reference';
  readonly memory: MemoryTracker;
  supportsDType(dtype: DType): boolean;

  // Storage
  /** A tensor holding a copy of `data` (converted to dtype). */
  fromData(data: ArrayLike<number>, shape: readonly number[], dtype: DType): Tensor;
  zeros(shape: readonly number[], dtype: DType): Tensor;
  /** A host copy of the tensor's elements. */
  read(t: Tensor): DataArray;
  /** In place: overwrites the tensor's elements with `data` (same length), converting to its dtype. */
  write(t: Tensor, data: ArrayLike<number>): void;
  /** A tensor of the same shape sharing the storage (a reshape); the storage lives until both are disposed. */
  view(t: Tensor, shape: readonly number[]): Tensor;
  cast(t: Tensor, dtype: DType): Tensor;

  // Products. a: [..., M, K] ([..., K, M] if transA); b: [..., K, N] ([..., N, K] if transB) with the same leading
  // dims as a, or rank 2 (shared by every batch entry). Result [..., M, N].
  matmul(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor;

  // Elementwise. b's shape is a suffix of a's (broadcast over the leading dims).
  binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor;
  scale(a: Tensor, alpha: number): Tensor;
  /** Sums g over its leading dims down to `shape`, a suffix of g's shape (the gradient of a broadcast). */
  sumToShape(g: Tensor, shape: readonly number[]): Tensor;
  activation(kind: ActivationKind, x: Tensor): Tensor;
  /**
   * An inverted-dropout mask of `shape`: each row of `rowSize` elements is 1/(1−p) where u ≥ p, else 0, with
   * u = fmix32(seed ⊕ row·0x9E3779B9) / 2³² (a counter-based generator: the same mask for a seed on every device).
   */
  dropoutMask(shape: readonly number[], p: number, seed: number, rowSize: number, dtype: DType): Tensor;
  activationBackward(kind: ActivationKind, x: Tensor, g: Tensor): Tensor;

  // Normalisation over the last dim; statistics are [rows] with rows = size / lastDim.
  rmsNorm(x: Tensor, w: Tensor | null, eps: number): { y: Tensor; rstd: Tensor };
  rmsNormBackward(x: Tensor, w: Tensor | null, rstd: Tensor, g: Tensor): { dx: Tensor; dw: Tensor | null };
  layerNorm(x: Tensor, w: Tensor, b: Tensor, eps: number): { y: Tensor; mean: Tensor; rstd: Tensor };
  layerNormBackward(
    x: Tensor,
    w: Tensor,
    mean: Tensor,
    rstd: Tensor,
    g: Tensor,
  ): { dx: Tensor; dw: Tensor; db: Tensor };

  softmax(x: Tensor): Tensor;
  softmaxBackward(y: Tensor, g: Tensor): Tensor;
  /** logits [N, V], targets int32 [N]. loss [N] (0 where ignored), lse [N] (log-sum-exp, kept for backward). */
  crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex: number): { loss: Tensor; lse: Tensor };
  /** g: [N], the gradient of each row's loss. */
  crossEntropyBackward(logits: Tensor, targets: Tensor, lse: Tensor, g: Tensor, ignoreIndex: number): Tensor;

  /** table [V, D], ids int32 [...] -> [..., D]. */
  embedding(table: Tensor, ids: Tensor): Tensor;
  embeddingBackward(g: Tensor, ids: Tensor, vocab: number): Tensor;

  // Layout
  permute(x: Tensor, perm: readonly number[]): Tensor;
  /** In place: for b < blocks, dst[dstOff + b*dstStride, +len) = src[srcOff + b*srcStride, +len). */
  copyBlocks(
    src: Tensor,
    srcOff: number,
    srcStride: number,
    dst: Tensor,
    dstOff: number,
    dstStride: number,
    blocks: number,
    len: number,
  ): void;

  // Optimizer (in place on param, m, v).
  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, p: AdamWParams): void;
  /** Σ x² over every element of every tensor, in one call (the global gradient norm²). */
  sumSquares(xs: readonly Tensor[]): number;

  // Retention (RetNet's multi-scale retention, per head h with decay gammas[h]; see docs/retention.md and
  // ../shared/retnet-spec.md §5). Time-major layouts, as projections produce them: q, k: [B, T, H, K] (already
  // rotated, k already scaled by K^-0.5); v: [B, T, H, V].
  // Every form computes o_n = r_n · U_n with U_n = Σ_{m≤n} γ^(n−m) (q_n·k_m) v_m; the forms differ only in the
  // per-row factor r_n, which is detached (torchscale detaches its normalisers), so one backward serves all forms.
  /**
   * o: [B, T, H, V]; r: [B, H, T] (the row factors, kept for backward); with `run.returnFinalState`, the state after
   * each sequence. See RetentionRun for states, segments and the un-normalised mode.
   */
  retentionForward(
    form: RetentionForm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gammas: readonly number[],
    run: RetentionRun,
  ): { o: Tensor; r: Tensor; finalState: RetentionState | null };
  /** Gradients of o = r ⊙ U for dO: [B, T, H, V]. 'chunkwise' never materialises a T×T matrix. */
  retentionBackward(
    form: RetentionForm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gammas: readonly number[],
    r: Tensor,
    dO: Tensor,
    chunkSize: number,
  ): { dq: Tensor; dk: Tensor; dv: Tensor };
  /**
   * One recurrent step (torchscale's recurrent_forward, spec §5b) for q, k: [B, H, K], v: [B, H, V]. In place on
   * state [B, H, K, V] and scale [B, H] (scale 0 = empty state): s' = sγ + 1, S' = S·sqrt(s)γ/sqrt(s') + kᵀv/sqrt(s').
   * Without normalisation S' = γS + kᵀv (the scale is still counted). Returns o = q S': [B, H, V].
   */
  retentionStep(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    state: Tensor,
    scale: Tensor,
    gammas: readonly number[],
    normalize: boolean,
  ): Tensor;
  /**
   * Rotation of pairs (a, b) of each head, x: [B, T, H, K]: y_a = x_a c − x_b s, y_b = x_b c + x_a s, with c, s read
   * at index a of the cos/sin tables [T, K] or [B, T, K]. 'interleaved': (a, b) = (2j, 2j+1) (torchscale's
   * theta_shift, spec §4); 'halves': (a, b) = (i, i+K/2) (fla-spec §4.3). inverse rotates by the opposite angle (the
   * backward pass).
   */
  rotary(x: Tensor, cos: Tensor, sin: Tensor, pairs: RotaryPairs, inverse: boolean): Tensor;

  // Attention (the Transformer baseline): causal multi-head softmax attention, per head
  // o_i = Σ_{j≤i} P_ij v_j with P_ij = softmax_j(q_i·k_j / sqrt(K)) over j ≤ i. Time-major layouts, as projections
  // produce them: q, k: [B, T, H, K] (rotated), v: [B, T, H, V]. 'naive' materialises P [B, H, T, T] and keeps it for
  // backward. 'flash' (FlashAttention) works in query × key tiles with an online softmax, keeps only the row
  // log-sum-exp L [B, H, T] and recomputes P from it tile by tile in backward, so no T×T buffer ever exists and memory
  // grows linearly with T.
  /** o: [B, T, H, V]; stats: P [B, H, T, T] ('naive') or L [B, H, T] ('flash'), kept for backward. */
  attentionForward(algorithm: AttentionAlgorithm, q: Tensor, k: Tensor, v: Tensor): { o: Tensor; stats: Tensor };
  /** Gradients for dO: [B, T, H, V], given the forward's o and stats. */
  attentionBackward(
    algorithm: AttentionAlgorithm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    stats: Tensor,
    dO: Tensor,
  ): { dq: Tensor; dk: Tensor; dv: Tensor };
  /**
   * KV-cache decoding: q [B, H, K] (one query per row) attends to the first lengths[b] positions of kCache
   * [B, H, C, K] and vCache [B, H, C, V] (1 ≤ lengths[b] ≤ C). Returns o: [B, H, V].
   */
  attentionDecode(q: Tensor, kCache: Tensor, vCache: Tensor, lengths: readonly number[]): Tensor;
}
