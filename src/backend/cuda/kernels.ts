// The cuda device's kernels: every kernel of the table in native/cuda/ (GEMMs through cuBLAS, the rest our own),
// float32 (int32 for the layout kernels; casts and products for bfloat16 and float16 too). Outputs are device tensors
// the kernels overwrite entirely; scratch is a device tensor too, so memory accounting sees it while a kernel runs.
// Kernels missing here (dropout for float32; all but the products for the 16-bit dtypes) fall back through
// the kernel table (kernels.ts): the 16-bit ones to the float32 kernels on device casts, others to the reference
// kernels, visibly.

import { BackendError, DTypeError, ShapeError } from '../../errors.js';
import type { DType } from '../../tensor/dtype.js';
import { type Tensor, shapeSize } from '../../tensor/tensor.js';
import type {
  ActivationKind,
  AdamWParams,
  AttentionAlgorithm,
  BinaryOp,
  Kernels,
  RetentionForm,
  RetentionRun,
  RetentionState,
  RotaryPairs,
} from '../kernels.js';
import { ACTIVATION, ATTENTION_WORK, BINARY_OP, RETENTION_WORK } from '../cpu/addon.js';
import type { CudaDevice } from './device.js';

// The addon's float dtype codes (native/cuda/device.h DType).
const FLOAT_CODE: Partial<Record<DType, number>> = { float32: 0, bfloat16: 1, float16: 2 };

// The most rows of a weight product that take the gemv16 kernel (native/cuda/device.h kGemvMaxRows).
const GEMV_MAX_ROWS = 8;

// The chunk the parallel form runs with where it takes the chunkwise kernels (its backward always, its forward
// without normalisation): the same function, the chunk sets only speed.
const PARALLEL_CHUNK = 64;

// dropout has no cuda kernel yet: the kernel table runs the reference one through a host copy. matmulShared neither
// (a decode-step fusion of the cpu device): linearShared runs linear weight by weight where the device lacks it.
export class CudaKernels implements Omit<Kernels, 'dropout' | 'matmulShared'> {
  constructor(private readonly d: CudaDevice) {}

  private out(shape: readonly number[], dtype: DType = 'float32'): Tensor {
    return this.d.empty(shape, dtype);
  }

  private f32(t: Tensor): number {
    if (t.dtype !== 'float32') throw new DTypeError(`cuda device: expected a float32 tensor, got ${t.dtype}`);
    return this.d.ptr(t);
  }

  private i32(t: Tensor): number {
    if (t.dtype !== 'int32') throw new DTypeError(`cuda device: expected an int32 tensor, got ${t.dtype}`);
    return this.d.ptr(t);
  }

  cast(t: Tensor, dtype: DType): Tensor {
    if (t.dtype === dtype) {
      const out = this.d.empty(t.shape, dtype);
      this.d.copy(t, 0, out, 0, t.size);
      return out;
    }
    const from = FLOAT_CODE[t.dtype];
    const to = FLOAT_CODE[dtype];
    if (from === undefined || to === undefined)
      // float <-> int32 casts are rare (host-built ids); they go through the host.
      return this.d.fromData(this.d.read(t), t.shape, dtype);
    const out = this.d.empty(t.shape, dtype);
    if (t.size > 0) this.d.addon.convert(from, this.d.ptr(t), to, this.d.ptr(out), t.size);
    return out;
  }

  matmul(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
    this.f32(a);
    this.f32(b);
    return this.gemm(a, b, transA, transB, 'float32');
  }

  /**
   * A product with 16-bit operands (bfloat16 or float16) on tensor cores, float32 accumulation: a weight product
   * (float32 a, 16-bit b: linear() with a stored weight) gives float32, as on the host devices; two 16-bit operands
   * give their dtype. A weight product keeps x's float32 precision, as the host devices (which widen the weight) do:
   * at most 8 rows (decode steps) through gemv16, which reads x as float32; more rows as x = hi + lo, two 16-bit
   * parts stacked into one tensor-core GEMM of twice the rows, whose halves are added (x's error 2^-17 relative for
   * bfloat16; the fla vectors' BF16 checkpoints hold 1e-4 on this device only so). With `roundActivations` x is
   * rounded to the weight's dtype instead (2^-9 relative for bfloat16, half the arithmetic: PyTorch's bf16 regime).
   * Other layouts with a float32 operand (transposed x, a batch of weights) widen the weight and run in float32.
   */
  matmul16(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
    const dt = b.dtype === 'bfloat16' || b.dtype === 'float16' ? b.dtype : a.dtype;
    for (const t of [a, b])
      if (t.dtype !== dt && t.dtype !== 'float32')
        throw new DTypeError(`matmul: cannot multiply ${a.dtype} by ${b.dtype} on the cuda device`);
    const rows = this.weightRows(a, b, transA, transB);
    if (rows) return rows;
    if (a.dtype === 'float32' && b.dtype !== 'float32' && !this.d.roundActivations) {
      if (b.rank !== 2 || transA) {
        const b32 = this.cast(b, 'float32');
        const y = this.gemm(a, b32, transA, transB, 'float32');
        b32.dispose();
        return y;
      }
      return this.splitProduct(a, b, transB);
    }
    const a16 = a.dtype === dt ? a : this.cast(a, dt);
    const b16 = b.dtype === dt ? b : this.cast(b, dt);
    const y = this.gemm(a16, b16, transA, transB, a.dtype === 'float32' ? 'float32' : dt);
    if (a16 !== a) a16.dispose();
    if (b16 !== b) b16.dispose();
    return y;
  }

  /** x · op(W) for a float32 x [..., K] and a 16-bit W: [hi; lo] · op(W) in one GEMM, then hi·W + lo·W. */
  private splitProduct(a: Tensor, b: Tensor, transB: boolean): Tensor {
    const K = a.shape[a.rank - 1]!;
    const N = transB ? b.shape[0]! : b.shape[1]!;
    const rows = K === 0 ? 0 : a.size / K;
    const shape = [...a.shape.slice(0, -1), N];
    if (rows === 0 || N === 0 || K === 0) return this.d.zeros(shape, 'float32');
    const parts = this.out([2 * rows, K], b.dtype);
    this.d.addon.split16(this.d.ptr(a), FLOAT_CODE[b.dtype]!, this.d.ptr(parts), rows * K);
    const both = this.gemm(parts, b, false, transB, 'float32');
    parts.dispose();
    const out = this.out(shape);
    const p = this.d.ptr(both);
    this.d.addon.binary(BINARY_OP.add, p, p + rows * N * 4, this.d.ptr(out), rows * N, rows * N);
    both.dispose();
    return out;
  }

  /**
   * A decode step's weight product, x · Wᵀ with a float32 x of at most GEMV_MAX_ROWS rows and a 16-bit weight
   * [N, K]: one launch of the addon's gemv16 (x not rounded; W read once), or null where it does not apply.
   */
  private weightRows(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor | null {
    if (a.dtype !== 'float32' || b.dtype === 'float32' || transA || !transB || b.rank !== 2) return null;
    const K = a.shape[a.rank - 1]!;
    const rows = a.size / Math.max(K, 1);
    const N = b.shape[0]!;
    if (rows < 1 || rows > GEMV_MAX_ROWS || K === 0 || b.shape[1] !== K) return null;
    const out = this.out([...a.shape.slice(0, -1), N]);
    if (this.d.addon.gemv16(FLOAT_CODE[b.dtype]!, this.d.ptr(a), this.d.ptr(b), this.d.ptr(out), rows, N, K))
      return out;
    out.dispose();
    return null;
  }

  /** op(a)·op(b) through cuBLAS, a and b of one dtype, the result in outDtype. Shapes as Kernels.matmul. */
  private gemm(a: Tensor, b: Tensor, transA: boolean, transB: boolean, outDtype: DType): Tensor {
    const ra = a.rank;
    const M = transA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
    const K = transA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
    const N = transB ? b.shape[b.rank - 2]! : b.shape[b.rank - 1]!;
    const batch = shapeSize(a.shape.slice(0, -2));
    const shape = [...a.shape.slice(0, -2), M, N];
    if (K === 0 || shapeSize(shape) === 0) return this.d.zeros(shape, outDtype);
    const out = this.out(shape, outDtype);
    const [dt, odt] = [FLOAT_CODE[a.dtype]!, FLOAT_CODE[outDtype]!];
    const lda = a.shape[ra - 1]!;
    const ldb = b.shape[b.rank - 1]!;
    if (b.rank === 2 && !transA) {
      // A shared right operand: the batch folds into the rows, one GEMM instead of `batch` small ones.
      this.d.addon.gemm(dt, false, transB, batch * M, N, K, 1, this.d.ptr(a), lda, 0, this.d.ptr(b), ldb, 0,
        0, this.d.ptr(out), N, 0, 1, this.d.tf32, odt); // prettier-ignore
      return out;
    }
    const bStride = b.rank > 2 ? K * N : 0;
    this.d.addon.gemm(dt, transA, transB, M, N, K, 1, this.d.ptr(a), lda, M * K, this.d.ptr(b), ldb, bStride,
      0, this.d.ptr(out), N, M * N, batch, this.d.tf32, odt); // prettier-ignore
    return out;
  }

  binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
    const out = this.out(a.shape);
    this.d.addon.binary(BINARY_OP[op], this.f32(a), this.f32(b), this.d.ptr(out), a.size, b.size);
    return out;
  }

  scale(a: Tensor, alpha: number): Tensor {
    const out = this.out(a.shape);
    this.d.addon.scale(this.f32(a), this.d.ptr(out), alpha, a.size);
    return out;
  }

  sumToShape(g: Tensor, shape: readonly number[]): Tensor {
    const out = this.out(shape);
    const m = shapeSize(shape);
    if (m > 0) this.d.addon.sumRows(this.f32(g), this.d.ptr(out), g.size / m, m);
    return out;
  }

  activation(kind: ActivationKind, x: Tensor): Tensor {
    const out = this.out(x.shape);
    this.d.addon.activation(ACTIVATION[kind], this.f32(x), this.d.ptr(out), x.size);
    return out;
  }

  activationBackward(kind: ActivationKind, x: Tensor, g: Tensor): Tensor {
    const out = this.out(x.shape);
    this.d.addon.activationBackward(ACTIVATION[kind], this.f32(x), this.f32(g), this.d.ptr(out), x.size);
    return out;
  }

  private rowsOf(x: Tensor): { rows: number; cols: number } {
    const cols = x.shape[x.rank - 1] ?? 1;
    return { rows: cols === 0 ? 0 : x.size / cols, cols };
  }

  rmsNorm(x: Tensor, w: Tensor | null, eps: number): { y: Tensor; rstd: Tensor } {
    const { rows, cols } = this.rowsOf(x);
    const y = this.out(x.shape);
    const rstd = this.out([rows]);
    this.d.addon.rmsNorm(this.f32(x), w ? this.f32(w) : 0, this.d.ptr(y), this.d.ptr(rstd), rows, cols, eps);
    return { y, rstd };
  }

  rmsNormBackward(x: Tensor, w: Tensor | null, rstd: Tensor, g: Tensor): { dx: Tensor; dw: Tensor | null } {
    const { rows, cols } = this.rowsOf(x);
    const dx = this.out(x.shape);
    const dw = w ? this.out(w.shape) : null;
    this.d.addon.rmsNormBackward(
      this.f32(x), w ? this.f32(w) : 0, this.f32(rstd), this.f32(g), this.d.ptr(dx), dw ? this.d.ptr(dw) : 0, rows, cols,
    ); // prettier-ignore
    return { dx, dw };
  }

  gatedRmsNorm(x: Tensor, gate: Tensor, w: Tensor | null, eps: number): { y: Tensor; rstd: Tensor } {
    const { rows, cols } = this.rowsOf(x);
    const y = this.out(x.shape);
    const rstd = this.out([rows]);
    this.d.addon.gatedRmsNorm(
      this.f32(x), this.f32(gate), w ? this.f32(w) : 0, this.d.ptr(y), this.d.ptr(rstd), rows, cols, eps,
    ); // prettier-ignore
    return { y, rstd };
  }

  gatedRmsNormBackward(
    x: Tensor,
    gate: Tensor,
    w: Tensor | null,
    rstd: Tensor,
    g: Tensor,
  ): { dx: Tensor; dgate: Tensor; dw: Tensor | null } {
    const { rows, cols } = this.rowsOf(x);
    const dx = this.out(x.shape);
    const dgate = this.out(x.shape);
    const dw = w ? this.out(w.shape) : null;
    this.d.addon.gatedRmsNormBackward(
      this.f32(x), this.f32(gate), w ? this.f32(w) : 0, this.f32(rstd), this.f32(g), this.d.ptr(dx),
      this.d.ptr(dgate), dw ? this.d.ptr(dw) : 0, rows, cols,
    ); // prettier-ignore
    return { dx, dgate, dw };
  }

  layerNorm(x: Tensor, w: Tensor, b: Tensor, eps: number): { y: Tensor; mean: Tensor; rstd: Tensor } {
    const { rows, cols } = this.rowsOf(x);
    const y = this.out(x.shape);
    const mean = this.out([rows]);
    const rstd = this.out([rows]);
    this.d.addon.layerNorm(
      this.f32(x), this.f32(w), this.f32(b), this.d.ptr(y), this.d.ptr(mean), this.d.ptr(rstd), rows, cols, eps,
    ); // prettier-ignore
    return { y, mean, rstd };
  }

  layerNormBackward(
    x: Tensor,
    w: Tensor,
    mean: Tensor,
    rstd: Tensor,
    g: Tensor,
  ): { dx: Tensor; dw: Tensor; db: Tensor } {
    const { rows, cols } = this.rowsOf(x);
    const dx = this.out(x.shape);
    const dw = this.out(w.shape);
    const db = this.out(w.shape);
    this.d.addon.layerNormBackward(
      this.f32(x), this.f32(w), this.f32(mean), this.f32(rstd), this.f32(g), this.d.ptr(dx), this.d.ptr(dw),
      this.d.ptr(db), rows, cols,
    ); // prettier-ignore
    return { dx, dw, db };
  }

  softmax(x: Tensor): Tensor {
    const { rows, cols } = this.rowsOf(x);
    const out = this.out(x.shape);
    this.d.addon.softmax(this.f32(x), this.d.ptr(out), rows, cols);
    return out;
  }

  softmaxBackward(y: Tensor, g: Tensor): Tensor {
    const { rows, cols } = this.rowsOf(y);
    const out = this.out(y.shape);
    this.d.addon.softmaxBackward(this.f32(y), this.f32(g), this.d.ptr(out), rows, cols);
    return out;
  }

  crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex: number): { loss: Tensor; lse: Tensor } {
    const [N, V] = logits.shape as [number, number];
    const loss = this.out([N]);
    const lse = this.out([N]);
    const bad = this.d.addon.crossEntropy(
      this.f32(logits), this.i32(targets), this.d.ptr(loss), this.d.ptr(lse), N, V, ignoreIndex,
    ); // prettier-ignore
    if (bad >= 0) {
      const id = this.d.read(targets)[bad]!;
      loss.dispose();
      lse.dispose();
      throw new BackendError(`crossEntropy: target ${id} at position ${bad} is outside the vocabulary [0, ${V})`);
    }
    return { loss, lse };
  }

  crossEntropyBackward(logits: Tensor, targets: Tensor, lse: Tensor, g: Tensor, ignoreIndex: number): Tensor {
    const [N, V] = logits.shape as [number, number];
    const out = this.out(logits.shape);
    this.d.addon.crossEntropyBackward(
      this.f32(logits), this.i32(targets), this.f32(lse), this.f32(g), this.d.ptr(out), N, V, ignoreIndex,
    ); // prettier-ignore
    return out;
  }

  embedding(table: Tensor, ids: Tensor): Tensor {
    const [V, D] = table.shape as [number, number];
    const out = this.out([...ids.shape, D]);
    const bad = this.d.addon.embedding(this.f32(table), this.i32(ids), this.d.ptr(out), ids.size, D, V);
    if (bad >= 0) {
      const id = this.d.read(ids)[bad]!;
      out.dispose();
      throw new BackendError(`embedding: token id ${id} at position ${bad} is outside the vocabulary [0, ${V})`);
    }
    return out;
  }

  embeddingBackward(g: Tensor, ids: Tensor, vocab: number): Tensor {
    const D = g.shape[g.rank - 1]!;
    const out = this.out([vocab, D]);
    this.d.addon.embeddingBackward(this.f32(g), this.i32(ids), this.d.ptr(out), ids.size, D, vocab);
    return out;
  }

  permute(x: Tensor, perm: readonly number[]): Tensor {
    if (x.rank > 8) throw new ShapeError(`permute: rank ${x.rank} exceeds the cuda limit of 8`);
    const out = this.out(
      perm.map((p) => x.shape[p]!),
      x.dtype,
    );
    this.d.addon.permute(this.d.ptr(x), this.d.ptr(out), Int32Array.from(x.shape), Int32Array.from(perm));
    return out;
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
    this.d.addon.copyBlocks(this.d.ptr(src), srcOff, srcStride, this.d.ptr(dst), dstOff, dstStride, blocks, len);
  }

  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, p: AdamWParams): void {
    this.adamwMany([param], [grad], [m], [v], p);
  }

  /** AdamW over many parameters in one launch (per 256 tensors). */
  adamwMany(params: Tensor[], grads: Tensor[], m: Tensor[], v: Tensor[], p: AdamWParams): void {
    const ptrs = (ts: Tensor[]) => ts.map((t) => this.f32(t));
    this.d.addon.adamw(
      ptrs(params), ptrs(grads), ptrs(m), ptrs(v), params.map((t) => t.size),
      p.lr, p.beta1, p.beta2, p.eps, p.weightDecay, p.step, p.gradScale,
    ); // prettier-ignore
  }

  sumSquares(xs: readonly Tensor[]): number {
    // One addon call per tensor (no fused multi-tensor kernel on this device yet).
    let s = 0;
    for (const x of xs) s += this.d.addon.sumSquares(this.f32(x), x.size);
    return s;
  }

  /** Scratch for a kernel, as a tensor so that memory accounting counts it while the kernel runs. */
  private scratch(floats: number): Tensor {
    return this.out([floats]);
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
    const o = this.out([B, T, H, V]);
    const r = this.out([B, H, T]);
    const final = run.returnFinalState ? { state: this.out([N, H, K, V]), scale: this.out([N, H]) } : null;
    // Without normalisation every form is the same function, which the chunkwise kernels compute in O(T C) (the
    // parallel kernel's O(T²) took 584 ms for the chunkwise kernels' 8.9 at B 2 H 16 T 8192 D 128: stop 28, run 2).
    const f = form === 'parallel' && run.normalize ? RETENTION_WORK.parallelForward : RETENTION_WORK.chunkwiseForward;
    const C = form === 'parallel' ? PARALLEL_CHUNK : run.chunkSize;
    const tc = this.d.bf16Retention;
    const ws = this.scratch(this.d.addon.retentionWorkspace(f, B, H, T, K, V, C, tc));
    const init = run.initialState;
    this.d.addon.retentionForward(f, this.f32(q), this.f32(k), this.f32(v), Float64Array.from(gammas),
      this.d.ptr(o), this.d.ptr(r), this.d.ptr(ws), init ? this.f32(init.state) : 0, init ? this.f32(init.scale) : 0,
      final ? this.d.ptr(final.state) : 0, final ? this.d.ptr(final.scale) : 0, Float64Array.from(run.segments ?? []),
      B, H, T, K, V, C, run.normalize, tc); // prettier-ignore
    ws.dispose();
    return { o, r, finalState: final };
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
    const C = form === 'parallel' ? PARALLEL_CHUNK : chunkSize;
    const dq = this.out(q.shape);
    const dk = this.out(k.shape);
    const dv = this.out(v.shape);
    const tc = this.d.bf16Retention;
    const ws = this.scratch(this.d.addon.retentionWorkspace(RETENTION_WORK.chunkwiseBackward, B, H, T, K, V, C, tc));
    this.d.addon.retentionBackward(
      this.f32(q), this.f32(k), this.f32(v), Float64Array.from(gammas), this.f32(r), this.f32(dO),
      this.d.ptr(dq), this.d.ptr(dk), this.d.ptr(dv), this.d.ptr(ws), B, H, T, K, V, C, tc,
    ); // prettier-ignore
    ws.dispose();
    return { dq, dk, dv };
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
    const o = this.out([B, H, V]);
    const half = state.dtype === 'float16'; // a 16-bit state (ops/retention.ts)
    this.d.addon.retentionStep(this.f32(q), this.f32(k), this.f32(v), Float64Array.from(gammas),
      half ? this.d.ptr(state) : this.f32(state), this.f32(scale), this.d.ptr(o), B, H, K, V, normalize, half); // prettier-ignore
    return o;
  }

  rotary(x: Tensor, cos: Tensor, sin: Tensor, pairs: RotaryPairs, inverse: boolean): Tensor {
    const [B, T, H, K] = x.shape as [number, number, number, number];
    const y = this.out(x.shape);
    this.d.addon.rotary(this.f32(x), this.f32(cos), this.f32(sin), this.d.ptr(y), B, T, H, K, cos.rank === 3, inverse,
      pairs === 'halves'); // prettier-ignore
    return y;
  }

  attentionForward(algorithm: AttentionAlgorithm, q: Tensor, k: Tensor, v: Tensor): { o: Tensor; stats: Tensor } {
    const [B, T, H, K] = q.shape as [number, number, number, number];
    const V = v.shape[3]!;
    const o = this.out([B, T, H, V]);
    const stats = this.out(algorithm === 'naive' ? [B, H, T, T] : [B, H, T]);
    const work = algorithm === 'naive' ? ATTENTION_WORK.naiveForward : ATTENTION_WORK.flashForward;
    this.d.addon.attentionForward(work, this.f32(q), this.f32(k), this.f32(v), this.d.ptr(o),
      this.d.ptr(stats), B, H, T, K, V); // prettier-ignore
    return { o, stats };
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
    const dq = this.out(q.shape);
    const dk = this.out(k.shape);
    const dv = this.out(v.shape);
    const work = algorithm === 'naive' ? ATTENTION_WORK.naiveBackward : ATTENTION_WORK.flashBackward;
    const ws = this.scratch(this.d.addon.attentionWorkspace(work, B, H, T, K, V));
    this.d.addon.attentionBackward(
      work, this.f32(q), this.f32(k), this.f32(v), this.f32(o), this.f32(stats),
      this.f32(dO), this.d.ptr(dq), this.d.ptr(dk), this.d.ptr(dv), this.d.ptr(ws), B, H, T, K, V,
    ); // prettier-ignore
    ws.dispose();
    return { dq, dk, dv };
  }

  attentionDecode(q: Tensor, kCache: Tensor, vCache: Tensor, lengths: readonly number[]): Tensor {
    const [B, H, C, K] = kCache.shape as [number, number, number, number];
    const V = vCache.shape[3]!;
    for (const n of lengths)
      if (!Number.isInteger(n) || n < 1 || n > C)
        throw new ShapeError(`attentionDecode: every length must lie in [1, ${C}], got ${n}`);
    const o = this.out([B, H, V]);
    const lens = this.d.fromData(lengths, [B], 'int32');
    const ws = this.scratch(this.d.addon.attentionWorkspace(ATTENTION_WORK.decode, B, H, C, K, V));
    this.d.addon.attentionDecode(this.f32(q), this.f32(kCache), this.f32(vCache), this.d.ptr(lens), this.d.ptr(o),
      this.d.ptr(ws), B, H, C, K, V); // prettier-ignore
    ws.dispose();
    lens.dispose();
    return o;
  }
}
