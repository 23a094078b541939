// The cpu device's kernels: float32 in the C++ addon (OpenBLAS GEMMs, OpenMP loops; native/cpu/). Outputs are
// allocated here as typed arrays on the cpu device, so memory accounting is the same as the reference device's.

import { ShapeError } from '../../errors.js';
import type { DType } from '../../tensor/dtype.js';
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
import { type CpuAddon, ACTIVATION, ATTENTION_WORK, BINARY_OP, RETENTION_WORK } from './addon.js';
import { DECODE_ROWS, LOWP_FORMAT, NO_SCALES, decodeProduct, lowpAddon, sharedProduct } from './lowp.js';

export class CpuKernels implements Omit<Kernels, 'cast'> {
  constructor(
    private readonly device: HostDevice,
    readonly addon: CpuAddon,
  ) {}

  private f32(t: Tensor): Float32Array {
    return this.device.float(t) as Float32Array;
  }

  private i32(t: Tensor): Int32Array {
    return this.device.raw(t) as Int32Array;
  }

  /** The storage as 4-byte words: layout kernels move int32 and float32 alike, as bit patterns. */
  private words(t: Tensor): Float32Array {
    const a = this.device.raw(t);
    return a instanceof Float32Array ? a : new Float32Array(a.buffer, a.byteOffset, a.length);
  }

  /** A zero-filled output, for kernels that accumulate into it (+=) or that are not audited for full writes. */
  private like(shape: readonly number[]): { t: Tensor; d: Float32Array } {
    const t = this.device.zeros(shape, 'float32');
    return { t, d: this.f32(t) };
  }

  /**
   * An output the kernel overwrites entirely (every element, every thread's share): a recycled buffer skips the zero
   * fill. Tests poison these buffers (`pool.poison`) and compare against the reference, so a kernel that stops writing
   * some element fails there.
   */
  private output(shape: readonly number[], dtype: DType = 'float32'): { t: Tensor; d: Float32Array } {
    // wrap(alloc), not device.empty: the shape comes from inputs the op has validated, so empty's check of it would
    // only add to the allocation that is most of a tiny op's JS time (bench/tiny-turns.ts).
    const t = this.device.wrap(this.device.alloc(dtype, shape, false), shape, dtype);
    return { t, d: this.words(t) };
  }

  matmul(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
    const ra = a.rank;
    const M = transA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
    const K = transA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
    const N = transB ? b.shape[b.rank - 2]! : b.shape[b.rank - 1]!;
    const batch = shapeSize(a.shape.slice(0, -2));
    const { t, d } = this.output([...a.shape.slice(0, -2), M, N]);
    if (batch === 0) return t;
    // A decode-size x · Wᵀ (at most DECODE_ROWS rows against one weight) takes lowp's float32 kernel, which streams W
    // once: OpenBLAS's sgemm reads it at 3-7 GB/s there, the kernel at 13-20 (x [1, 1024] · [4096, 1024]ᵀ from memory:
    // 5.07 -> 1.28 ms on 1 thread, 2.60 -> 0.86 on 2; at 8 rows 5.29 -> 3.37 and 4.08 -> 1.91).
    if (!transA && transB && b.rank === 2 && batch * M <= DECODE_ROWS && N > 0) {
      const x = this.f32(a);
      decodeProduct(
        this.device,
        lowpAddon(this.addon),
        LOWP_FORMAT.float32!,
        -1,
        N,
        K,
        batch * M,
        this.f32(b),
        NO_SCALES,
        x,
        d,
      );
      return t;
    }
    const bStride = b.rank > 2 ? K * N : 0;
    // Row-major leading dimensions are the stored row lengths.
    const lda = Math.max(1, a.shape[ra - 1]!);
    const ldb = Math.max(1, b.shape[b.rank - 1]!);
    this.addon.sgemm(
      transA, transB, M, N, K, 1, this.f32(a), 0, lda, M * K,
      this.f32(b), 0, ldb, bStride, 0, d, 0, Math.max(1, N), M * N, batch,
    ); // prettier-ignore
    return t;
  }

  matmulShared(x: Tensor, ws: readonly Tensor[]): Tensor[] {
    return sharedProduct(this.device, this.addon, x, ws);
  }

  binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
    const { t, d } = this.output(a.shape);
    this.addon.binary(BINARY_OP[op], this.f32(a), this.f32(b), d, a.size, b.size);
    return t;
  }

  scale(a: Tensor, alpha: number): Tensor {
    const { t, d } = this.output(a.shape);
    this.addon.scale(this.f32(a), d, alpha, a.size);
    return t;
  }

  sumToShape(g: Tensor, shape: readonly number[]): Tensor {
    const { t, d } = this.output(shape);
    const m = shapeSize(shape);
    if (m > 0) this.addon.sumRows(this.f32(g), d, g.size / m, m);
    return t;
  }

  activation(kind: ActivationKind, x: Tensor): Tensor {
    const { t, d } = this.output(x.shape);
    this.addon.activation(ACTIVATION[kind], this.f32(x), d, x.size);
    return t;
  }

  activationBackward(kind: ActivationKind, x: Tensor, g: Tensor): Tensor {
    const { t, d } = this.output(x.shape);
    this.addon.activationBackward(ACTIVATION[kind], this.f32(x), this.f32(g), d, x.size);
    return t;
  }

  private rowsOf(x: Tensor): { rows: number; cols: number } {
    const cols = x.shape[x.rank - 1] ?? 1;
    return { rows: cols === 0 ? 0 : x.size / cols, cols };
  }

  private static readonly EMPTY = new Float32Array(0);

  rmsNorm(x: Tensor, w: Tensor | null, eps: number): { y: Tensor; rstd: Tensor } {
    const { rows, cols } = this.rowsOf(x);
    const y = this.output(x.shape);
    const rstd = this.output([rows]);
    const wd = w ? this.f32(w) : CpuKernels.EMPTY;
    this.addon.rmsNorm(this.f32(x), wd, y.d, rstd.d, rows, cols, eps, w !== null);
    return { y: y.t, rstd: rstd.t };
  }

  rmsNormBackward(x: Tensor, w: Tensor | null, rstd: Tensor, g: Tensor): { dx: Tensor; dw: Tensor | null } {
    const { rows, cols } = this.rowsOf(x);
    const dx = this.output(x.shape);
    const dw = w ? this.like(w.shape) : null;
    const wd = w ? this.f32(w) : CpuKernels.EMPTY;
    this.addon.rmsNormBackward(
      this.f32(x), wd, this.f32(rstd), this.f32(g), dx.d, dw ? dw.d : CpuKernels.EMPTY, rows, cols, w !== null,
    ); // prettier-ignore
    return { dx: dx.t, dw: dw ? dw.t : null };
  }

  gatedRmsNorm(x: Tensor, gate: Tensor, w: Tensor | null, eps: number): { y: Tensor; rstd: Tensor } {
    const { rows, cols } = this.rowsOf(x);
    const y = this.output(x.shape);
    const rstd = this.output([rows]);
    const wd = w ? this.f32(w) : CpuKernels.EMPTY;
    this.addon.gatedRmsNorm(this.f32(x), this.f32(gate), wd, y.d, rstd.d, rows, cols, eps, w !== null);
    return { y: y.t, rstd: rstd.t };
  }

  gatedRmsNormBackward(
    x: Tensor,
    gate: Tensor,
    w: Tensor | null,
    rstd: Tensor,
    g: Tensor,
  ): { dx: Tensor; dgate: Tensor; dw: Tensor | null } {
    const { rows, cols } = this.rowsOf(x);
    const dx = this.output(x.shape);
    const dgate = this.output(x.shape);
    const dw = w ? this.like(w.shape) : null;
    const wd = w ? this.f32(w) : CpuKernels.EMPTY;
    this.addon.gatedRmsNormBackward(
      this.f32(x), this.f32(gate), wd, this.f32(rstd), this.f32(g), dx.d, dgate.d, dw ? dw.d : CpuKernels.EMPTY,
      rows, cols, w !== null,
    ); // prettier-ignore
    return { dx: dx.t, dgate: dgate.t, dw: dw ? dw.t : null };
  }

  softmax(x: Tensor): Tensor {
    const { rows, cols } = this.rowsOf(x);
    const { t, d } = this.output(x.shape);
    this.addon.softmax(this.f32(x), d, rows, cols);
    return t;
  }

  softmaxBackward(y: Tensor, g: Tensor): Tensor {
    const { rows, cols } = this.rowsOf(y);
    const { t, d } = this.output(y.shape);
    this.addon.softmaxBackward(this.f32(y), this.f32(g), d, rows, cols);
    return t;
  }

  crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex: number): { loss: Tensor; lse: Tensor } {
    const [N, V] = logits.shape as [number, number];
    const loss = this.output([N]);
    const lse = this.output([N]);
    this.addon.crossEntropy(this.f32(logits), this.i32(targets), loss.d, lse.d, N, V, ignoreIndex);
    return { loss: loss.t, lse: lse.t };
  }

  crossEntropyBackward(logits: Tensor, targets: Tensor, lse: Tensor, g: Tensor, ignoreIndex: number): Tensor {
    const [N, V] = logits.shape as [number, number];
    const { t, d } = this.output(logits.shape);
    this.addon.crossEntropyBackward(
      this.f32(logits), this.i32(targets), this.f32(lse), this.f32(g), d, N, V, ignoreIndex,
    ); // prettier-ignore
    return t;
  }

  embedding(table: Tensor, ids: Tensor): Tensor {
    const [V, D] = table.shape as [number, number];
    const { t, d } = this.output([...ids.shape, D]);
    this.addon.embedding(this.f32(table), this.i32(ids), d, ids.size, D, V);
    return t;
  }

  embeddingBackward(g: Tensor, ids: Tensor, vocab: number): Tensor {
    const D = g.shape[g.rank - 1]!;
    const { t, d } = this.like([vocab, D]);
    this.addon.embeddingBackward(this.f32(g), this.i32(ids), d, ids.size, D, vocab);
    return t;
  }

  permute(x: Tensor, perm: readonly number[]): Tensor {
    const outShape = perm.map((p) => x.shape[p]!);
    if (x.rank > 8) throw new ShapeError(`permute: rank ${x.rank} exceeds the cpu kernel's limit of 8`);
    const out = this.output(outShape, x.dtype);
    this.addon.permute(this.words(x), out.d, Int32Array.from(x.shape), Int32Array.from(perm));
    return out.t;
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
    this.addon.copyBlocks(this.words(src), srcOff, srcStride, this.words(dst), dstOff, dstStride, blocks, len);
  }

  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, p: AdamWParams): void {
    this.addon.adamw(
      this.f32(param), this.f32(grad), this.f32(m), this.f32(v), param.size,
      p.lr, p.beta1, p.beta2, p.eps, p.weightDecay, p.step, p.gradScale,
    ); // prettier-ignore
  }

  dropout(x: Tensor, p: number, seed: number, rowSize: number): Tensor {
    const out = this.output(x.shape);
    this.addon.dropout(this.f32(x), out.d, out.t.size, rowSize, p, seed >>> 0);
    return out.t;
  }

  sumSquares(xs: readonly Tensor[]): number {
    return this.addon.sumSquares(xs.map((x) => this.f32(x)));
  }

  /** Scratch for a retention kernel, as a tensor so that memory accounting counts it while the kernel runs. */
  private workspace(
    kernel: (typeof RETENTION_WORK)[keyof typeof RETENTION_WORK],
    B: number,
    H: number,
    T: number,
    K: number,
    V: number,
    C: number,
  ) {
    return this.like([this.addon.retentionWorkspace(kernel, B, H, T, K, V, C)]);
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
    const N = run.segments ? run.segments.length : B;
    const o = this.like([B, T, H, V]);
    const r = this.like([B, H, T]);
    const final = run.returnFinalState ? { state: this.like([N, H, K, V]), scale: this.like([N, H]) } : null;
    const ws = this.workspace(
      form === 'parallel' ? RETENTION_WORK.parallelForward : RETENTION_WORK.chunkwiseForward,
      N,
      H,
      T,
      K,
      V,
      run.chunkSize,
    );
    const none = new Float32Array(0);
    const args = [
      this.f32(q), this.f32(k), this.f32(v), Float64Array.from(gammas), o.d, r.d, ws.d,
      run.initialState ? this.f32(run.initialState.state) : none,
      run.initialState ? this.f32(run.initialState.scale) : none,
      final ? final.state.d : none, final ? final.scale.d : none,
      Float64Array.from(run.segments ?? []), B, H, T, K, V, run.normalize,
    ] as const; // prettier-ignore
    if (form === 'parallel') this.addon.retentionParallel(...args);
    else this.addon.retentionChunkwise(...args, run.chunkSize);
    ws.t.dispose();
    return { o: o.t, r: r.t, finalState: final ? { state: final.state.t, scale: final.scale.t } : null };
  }

  retentionBackward(
    form: RetentionForm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gammas: readonly number[],
    r: Tensor,
    dO: Tensor,
    chunkSize: number,
  ): { dq: Tensor; dk: Tensor; dv: Tensor } {
    const [B, T, H, K] = q.shape as [number, number, number, number];
    const V = v.shape[3]!;
    const dq = this.like(q.shape);
    const dk = this.like(k.shape);
    const dv = this.like(v.shape);
    const ws = this.workspace(
      form === 'parallel' ? RETENTION_WORK.parallelBackward : RETENTION_WORK.chunkwiseBackward,
      B,
      H,
      T,
      K,
      V,
      chunkSize,
    );
    const args = [
      this.f32(q), this.f32(k), this.f32(v), Float64Array.from(gammas), this.f32(r), this.f32(dO),
      dq.d, dk.d, dv.d, ws.d, B, H, T, K, V,
    ] as const; // prettier-ignore
    if (form === 'parallel') this.addon.retentionBackwardParallel(...args);
    else this.addon.retentionBackwardChunkwise(...args, chunkSize);
    ws.t.dispose();
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
    const o = this.like([B, H, V]);
    const S = state.dtype === 'float16' ? (this.device.raw(state) as Uint16Array) : this.f32(state);
    this.addon.retentionStep(
      this.f32(q), this.f32(k), this.f32(v), Float64Array.from(gammas), S, this.f32(scale), o.d, B, H, K, V, normalize,
    ); // prettier-ignore
    return o.t;
  }

  rotary(x: Tensor, cos: Tensor, sin: Tensor, pairs: RotaryPairs, inverse: boolean): Tensor {
    const [B, T, H, K] = x.shape as [number, number, number, number];
    const y = this.like(x.shape);
    const halves = pairs === 'halves';
    this.addon.rotary(this.f32(x), this.f32(cos), this.f32(sin), y.d, B, T, H, K, cos.rank === 3, halves, inverse);
    return y.t;
  }

  /** Scratch for an attention kernel, counted while the kernel runs. */
  private attentionWorkspace(
    kernel: (typeof ATTENTION_WORK)[keyof typeof ATTENTION_WORK],
    B: number,
    H: number,
    T: number,
    V: number,
  ) {
    return this.like([this.addon.attentionWorkspace(kernel, B, H, T, V)]);
  }

  attentionForward(algorithm: AttentionAlgorithm, q: Tensor, k: Tensor, v: Tensor): { o: Tensor; stats: Tensor } {
    const [B, T, H, K] = q.shape as [number, number, number, number];
    const V = v.shape[3]!;
    const o = this.like([B, T, H, V]);
    if (algorithm === 'naive') {
      const p = this.like([B, H, T, T]);
      this.addon.attentionNaive(this.f32(q), this.f32(k), this.f32(v), o.d, p.d, B, H, T, K, V);
      return { o: o.t, stats: p.t };
    }
    const lse = this.like([B, H, T]);
    const ws = this.attentionWorkspace(ATTENTION_WORK.flashForward, B, H, T, V);
    this.addon.attentionFlash(this.f32(q), this.f32(k), this.f32(v), o.d, lse.d, ws.d, B, H, T, K, V);
    ws.t.dispose();
    return { o: o.t, stats: lse.t };
  }

  attentionBackward(
    algorithm: AttentionAlgorithm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    stats: Tensor,
    dO: Tensor,
  ): { dq: Tensor; dk: Tensor; dv: Tensor } {
    const [B, T, H, K] = q.shape as [number, number, number, number];
    const V = v.shape[3]!;
    const dq = this.like(q.shape);
    const dk = this.like(k.shape);
    const dv = this.like(v.shape);
    const ws = this.attentionWorkspace(
      algorithm === 'naive' ? ATTENTION_WORK.naiveBackward : ATTENTION_WORK.flashBackward,
      B,
      H,
      T,
      V,
    );
    const [fq, fk, fv, fs, fg] = [this.f32(q), this.f32(k), this.f32(v), this.f32(stats), this.f32(dO)];
    if (algorithm === 'naive')
      this.addon.attentionNaiveBackward(fq, fk, fv, fs, fg, dq.d, dk.d, dv.d, ws.d, B, H, T, K, V);
    else this.addon.attentionFlashBackward(fq, fk, fv, this.f32(o), fs, fg, dq.d, dk.d, dv.d, ws.d, B, H, T, K, V);
    ws.t.dispose();
    return { dq: dq.t, dk: dk.t, dv: dv.t };
  }

  attentionDecode(q: Tensor, kCache: Tensor, vCache: Tensor, lengths: readonly number[]): Tensor {
    const [B, H, C, K] = kCache.shape as [number, number, number, number];
    const V = vCache.shape[3]!;
    const o = this.like([B, H, V]);
    const ws = this.attentionWorkspace(ATTENTION_WORK.decode, B, H, C, V);
    this.addon.attentionDecode(
      this.f32(q), this.f32(kCache), this.f32(vCache), Int32Array.from(lengths), o.d, ws.d, B, H, C, K, V,
    ); // prettier-ignore
    ws.t.dispose();
    return o.t;
  }
}
