// Storage: the memory behind one or more tensors. Reshapes share a storage, so it is reference-counted and released
// (and un-accounted) when the last tensor using it is disposed. Storage is an interface because a device may keep
// its memory elsewhere; the host devices hold a typed array (backend/host/device.ts).

import type { DType } from './dtype.js';

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
