// A device whose storage is host memory: typed arrays, recycled through a buffer pool. The reference and cpu
// devices are both host devices; they differ in the dtypes they store and in the kernels registered for them.

import { BackendError, DTypeError, formatShape } from '../../errors.js';
import {
  type DType,
  type DataArray,
  type FloatArray,
  type ValueArray,
  arrayBytes,
  decode,
  dtypeBit,
  dtypeKind,
  encode,
  storageLength,
} from '../../tensor/dtype.js';
import { MemoryTracker } from '../../tensor/memory.js';
import type { Storage } from '../../tensor/storage.js';
import { Tensor, checkShape, shapeSize } from '../../tensor/tensor.js';
import type { Device, DeviceName } from '../device.js';
import type { Kernels } from '../kernels.js';
import { BufferPool } from './pool.js';

/** Storage in one typed array, returned to its device's pool when the last tensor using it is disposed. */
export class HostStorage implements Storage {
  readonly byteLength: number;
  private refs = 1;
  private dataRef: DataArray | null;

  /** `size` elements stored in `data` (its byte length is what memory accounting counts). */
  constructor(
    readonly dtype: DType,
    data: DataArray,
    readonly size: number,
    private readonly tracker: MemoryTracker,
    private readonly pool: BufferPool | null = null,
  ) {
    this.dataRef = data;
    // Entries times their bytes, not `data.byteLength`: V8 reads a typed array's byteLength through a getter call
    // (~8 ns against ~1 for this), and every tensor made pays it, here and in the pool's reclaim.
    this.byteLength = data.length * arrayBytes(dtype);
    tracker.allocated(this.byteLength);
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
    this.pool?.reclaim(data, this.byteLength);
  }
}

export class HostDevice implements Device {
  readonly memory = new MemoryTracker();
  /** Freed buffers kept for reuse (RETNET_POOL_MB, default 1024; 0 disables it). */
  readonly pool = new BufferPool(poolCapacity());
  readonly host = true;
  readonly resolved: Partial<Record<DType, Kernels>> = {};
  /** The dtypes stored, as dtype bits (every tensor made is checked against it: a bit test, not a Set lookup). */
  private readonly stored: number;

  constructor(
    readonly name: DeviceName,
    readonly dtypes: readonly DType[],
  ) {
    this.stored = dtypes.reduce((mask, d) => mask | dtypeBit(d), 0);
  }

  supportsDType(dtype: DType): boolean {
    return (this.stored & dtypeBit(dtype)) !== 0;
  }

  /** Wraps a storage array from `alloc` (ownership passes to the tensor; its buffer returns to the pool). */
  wrap(data: DataArray, shape: readonly number[], dtype: DType): Tensor {
    this.checkDType(dtype, 'tensor');
    return this.tensorOver(data, shape, shapeSize(shape), dtype);
  }

  /** wrap for a caller that has checked the dtype and counted the `size` elements of `shape` already. */
  private tensorOver(data: DataArray, shape: readonly number[], size: number, dtype: DType): Tensor {
    return new Tensor(this, new HostStorage(dtype, data, size, this.memory, this.pool), shape, dtype);
  }

  private checkDType(dtype: DType, what: string): void {
    if (!this.supportsDType(dtype))
      throw new DTypeError(
        `${what}: the ${this.name} device does not hold ${dtype} tensors (it holds ${this.dtypes.join(', ')})`,
      );
  }

  /**
   * A storage array for a tensor of dtype and shape, from the pool when a buffer of that size is free: zero-filled,
   * or with `zeroed` false arbitrary contents for a caller that writes every element.
   */
  alloc(dtype: DType, shape: readonly number[], zeroed = true): DataArray {
    return this.pool.take(dtype, storageLength(dtype, shape), zeroed);
  }

  zeros(shape: readonly number[], dtype: DType): Tensor {
    checkShape(shape, 'zeros');
    return this.wrap(this.alloc(dtype, shape), shape, dtype);
  }

  empty(shape: readonly number[], dtype: DType): Tensor {
    checkShape(shape, 'empty');
    return this.wrap(this.alloc(dtype, shape, false), shape, dtype);
  }

  fromData(data: ArrayLike<number>, shape: readonly number[], dtype: DType): Tensor {
    checkShape(shape, 'fromData');
    this.checkDType(dtype, 'fromData');
    const size = shapeSize(shape);
    if (data.length !== size)
      throw new BackendError(
        `fromData: ${data.length} values given for shape ${formatShape(shape)} (${size} elements)`,
      );
    const out = this.alloc(dtype, shape, false);
    try {
      encode(dtype, data, shape, out);
    } catch (e) {
      if (e instanceof DTypeError) throw new DTypeError(`fromData: ${e.message}`);
      throw e;
    }
    // Every tensor made from numbers comes here: the dtype and size checked above are not checked again (tiny-turns).
    return this.tensorOver(out, shape, size, dtype);
  }

  /** A tensor over a storage array as it is stored (raw bfloat16/float16 bits, a quantized format's bytes). */
  fromStorage(data: DataArray, shape: readonly number[], dtype: DType): Tensor {
    checkShape(shape, 'fromStorage');
    const out = this.alloc(dtype, shape, false);
    if (data.length !== out.length || data.BYTES_PER_ELEMENT !== out.BYTES_PER_ELEMENT)
      throw new BackendError(
        `fromStorage: ${data.length} entries of ${data.BYTES_PER_ELEMENT} bytes given for a ${dtype} tensor of shape ${formatShape(shape)} (needs ${out.length} of ${out.BYTES_PER_ELEMENT})`,
      );
    out.set(data as never);
    return this.wrap(out, shape, dtype);
  }

  /** The tensor's own typed array (no copy), for this device's kernels. */
  raw(t: Tensor): DataArray {
    if (t.device !== this)
      throw new BackendError(`${this.name} device: tensor ${t.toString()} belongs to another device`);
    return (t.storage as HostStorage).data;
  }

  /** The elements of a float32 or float64 tensor (what the float kernels read). */
  float(t: Tensor): FloatArray {
    if (t.dtype !== 'float32' && t.dtype !== 'float64')
      throw new DTypeError(`${this.name} device: expected a float32 or float64 tensor, got ${t.dtype}`);
    return this.raw(t) as FloatArray;
  }

  read(t: Tensor): ValueArray {
    return decode(t.dtype, this.raw(t), t.shape);
  }

  readAsync(t: Tensor): Promise<ValueArray> {
    return Promise.resolve(this.read(t));
  }

  readStorage(t: Tensor): DataArray {
    return this.raw(t).slice();
  }

  write(t: Tensor, data: ArrayLike<number>): void {
    const dst = this.raw(t);
    if (data.length !== t.size)
      throw new BackendError(`write: ${data.length} values given for ${t.toString()} (${t.size} elements)`);
    encode(t.dtype, data, t.shape, dst);
  }

  copy(src: Tensor, srcOffset: number, dst: Tensor, dstOffset: number, length: number): void {
    const s = this.raw(src);
    const d = this.raw(dst);
    if (src.dtype !== dst.dtype) throw new DTypeError(`copy: dtypes differ (${src.dtype} and ${dst.dtype})`);
    if (dtypeKind(src.dtype) === 'quantized')
      throw new DTypeError(`copy: ${src.dtype} tensors are copied whole (cast or fromStorage), not by element`);
    if (srcOffset < 0 || dstOffset < 0 || srcOffset + length > s.length || dstOffset + length > d.length)
      throw new BackendError(
        `copy: range [${srcOffset}, +${length}) of ${src.toString()} to [${dstOffset}, +${length}) of ${dst.toString()} is out of bounds`,
      );
    d.set(s.subarray(srcOffset, srcOffset + length), dstOffset);
  }

  view(t: Tensor, shape: readonly number[]): Tensor {
    if (dtypeKind(t.dtype) === 'quantized' && (shape[shape.length - 1] ?? 1) !== (t.shape[t.rank - 1] ?? 1))
      throw new DTypeError(
        `view: a ${t.dtype} tensor is quantized along its last dim; ${formatShape(t.shape)} cannot become ${formatShape(shape)}`,
      );
    const storage = t.storage;
    storage.retain();
    return new Tensor(this, storage, shape, t.dtype);
  }
}

/**
 * The host implementation of the cast kernel (both host devices register it), in every direction: between float32,
 * float64 and int32 as typed-array conversion (float to int32 truncates), to bfloat16/float16 by rounding to nearest
 * even, to a quantized format by quantizing each row, and from those by decoding.
 */
export const hostCast: Pick<Kernels, 'cast'> = {
  cast(t: Tensor, dtype: DType): Tensor {
    const device = t.device as HostDevice;
    const src = device.raw(t);
    const out = device.alloc(dtype, t.shape, false);
    if (t.dtype === dtype) out.set(src as never);
    else if (isNumberArray(t.dtype) && isNumberArray(dtype)) out.set(src as never);
    else {
      const values = isNumberArray(t.dtype) ? src : decode(t.dtype, src, t.shape);
      if (dtype === 'int32') out.set(values as never);
      else encode(dtype, values, t.shape, out);
    }
    return device.wrap(out, t.shape, dtype);
  },
};

/** Dtypes whose storage array holds the values themselves. */
function isNumberArray(dtype: DType): boolean {
  return dtype === 'float32' || dtype === 'float64' || dtype === 'int32';
}

function poolCapacity(): number {
  const env = globalThis.process?.env.RETNET_POOL_MB;
  if (env === undefined || env === '') return 1024 * 2 ** 20;
  const mb = Number(env);
  if (!Number.isFinite(mb) || mb < 0)
    throw new BackendError(`RETNET_POOL_MB must be a non-negative number, got '${env}'`);
  return mb * 2 ** 20;
}
