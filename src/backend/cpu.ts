// What the two CPU backends share: storage in host typed arrays, creation, reads, views and casts. Kernels are each
// backend's own.

import { BackendError, DTypeError } from '../errors.js';
import type { DType, DataArray, FloatArray } from '../tensor/dtype.js';
import { MemoryTracker } from '../tensor/memory.js';
import { BufferPool } from '../tensor/pool.js';
import { CpuStorage } from '../tensor/storage.js';
import { Tensor, checkShape, shapeSize } from '../tensor/tensor.js';
import type { Backend } from './backend.js';

export abstract class CpuBackend implements Pick<Backend, 'fromData' | 'zeros' | 'read' | 'write' | 'view' | 'cast'> {
  abstract readonly name: 'native' | 'reference';
  readonly memory = new MemoryTracker();
  /** Freed buffers kept for reuse (RETNET_POOL_MB, default 1024; 0 disables it). */
  readonly pool = new BufferPool(poolCapacity());

  abstract supportsDType(dtype: DType): boolean;

  protected checkDType(dtype: DType, what: string): void {
    if (!this.supportsDType(dtype))
      throw new DTypeError(
        `${what}: the ${this.name} backend does not hold ${dtype} tensors (use the reference backend)`,
      );
  }

  /** Wraps a typed array from `alloc` (ownership passes to the tensor; its buffer returns to the pool). */
  wrap(data: DataArray, shape: readonly number[], dtype: DType): Tensor {
    this.checkDType(dtype, 'tensor');
    const storage = new CpuStorage(dtype, data, this.memory, this.pool);
    return new Tensor(this as unknown as Backend, storage, shape, dtype);
  }

  /**
   * An array from the pool when a buffer of that size is free: zero-filled, or with `zeroed` false arbitrary contents
   * for a caller that writes every element.
   */
  alloc(dtype: DType, size: number, zeroed = true): DataArray {
    return this.pool.take(dtype, size, zeroed);
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

  zeros(shape: readonly number[], dtype: DType): Tensor {
    checkShape(shape, 'zeros');
    return this.wrap(this.alloc(dtype, shapeSize(shape)), shape, dtype);
  }

  /** The tensor's own typed array (no copy), for this backend's kernels. */
  raw(t: Tensor): DataArray {
    if (t.backend !== (this as unknown as Backend))
      throw new BackendError(`${this.name} backend: tensor ${t.toString()} belongs to another backend`);
    return (t.storage as CpuStorage).data;
  }

  float(t: Tensor): FloatArray {
    if (t.dtype === 'int32') throw new DTypeError(`${this.name} backend: expected a float tensor, got int32`);
    return this.raw(t) as FloatArray;
  }

  read(t: Tensor): DataArray {
    return this.raw(t).slice();
  }

  write(t: Tensor, data: ArrayLike<number>): void {
    const dst = this.raw(t);
    if (data.length !== dst.length)
      throw new BackendError(`write: ${data.length} values given for ${t.toString()} (${dst.length} elements)`);
    dst.set(data);
  }

  view(t: Tensor, shape: readonly number[]): Tensor {
    const storage = t.storage;
    storage.retain();
    return new Tensor(this as unknown as Backend, storage, shape, t.dtype);
  }

  cast(t: Tensor, dtype: DType): Tensor {
    const out = this.alloc(dtype, t.size, false);
    out.set(this.raw(t));
    return this.wrap(out, t.shape, dtype);
  }
}

function poolCapacity(): number {
  const env = process.env.RETNET_POOL_MB;
  if (env === undefined || env === '') return 1024 * 2 ** 20;
  const mb = Number(env);
  if (!Number.isFinite(mb) || mb < 0)
    throw new BackendError(`RETNET_POOL_MB must be a non-negative number, got '${env}'`);
  return mb * 2 ** 20;
}
