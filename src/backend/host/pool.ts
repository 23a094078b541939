// A cache of freed host buffers, keyed by exact byte size. Allocating a large typed array in V8 costs far more than
// clearing one (fresh pages fault in one by one: ~2.5 GB/s here, against ~15 GB/s for a fill), and a training or
// decoding loop frees and re-allocates the same sizes every step, so storages return their buffers here and new
// ones are taken from here first. The pool holds at most `capacityBytes`; the oldest buffers go first. Memory
// accounting (MemoryTracker) counts live tensors only; `pooledBytes` is reported beside it.

import type { DType, DataArray } from '../../tensor/dtype.js';
import { allocArray, arrayBytes, arrayOver } from '../../tensor/dtype.js';

// Arrays under 1 KiB are not pooled. V8 keeps the smallest typed arrays inside its heap (~25 ns against ~0.5 us for an
// ArrayBuffer), and asking such an array for its `.buffer` would cost ~1 us more. Above that a fresh array costs more
// than a pooled one: on this stop's AMD EPYC (Node 20, /tmp micro-benchmark of `new Float32Array(n)` against the
// pool's Map/Set take, fill(0) and give) 1.23 against 0.28 us at 1 KiB, 1.83 / 0.30 at 4 KiB, 2.04 / 0.39 at 8 KiB,
// 2.64 / 0.48 at 16 KiB. A 1.3B decode step makes ~250 arrays of 8 KiB (D 2048 floats); with the bound at 16 KiB they
// cost 0.87 ms of the step in allocArray plus 0.8 ms of garbage collection (node --cpu-prof, q4, batch 1).
const MIN_POOLED_BYTES = 1024;

export class BufferPool {
  /** Free buffers by byte size. */
  private readonly free = new Map<number, Set<ArrayBuffer>>();
  /** Every free buffer, oldest first (a Set keeps insertion order and removes in O(1)). */
  private readonly order = new Set<ArrayBuffer>();
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
   * A storage array of dtype with `length` entries (elements; bytes for a quantized format): zero-filled, or with
   * `zeroed` false arbitrary contents, for a kernel that writes every element (a recycled buffer then skips the fill).
   */
  take(dtype: DType, length: number, zeroed = true): DataArray {
    const bytes = length * arrayBytes(dtype);
    const buffer = bytes >= MIN_POOLED_BYTES ? this.free.get(bytes)?.values().next().value : undefined;
    let out: DataArray;
    if (buffer) {
      this.hits++;
      this.remove(buffer);
      out = arrayOver(dtype, buffer);
      if (zeroed) out.fill(0);
    } else {
      if (bytes >= MIN_POOLED_BYTES) this.misses++;
      out = allocArray(dtype, length);
    }
    // NaN for float arrays, -1 for int32, all bits set for the 16-bit and byte formats (NaN for bfloat16/float16).
    if (!zeroed && this.poison) out.fill(out instanceof Float32Array || out instanceof Float64Array ? NaN : -1);
    return out;
  }

  /**
   * Takes back the array of a released storage, `bytes` long (the storage's count: see HostStorage): kept when large
   * and the sole user of its buffer.
   */
  reclaim(data: DataArray, bytes: number): void {
    if (bytes >= MIN_POOLED_BYTES && data.byteOffset === 0 && bytes === data.buffer.byteLength)
      this.give(data.buffer as ArrayBuffer);
  }

  /** Returns a buffer nobody references any more. */
  give(buffer: ArrayBuffer): void {
    const bytes = buffer.byteLength;
    if (bytes < MIN_POOLED_BYTES || bytes > this.capacityBytes) return;
    while (this.pooledBytes + bytes > this.capacityBytes) this.remove(this.order.values().next().value!);
    let same = this.free.get(bytes);
    if (!same) this.free.set(bytes, (same = new Set()));
    same.add(buffer);
    this.order.add(buffer);
    this.pooledBytes += bytes;
  }

  private remove(buffer: ArrayBuffer): void {
    this.free.get(buffer.byteLength)!.delete(buffer);
    this.order.delete(buffer);
    this.pooledBytes -= buffer.byteLength;
  }
}
