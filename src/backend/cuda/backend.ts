// The cuda device: tensors in GPU memory (the addon's caching allocator over cudaMalloc), kernels in native/cuda/
// (GEMMs through cuBLAS, the rest our own), all queued in order on one stream. Only reads wait for the device.
// Memory accounting: the MemoryTracker counts each live tensor's element bytes, as on the host devices;
// `deviceMemory()` reports what the allocator holds beside them (its rounding, its cache).

import { BackendError, DTypeError, ShapeError } from '../../errors.js';
import type { DType, DataArray } from '../../tensor/dtype.js';
import { allocArray, bytesPerElement } from '../../tensor/dtype.js';
import { MemoryTracker } from '../../tensor/memory.js';
import type { Storage } from '../../tensor/storage.js';
import { Tensor, checkShape, shapeSize } from '../../tensor/tensor.js';
import type { ActivationKind, AdamWParams, AttentionAlgorithm, Backend, BinaryOp, RetentionForm } from '../backend.js';
import type { CudaAddon, CudaInfo, CudaMemory } from './addon.js';

const ACTIVATION: Record<ActivationKind, number> = { gelu: 0, silu: 1, relu: 2 };

// The chunk the parallel form's backward runs with (its gradient is the chunkwise one; the chunk sets only speed).
const PARALLEL_BACKWARD_CHUNK = 64;

/** Device memory behind a tensor: freed (returned to the allocator's cache) when the last reference goes. */
export class CudaStorage implements Storage {
  readonly byteLength: number;
  private refs = 1;
  private pointer: number;

  constructor(
    readonly dtype: DType,
    readonly size: number,
    private readonly addon: CudaAddon,
    private readonly tracker: MemoryTracker,
  ) {
    this.byteLength = size * bytesPerElement(dtype);
    this.pointer = addon.alloc(this.byteLength);
    tracker.allocated(this.byteLength);
  }

  get released(): boolean {
    return this.pointer === 0;
  }

  /** The device address. Throws after release, so no kernel can touch freed memory. */
  get ptr(): number {
    if (this.pointer === 0) throw new Error('storage used after release');
    return this.pointer;
  }

  retain(): void {
    this.refs++;
  }

  release(): void {
    if (this.pointer === 0 || --this.refs > 0) return;
    this.addon.free(this.pointer);
    this.pointer = 0;
    this.tracker.released(this.byteLength);
  }
}

export class CudaBackend implements Backend {
  readonly name = 'cuda' as const;
  readonly memory = new MemoryTracker();
  /** TF32 tensor cores for float32 GEMMs (RETNET_CUDA_TF32=1); off by default, so results match float32. */
  tf32 = process.env.RETNET_CUDA_TF32 === '1';
  /**
   * A test aid, as the host pool's: outputs taken without a fill come filled with NaN, so a kernel that leaves an
   * element unwritten shows up instead of reading whatever the recycled block held.
   */
  poison = false;

  constructor(readonly addon: CudaAddon) {}

  info(): CudaInfo {
    return this.addon.info();
  }

  deviceMemory(): CudaMemory {
    return this.addon.memory();
  }

  supportsDType(dtype: DType): boolean {
    return dtype === 'float32' || dtype === 'int32';
  }

  // ---- storage ----

  private make(shape: readonly number[], dtype: DType): Tensor {
    if (!this.supportsDType(dtype))
      throw new DTypeError(`tensor: the cuda device does not hold ${dtype} tensors (float32 and int32 only)`);
    const storage = new CudaStorage(dtype, shapeSize(shape), this.addon, this.memory);
    return new Tensor(this, storage, shape, dtype);
  }

  /** The device address of t's storage. */
  ptr(t: Tensor): number {
    if (t.backend !== this) throw new BackendError(`cuda device: tensor ${t.toString()} belongs to another device`);
    return (t.storage as CudaStorage).ptr;
  }

  private f32(t: Tensor): number {
    if (t.dtype !== 'float32') throw new DTypeError(`cuda device: expected a float32 tensor, got ${t.dtype}`);
    return this.ptr(t);
  }

  private i32(t: Tensor): number {
    if (t.dtype !== 'int32') throw new DTypeError(`cuda device: expected an int32 tensor, got ${t.dtype}`);
    return this.ptr(t);
  }

  /** An output the kernel overwrites entirely (its initial contents are whatever the block held). */
  empty(shape: readonly number[], dtype: DType = 'float32'): Tensor {
    checkShape(shape, 'empty');
    const t = this.make(shape, dtype);
    if (this.poison && t.size > 0) this.addon.fill(this.ptr(t), NaN, t.size);
    return t;
  }

  zeros(shape: readonly number[], dtype: DType): Tensor {
    checkShape(shape, 'zeros');
    const t = this.make(shape, dtype);
    if (t.size > 0) this.addon.fill(this.ptr(t), 0, t.size); // 0.0f and int32 0 share the bit pattern
    return t;
  }

  fromData(data: ArrayLike<number>, shape: readonly number[], dtype: DType): Tensor {
    checkShape(shape, 'fromData');
    const n = shapeSize(shape);
    if (data.length !== n)
      throw new BackendError(`fromData: ${data.length} values given for shape [${shape.join(', ')}] (${n} elements)`);
    const host = allocArray(dtype, n);
    if (dtype === 'int32')
      for (let i = 0; i < n; i++) {
        const v = data[i]!;
        if (!Number.isInteger(v)) throw new DTypeError(`fromData: int32 tensor given non-integer value ${v} at ${i}`);
        host[i] = v;
      }
    else host.set(data);
    const t = this.make(shape, dtype);
    if (n > 0) this.addon.write(this.ptr(t), host);
    return t;
  }

  read(t: Tensor): DataArray {
    const out = allocArray(t.dtype, t.size);
    if (t.size > 0) this.addon.read(this.ptr(t), out);
    return out;
  }

  /** The values without blocking the event loop while the device finishes. */
  async readAsync(t: Tensor): Promise<DataArray> {
    const buf = await this.addon.readAsync(this.ptr(t), t.storage.byteLength);
    return t.dtype === 'int32' ? new Int32Array(buf) : new Float32Array(buf);
  }

  write(t: Tensor, data: ArrayLike<number>): void {
    if (data.length !== t.size)
      throw new BackendError(`write: ${data.length} values given for ${t.toString()} (${t.size} elements)`);
    const host = allocArray(t.dtype, t.size);
    host.set(data);
    if (t.size > 0) this.addon.write(this.ptr(t), host);
  }

  view(t: Tensor, shape: readonly number[]): Tensor {
    const storage = t.storage;
    storage.retain();
    return new Tensor(this, storage, shape, t.dtype);
  }

  cast(t: Tensor, dtype: DType): Tensor {
    if (t.dtype === dtype) {
      const out = this.make(t.shape, dtype);
      if (t.size > 0) this.addon.copy(this.ptr(out), this.ptr(t), t.storage.byteLength);
      return out;
    }
    // float32 <-> int32 casts are rare (host-built ids); they go through the host.
    return this.fromData(this.read(t), t.shape, dtype);
  }

  // ---- kernels ----

  matmul(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
    const ra = a.rank;
    const M = transA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
    const K = transA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
    const N = transB ? b.shape[b.rank - 2]! : b.shape[b.rank - 1]!;
    const batch = shapeSize(a.shape.slice(0, -2));
    const out = this.empty([...a.shape.slice(0, -2), M, N]);
    if (out.size === 0) return out;
    if (K === 0) {
      this.addon.fill(this.ptr(out), 0, out.size);
      return out;
    }
    const lda = a.shape[ra - 1]!;
    const ldb = b.shape[b.rank - 1]!;
    if (b.rank === 2 && !transA) {
      // A shared right operand: the batch folds into the rows, one GEMM instead of `batch` small ones.
      this.addon.gemm(0, false, transB, batch * M, N, K, 1, this.f32(a), lda, 0, this.f32(b), ldb, 0,
        0, this.ptr(out), N, 0, 1, this.tf32); // prettier-ignore
      return out;
    }
    const bStride = b.rank > 2 ? K * N : 0;
    this.addon.gemm(0, transA, transB, M, N, K, 1, this.f32(a), lda, M * K, this.f32(b), ldb, bStride,
      0, this.ptr(out), N, M * N, batch, this.tf32); // prettier-ignore
    return out;
  }

  binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
    const out = this.empty(a.shape);
    this.addon.binary(op === 'add' ? 0 : 1, this.f32(a), this.f32(b), this.ptr(out), a.size, b.size);
    return out;
  }

  scale(a: Tensor, alpha: number): Tensor {
    const out = this.empty(a.shape);
    this.addon.scale(this.f32(a), this.ptr(out), alpha, a.size);
    return out;
  }

  sumToShape(g: Tensor, shape: readonly number[]): Tensor {
    const out = this.empty(shape);
    const m = shapeSize(shape);
    if (m > 0) this.addon.sumRows(this.f32(g), this.ptr(out), g.size / m, m);
    return out;
  }

  activation(kind: ActivationKind, x: Tensor): Tensor {
    const out = this.empty(x.shape);
    this.addon.activation(ACTIVATION[kind], this.f32(x), this.ptr(out), x.size);
    return out;
  }

  activationBackward(kind: ActivationKind, x: Tensor, g: Tensor): Tensor {
    const out = this.empty(x.shape);
    this.addon.activationBackward(ACTIVATION[kind], this.f32(x), this.f32(g), this.ptr(out), x.size);
    return out;
  }

  private rowsOf(x: Tensor): { rows: number; cols: number } {
    const cols = x.shape[x.rank - 1] ?? 1;
    return { rows: cols === 0 ? 0 : x.size / cols, cols };
  }

  rmsNorm(x: Tensor, w: Tensor | null, eps: number): { y: Tensor; rstd: Tensor } {
    const { rows, cols } = this.rowsOf(x);
    const y = this.empty(x.shape);
    const rstd = this.empty([rows]);
    this.addon.rmsNorm(this.f32(x), w ? this.f32(w) : 0, this.ptr(y), this.ptr(rstd), rows, cols, eps);
    return { y, rstd };
  }

  rmsNormBackward(x: Tensor, w: Tensor | null, rstd: Tensor, g: Tensor): { dx: Tensor; dw: Tensor | null } {
    const { rows, cols } = this.rowsOf(x);
    const dx = this.empty(x.shape);
    const dw = w ? this.empty(w.shape) : null;
    this.addon.rmsNormBackward(
      this.f32(x), w ? this.f32(w) : 0, this.f32(rstd), this.f32(g), this.ptr(dx), dw ? this.ptr(dw) : 0, rows, cols,
    ); // prettier-ignore
    return { dx, dw };
  }

  layerNorm(x: Tensor, w: Tensor, b: Tensor, eps: number): { y: Tensor; mean: Tensor; rstd: Tensor } {
    const { rows, cols } = this.rowsOf(x);
    const y = this.empty(x.shape);
    const mean = this.empty([rows]);
    const rstd = this.empty([rows]);
    this.addon.layerNorm(
      this.f32(x), this.f32(w), this.f32(b), this.ptr(y), this.ptr(mean), this.ptr(rstd), rows, cols, eps,
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
    const dx = this.empty(x.shape);
    const dw = this.empty(w.shape);
    const db = this.empty(w.shape);
    this.addon.layerNormBackward(
      this.f32(x), this.f32(w), this.f32(mean), this.f32(rstd), this.f32(g), this.ptr(dx), this.ptr(dw),
      this.ptr(db), rows, cols,
    ); // prettier-ignore
    return { dx, dw, db };
  }

  softmax(x: Tensor): Tensor {
    const { rows, cols } = this.rowsOf(x);
    const out = this.empty(x.shape);
    this.addon.softmax(this.f32(x), this.ptr(out), rows, cols);
    return out;
  }

  softmaxBackward(y: Tensor, g: Tensor): Tensor {
    const { rows, cols } = this.rowsOf(y);
    const out = this.empty(y.shape);
    this.addon.softmaxBackward(this.f32(y), this.f32(g), this.ptr(out), rows, cols);
    return out;
  }

  crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex: number): { loss: Tensor; lse: Tensor } {
    const [N, V] = logits.shape as [number, number];
    const loss = this.empty([N]);
    const lse = this.empty([N]);
    const bad = this.addon.crossEntropy(
      this.f32(logits), this.i32(targets), this.ptr(loss), this.ptr(lse), N, V, ignoreIndex,
    ); // prettier-ignore
    if (bad >= 0) {
      const id = this.read(targets)[bad]!;
      loss.dispose();
      lse.dispose();
      throw new BackendError(`crossEntropy: target ${id} at position ${bad} is outside the vocabulary [0, ${V})`);
    }
    return { loss, lse };
  }

  crossEntropyBackward(logits: Tensor, targets: Tensor, lse: Tensor, g: Tensor, ignoreIndex: number): Tensor {
    const [N, V] = logits.shape as [number, number];
    const out = this.empty(logits.shape);
    this.addon.crossEntropyBackward(
      this.f32(logits), this.i32(targets), this.f32(lse), this.f32(g), this.ptr(out), N, V, ignoreIndex,
    ); // prettier-ignore
    return out;
  }

  embedding(table: Tensor, ids: Tensor): Tensor {
    const [V, D] = table.shape as [number, number];
    const out = this.empty([...ids.shape, D]);
    const bad = this.addon.embedding(this.f32(table), this.i32(ids), this.ptr(out), ids.size, D, V);
    if (bad >= 0) {
      const id = this.read(ids)[bad]!;
      out.dispose();
      throw new BackendError(`embedding: token id ${id} at position ${bad} is outside the vocabulary [0, ${V})`);
    }
    return out;
  }

  embeddingBackward(g: Tensor, ids: Tensor, vocab: number): Tensor {
    const D = g.shape[g.rank - 1]!;
    const out = this.empty([vocab, D]);
    this.addon.embeddingBackward(this.f32(g), this.i32(ids), this.ptr(out), ids.size, D, vocab);
    return out;
  }

  permute(x: Tensor, perm: readonly number[]): Tensor {
    if (x.rank > 8) throw new ShapeError(`permute: rank ${x.rank} exceeds the cuda limit of 8`);
    const out = this.empty(
      perm.map((p) => x.shape[p]!),
      x.dtype,
    );
    this.addon.permute(this.ptr(x), this.ptr(out), Int32Array.from(x.shape), Int32Array.from(perm));
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
    this.addon.copyBlocks(this.ptr(src), srcOff, srcStride, this.ptr(dst), dstOff, dstStride, blocks, len);
  }

  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, p: AdamWParams): void {
    this.adamwMany([param], [grad], [m], [v], p);
  }

  /** AdamW over many parameters in one launch (per 256 tensors). */
  adamwMany(params: Tensor[], grads: Tensor[], m: Tensor[], v: Tensor[], p: AdamWParams): void {
    const ptrs = (ts: Tensor[]) => ts.map((t) => this.f32(t));
    this.addon.adamw(
      ptrs(params), ptrs(grads), ptrs(m), ptrs(v), params.map((t) => t.size),
      p.lr, p.beta1, p.beta2, p.eps, p.weightDecay, p.step, p.gradScale,
    ); // prettier-ignore
  }

  sumSquares(x: Tensor): number {
    return this.addon.sumSquares(this.f32(x), x.size);
  }

  /** Scratch for a kernel, as a tensor so that memory accounting counts it while the kernel runs. */
  private scratch(floats: number): Tensor {
    return this.empty([floats]);
  }

  retentionForward(
    form: RetentionForm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gammas: readonly number[],
    chunkSize: number,
  ): { o: Tensor; r: Tensor } {
    const [B, T, H, K] = q.shape as [number, number, number, number];
    const V = v.shape[3]!;
    const o = this.empty([B, T, H, V]);
    const r = this.empty([B, H, T]);
    const f = form === 'parallel' ? 0 : 1;
    const ws = this.scratch(this.addon.retentionWorkspace(f, B, H, T, K, V, chunkSize));
    this.addon.retentionForward(f, this.f32(q), this.f32(k), this.f32(v), Float64Array.from(gammas),
      this.ptr(o), this.ptr(r), this.ptr(ws), B, H, T, K, V, chunkSize); // prettier-ignore
    ws.dispose();
    return { o, r };
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
    const C = form === 'parallel' ? PARALLEL_BACKWARD_CHUNK : chunkSize;
    const dq = this.empty(q.shape);
    const dk = this.empty(k.shape);
    const dv = this.empty(v.shape);
    const ws = this.scratch(this.addon.retentionWorkspace(3, B, H, T, K, V, C));
    this.addon.retentionBackward(
      this.f32(q), this.f32(k), this.f32(v), Float64Array.from(gammas), this.f32(r), this.f32(dO),
      this.ptr(dq), this.ptr(dk), this.ptr(dv), this.ptr(ws), B, H, T, K, V, C,
    ); // prettier-ignore
    ws.dispose();
    return { dq, dk, dv };
  }

  retentionStep(q: Tensor, k: Tensor, v: Tensor, state: Tensor, scale: Tensor, gammas: readonly number[]): Tensor {
    const [B, H, K] = q.shape as [number, number, number];
    const V = v.shape[2]!;
    const o = this.empty([B, H, V]);
    this.addon.retentionStep(this.f32(q), this.f32(k), this.f32(v), Float64Array.from(gammas), this.f32(state),
      this.f32(scale), this.ptr(o), B, H, K, V); // prettier-ignore
    return o;
  }

  retentionState(k: Tensor, v: Tensor, gammas: readonly number[]): { state: Tensor; scale: Tensor } {
    const [B, T, H, K] = k.shape as [number, number, number, number];
    const V = v.shape[3]!;
    const state = this.zeros([B, H, K, V], 'float32');
    const scale = this.zeros([B, H], 'float32');
    this.addon.retentionState(this.f32(k), this.f32(v), Float64Array.from(gammas), this.ptr(state), this.ptr(scale),
      B, H, T, K, V); // prettier-ignore
    return { state, scale };
  }

  rotary(x: Tensor, cos: Tensor, sin: Tensor, inverse: boolean): Tensor {
    const [B, T, H, K] = x.shape as [number, number, number, number];
    const y = this.empty(x.shape);
    this.addon.rotary(this.f32(x), this.f32(cos), this.f32(sin), this.ptr(y), B, T, H, K, cos.rank === 3, inverse);
    return y;
  }

  attentionForward(algorithm: AttentionAlgorithm, q: Tensor, k: Tensor, v: Tensor): { o: Tensor; stats: Tensor } {
    const [B, T, H, K] = q.shape as [number, number, number, number];
    const V = v.shape[3]!;
    const o = this.empty([B, T, H, V]);
    const stats = this.empty(algorithm === 'naive' ? [B, H, T, T] : [B, H, T]);
    this.addon.attentionForward(algorithm === 'naive' ? 0 : 1, this.f32(q), this.f32(k), this.f32(v), this.ptr(o),
      this.ptr(stats), B, H, T, K, V); // prettier-ignore
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
    const dq = this.empty(q.shape);
    const dk = this.empty(k.shape);
    const dv = this.empty(v.shape);
    const kernel = algorithm === 'naive' ? 1 : 3;
    const ws = this.scratch(this.addon.attentionWorkspace(kernel, B, H, T, K, V));
    this.addon.attentionBackward(
      algorithm === 'naive' ? 0 : 1, this.f32(q), this.f32(k), this.f32(v), this.f32(o), this.f32(stats),
      this.f32(dO), this.ptr(dq), this.ptr(dk), this.ptr(dv), this.ptr(ws), B, H, T, K, V,
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
    const o = this.empty([B, H, V]);
    const lens = this.fromData(lengths, [B], 'int32');
    this.addon.attentionDecode(this.f32(q), this.f32(kCache), this.f32(vCache), this.ptr(lens), this.ptr(o),
      B, H, C, K, V); // prettier-ignore
    lens.dispose();
    return o;
  }
}
