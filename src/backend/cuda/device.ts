// The cuda device: tensors in GPU memory (the addon's caching allocator over cudaMalloc); its kernels (kernels.ts,
// native/cuda/) are all queued in order on one stream, so only reads wait for the GPU. Node-only (a Node-API addon).
// Memory accounting: the MemoryTracker counts each live tensor's element bytes, as on the host devices;
// `deviceMemory()` reports what the allocator holds beside them (its rounding to 512-byte blocks, its cache).

import { BackendError, DTypeError } from '../../errors.js';
import type { DType, DataArray, ValueArray } from '../../tensor/dtype.js';
import { allocArray, bytesPerElement } from '../../tensor/dtype.js';
import { MemoryTracker } from '../../tensor/memory.js';
import type { Storage } from '../../tensor/storage.js';
import { Tensor, checkShape, shapeSize } from '../../tensor/tensor.js';
import type { Device } from '../device.js';
import { type Kernels, registerKernels } from '../kernels.js';
import type { CudaAddon, CudaInfo, CudaMemory } from './addon.js';
import { CudaKernels } from './kernels.js';

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

export class CudaDevice implements Device {
  readonly name = 'cuda';
  readonly memory = new MemoryTracker();
  readonly dtypes: readonly DType[] = ['float32', 'int32'];
  readonly host = false;
  readonly resolved: Partial<Record<DType, Kernels>> = {};
  /** TF32 tensor cores for float32 GEMMs (RETNET_CUDA_TF32=1); off by default, so results match float32. */
  tf32 = process.env.RETNET_CUDA_TF32 === '1';
  /**
   * Chunkwise retention (forward and backward) on bf16 tensor cores with float32 accumulation
   * (RETNET_CUDA_BF16_RETENTION=1) where the shape allows: K = V = 128, chunk 64, whole chunks, no initial state or
   * segments; other calls take the float32 kernels. Off by default: bf16 operands give about 1e-3 relative error.
   */
  bf16Retention = process.env.RETNET_CUDA_BF16_RETENTION === '1';
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
    if (t.device !== this) throw new BackendError(`cuda device: tensor ${t.toString()} belongs to another device`);
    return (t.storage as CudaStorage).ptr;
  }

  /** An output the kernel overwrites entirely (its initial contents are whatever the block held). */
  empty(shape: readonly number[], dtype: DType): Tensor {
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

  read(t: Tensor): ValueArray {
    const out = allocArray(t.dtype, t.size) as ValueArray;
    if (t.size > 0) this.addon.read(this.ptr(t), out);
    return out;
  }

  /** The values without blocking the event loop while the device finishes. */
  async readAsync(t: Tensor): Promise<ValueArray> {
    const buf = await this.addon.readAsync(this.ptr(t), t.storage.byteLength);
    return t.dtype === 'int32' ? new Int32Array(buf) : new Float32Array(buf);
  }

  /** float32 and int32 are stored as they are, so the storage array is the values. */
  readStorage(t: Tensor): DataArray {
    return this.read(t);
  }

  fromStorage(data: DataArray, shape: readonly number[], dtype: DType): Tensor {
    return this.fromData(data, shape, dtype);
  }

  write(t: Tensor, data: ArrayLike<number>): void {
    if (data.length !== t.size)
      throw new BackendError(`write: ${data.length} values given for ${t.toString()} (${t.size} elements)`);
    const host = allocArray(t.dtype, t.size);
    host.set(data);
    if (t.size > 0) this.addon.write(this.ptr(t), host);
  }

  copy(src: Tensor, srcOffset: number, dst: Tensor, dstOffset: number, length: number): void {
    if (src.dtype !== dst.dtype) throw new DTypeError(`copy: ${src.dtype} into ${dst.dtype}`);
    if (srcOffset < 0 || dstOffset < 0 || srcOffset + length > src.size || dstOffset + length > dst.size)
      throw new BackendError(
        `copy: [${srcOffset}, +${length}) of ${src.toString()} into [${dstOffset}, +${length}) of ${dst.toString()}`,
      );
    const e = bytesPerElement(src.dtype);
    if (length > 0) this.addon.copy(this.ptr(dst) + dstOffset * e, this.ptr(src) + srcOffset * e, length * e);
  }

  view(t: Tensor, shape: readonly number[]): Tensor {
    const storage = t.storage;
    storage.retain();
    return new Tensor(this, storage, shape, t.dtype);
  }
}

/** The cuda device over a loaded addon, with its kernels registered (float32; the layout kernels for int32 too). */
export function createCudaDevice(addon: CudaAddon): CudaDevice {
  const device = new CudaDevice(addon);
  const k = new CudaKernels(device);
  registerKernels('cuda', ['float32', 'int32'], { cast: k.cast.bind(k) });
  registerKernels('cuda', ['float32'], k);
  registerKernels('cuda', ['int32'], { permute: k.permute.bind(k), copyBlocks: k.copyBlocks.bind(k) });
  return device;
}
