// A device whose storage is host memory: typed arrays, recycled through a buffer pool. The reference and cpu
// devices are both host devices; they differ in the dtypes they store and in the kernels registered for them.

import { BackendError, DTypeError } from '../../errors.js';
import type { DType, DataArray, FloatArray } from '../../tensor/dtype.js';
import { MemoryTracker } from '../../tensor/memory.js';
import type { Storage } from '../../tensor/storage.js';
import { bytesPerElement } from '../../tensor/dtype.js';
import { Tensor, checkShape, shapeSize } from '../../tensor/tensor.js';
import type { Device, DeviceName } from '../device.js';
import type { Kernels } from '../kernels.js';
import { BufferPool } from './pool.js';

/** Storage in one typed array, returned to its device's pool when the last tensor using it is disposed. */
export class HostStorage implements Storage {
  readonly byteLength: number;
  private refs = 1;
  private dataRef: DataArray | null;

  constructor(
    readonly dtype: DType,
    data: DataArray,
    private readonly tracker: MemoryTracker,
    private readonly pool: BufferPool | null = null,
  ) {
    this.dataRef = data;
    this.byteLength = data.length * bytesPerElement(dtype);
    tracker.allocated(this.byteLength);
  }

  get size(): number {
    return this.byteLength / bytesPerElement(this.dtype);
  }

  get released(): boolean {
    return this.dataRef === null;
  }

  /** The typed array. Throws after release, so no kernel can touch freed memory. */
  get data(): DataArray {
    if (this.dataRef === null) throw new Error('storage used after release');
    return this.dataRef;
  }

  retain(): void {
    this.refs++;
  }

  release(): void {
    if (this.dataRef === null) return;
    if (--this.refs > 0) return;
    const data = this.dataRef;
    this.dataRef = null;
    this.tracker.released(this.byteLength);
    this.pool?.reclaim(data);
  }
}

export class HostDevice implements Device {
  readonly memory = new MemoryTracker();
  /** Freed buffers kept for reuse (RETNET_POOL_MB, default 1024; 0 disables it). */
  readonly pool = new BufferPool(poolCapacity());
  readonly host = true;
  readonly resolved: Partial<Record<DType, Kernels>> = {};
  private readonly stored: ReadonlySet<DType>;

  constructor(
    readonly name: DeviceName,
    readonly dtypes: readonly DType[],
  ) {
    this.stored = new Set(dtypes);
  }

  supportsDType(dtype: DType): boolean {
    return this.stored.has(dtype);
  }

  /** Wraps a typed array from `alloc` (ownership passes to the tensor; its buffer returns to the pool). */
  wrap(data: DataArray, shape: readonly number[], dtype: DType): Tensor {
    if (!this.stored.has(dtype))
      throw new DTypeError(
        `tensor: the ${this.name} device does not hold ${dtype} tensors (it holds ${this.dtypes.join(', ')})`,
      );
    return new Tensor(this, new HostStorage(dtype, data, this.memory, this.pool), shape, dtype);
  }

  /**
   * An array from the pool when a buffer of that size is free: zero-filled, or with `zeroed` false arbitrary contents
   * for a caller that writes every element.
   */
  alloc(dtype: DType, size: number, zeroed = true): DataArray {
    return this.pool.take(dtype, size, zeroed);
  }

  zeros(shape: readonly number[], dtype: DType): Tensor {
    checkShape(shape, 'zeros');
    return this.wrap(this.alloc(dtype, shapeSize(shape)), shape, dtype);
  }

  empty(shape: readonly number[], dtype: DType): Tensor {
    checkShape(shape, 'empty');
    return this.wrap(this.alloc(dtype, shapeSize(shape), false), shape, dtype);
  }

  fromData(data: ArrayLike<number>, shape: readonly number[], dtype: DType): Tensor {
    checkShape(shape, 'fromData');
    const out = this.alloc(dtype, shapeSize(shape), false);
    if (data.length !== out.length)
      throw new BackendError(
        `fromData: ${data.length} values given for shape [${shape.join(', ')}] (${out.length} elements)`,
      );
    if (dtype === 'int32')
      for (let i = 0; i < out.length; i++) {
        const v = data[i]!;
        if (!Number.isInteger(v)) throw new DTypeError(`fromData: int32 tensor given non-integer value ${v} at ${i}`);
        out[i] = v;
      }
    else out.set(data as ArrayLike<number>);
    return this.wrap(out, shape, dtype);
  }

  /** The tensor's own typed array (no copy), for this device's kernels. */
  raw(t: Tensor): DataArray {
    if (t.device !== this)
      throw new BackendError(`${this.name} device: tensor ${t.toString()} belongs to another device`);
    return (t.storage as HostStorage).data;
  }

  float(t: Tensor): FloatArray {
    if (t.dtype === 'int32') throw new DTypeError(`${this.name} device: expected a float tensor, got int32`);
    return this.raw(t) as FloatArray;
  }

  read(t: Tensor): DataArray {
    return this.raw(t).slice();
  }

  readAsync(t: Tensor): Promise<DataArray> {
    return Promise.resolve(this.read(t));
  }

  write(t: Tensor, data: ArrayLike<number>): void {
    const dst = this.raw(t);
    if (data.length !== dst.length)
      throw new BackendError(`write: ${data.length} values given for ${t.toString()} (${dst.length} elements)`);
    dst.set(data);
  }

  copy(src: Tensor, srcOffset: number, dst: Tensor, dstOffset: number, length: number): void {
    const s = this.raw(src);
    const d = this.raw(dst);
    if (src.dtype !== dst.dtype) throw new DTypeError(`copy: dtypes differ (${src.dtype} and ${dst.dtype})`);
    if (srcOffset < 0 || dstOffset < 0 || srcOffset + length > s.length || dstOffset + length > d.length)
      throw new BackendError(
        `copy: range [${srcOffset}, +${length}) of ${src.toString()} to [${dstOffset}, +${length}) of ${dst.toString()} is out of bounds`,
      );
    d.set(s.subarray(srcOffset, srcOffset + length), dstOffset);
  }

  view(t: Tensor, shape: readonly number[]): Tensor {
    const storage = t.storage;
    storage.retain();
    return new Tensor(this, storage, shape, t.dtype);
  }
}

/** The host implementation of the cast kernel (both host devices register it). */
export const hostCast: Pick<Kernels, 'cast'> = {
  cast(t: Tensor, dtype: DType): Tensor {
    const device = t.device as HostDevice;
    const out = device.alloc(dtype, t.size, false);
    out.set(device.raw(t));
    return device.wrap(out, t.shape, dtype);
  },
};

function poolCapacity(): number {
  const env = globalThis.process?.env.RETNET_POOL_MB;
  if (env === undefined || env === '') return 1024 * 2 ** 20;
  const mb = Number(env);
  if (!Number.isFinite(mb) || mb < 0)
    throw new BackendError(`RETNET_POOL_MB must be a non-negative number, got '${env}'`);
  return mb * 2 ** 20;
}
