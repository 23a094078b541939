// Storage: the memory behind one or more tensors. Reshapes share a storage, so it is reference-counted and released
// (and un-accounted) when the last tensor using it is disposed. Storage is an interface because a backend may keep
// its memory on a device; the CPU backends hold a typed array.

import type { DType, DataArray } from './dtype.js';
import { bytesPerElement } from './dtype.js';
import type { MemoryTracker } from './memory.js';
import type { BufferPool } from './pool.js';

export interface Storage {
  readonly dtype: DType;
  /** Number of elements. */
  readonly size: number;
  readonly byteLength: number;
  retain(): void;
  /** Drops one reference; frees the memory when none is left. */
  release(): void;
  readonly released: boolean;
}

export class CpuStorage implements Storage {
  readonly byteLength: number;
  private refs = 1;
  private dataRef: DataArray | null;

  /** `pool` (the backend's) takes the array back once the last reference is released. */
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
