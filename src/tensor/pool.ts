// A cache of freed host buffers, keyed by exact byte size. Allocating a large typed array in V8 costs far more than
// clearing one (fresh pages fault in one by one: ~2.5 GB/s here, against ~15 GB/s for a fill), and a training or
// decoding loop frees and re-allocates the same sizes every step, so storages return their buffers here and new
// ones are taken from here first. The pool holds at most `capacityBytes`; the oldest buffers go first. Memory
// accounting (MemoryTracker) counts live tensors only; `pooledBytes` is reported beside it.

import type { DType, DataArray } from './dtype.js';
import { allocArray, bytesPerElement } from './dtype.js';

// Small arrays are cheap to allocate and are not pooled. They are made by the typed-array constructor, not over an
// explicit ArrayBuffer: V8 keeps the smallest inside its heap, ~20x faster than an ArrayBuffer (~25 ns against
// ~0.5 us), and asking such an array for its `.buffer` would cost ~1 us more.
const MIN_POOLED_BYTES = 64 * 1024;

export class BufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private order: ArrayBuffer[] = [];
  pooledBytes = 0;
  hits = 0;
  misses = 0;
  /**
   * A test aid, like glibc's MALLOC_PERTURB_: arrays taken without zeroing come filled with NaN (-1 for int32), so a
   * kernel that leaves an element of its output unwritten shows up instead of reading as 0.
   */
  poison = false;

  constructor(readonly capacityBytes: number) {}

  /**
   * An array of `size` elements of dtype: zero-filled, or with `zeroed` false arbitrary contents, for a kernel that
   * writes every element (a recycled buffer then skips the fill).
   */
  take(dtype: DType, size: number, zeroed = true): DataArray {
    const bytes = size * bytesPerElement(dtype);
    const buffer = bytes >= MIN_POOLED_BYTES ? this.free.get(bytes)?.pop() : undefined;
    let out: DataArray;
    if (buffer) {
      this.hits++;
      this.pooledBytes -= bytes;
      this.order.splice(this.order.indexOf(buffer), 1);
      out =
        dtype === 'float32'
          ? new Float32Array(buffer)
          : dtype === 'int32'
            ? new Int32Array(buffer)
            : new Float64Array(buffer);
      if (zeroed) out.fill(0);
    } else {
      if (bytes >= MIN_POOLED_BYTES) this.misses++;
      out = allocArray(dtype, size);
    }
    if (!zeroed && this.poison) out.fill(dtype === 'int32' ? -1 : NaN);
    return out;
  }

  /** Takes back the array of a released storage: kept when large and the sole user of its buffer. */
  reclaim(data: DataArray): void {
    if (data.byteLength >= MIN_POOLED_BYTES && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength)
      this.give(data.buffer as ArrayBuffer);
  }

  /** Returns a buffer nobody references any more. */
  give(buffer: ArrayBuffer): void {
    const bytes = buffer.byteLength;
    if (bytes < MIN_POOLED_BYTES || bytes > this.capacityBytes) return;
    while (this.pooledBytes + bytes > this.capacityBytes && this.order.length > 0) {
      const old = this.order.shift()!;
      const l = this.free.get(old.byteLength)!;
      l.splice(l.indexOf(old), 1);
      this.pooledBytes -= old.byteLength;
    }
    let list = this.free.get(bytes);
    if (!list) this.free.set(bytes, (list = []));
    list.push(buffer);
    this.order.push(buffer);
    this.pooledBytes += bytes;
  }

  /** Drops every cached buffer (they are then garbage). */
  clear(): void {
    this.free.clear();
    this.order = [];
    this.pooledBytes = 0;
  }
}
