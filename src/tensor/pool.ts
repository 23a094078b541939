// A cache of freed host buffers, keyed by exact byte size. Allocating a large typed array in V8 costs far more than
// clearing one (fresh pages fault in one by one: ~2.5 GB/s here, against ~15 GB/s for a fill), and a training or
// decoding loop frees and re-allocates the same sizes every step, so storages return their buffers here and new
// ones are taken from here first. The pool holds at most `capacityBytes`; the oldest buffers go first. Memory
// accounting (MemoryTracker) counts live tensors only; `pooledBytes` is reported beside it.

import type { DType, DataArray } from './dtype.js';
import { bytesPerElement } from './dtype.js';

const MIN_POOLED_BYTES = 64 * 1024; // small arrays are cheap to allocate; pooling them only adds bookkeeping

export class BufferPool {
  private readonly free = new Map<number, ArrayBuffer[]>();
  private order: ArrayBuffer[] = [];
  pooledBytes = 0;
  hits = 0;
  misses = 0;

  constructor(readonly capacityBytes: number) {}

  /** A zero-filled array of `size` elements of dtype. */
  take(dtype: DType, size: number): DataArray {
    const bytes = size * bytesPerElement(dtype);
    const list = bytes >= MIN_POOLED_BYTES ? this.free.get(bytes) : undefined;
    let buffer = list?.pop();
    if (buffer) {
      this.hits++;
      this.pooledBytes -= bytes;
      this.order.splice(this.order.indexOf(buffer), 1);
      new Uint8Array(buffer).fill(0);
    } else {
      if (bytes >= MIN_POOLED_BYTES) this.misses++;
      buffer = new ArrayBuffer(bytes);
    }
    switch (dtype) {
      case 'float32':
        return new Float32Array(buffer);
      case 'float64':
        return new Float64Array(buffer);
      case 'int32':
        return new Int32Array(buffer);
    }
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
