// The device contract: where a tensor's elements live. A device allocates and frees storage, moves elements between
// the host and itself, and counts the bytes it holds; it computes nothing. Computation is the kernel table's
// (kernels.ts): kernels are registered per (kernel, device) and a device may implement any subset of them.
//
// A device that keeps its memory elsewhere (a GPU) implements the same methods: `read` may then be slow or
// unsupported (it throws), and `readAsync` is the path generation and the server use; host devices answer both at
// once. Freeing is `tensor.dispose()` (it releases the storage, which returns the memory to the device).

import type { DType, DataArray, ValueArray } from '../tensor/dtype.js';
import type { MemoryTracker } from '../tensor/memory.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Kernels } from './kernels.js';

/** Device names: the two host devices here, and room for others (a cuda or webgpu device registers its own). */
export type DeviceName = 'reference' | 'cpu' | (string & {});

/** A recorded sequence of a device's launches (Device.capture), replayed as one. */
export interface DeviceGraph {
  /** Queues one replay. */
  launch(): void;
  /** Frees the recording and the device memory it held. */
  dispose(): void;
  /** Device bytes the recording holds (its intermediates), beyond the tensors fn returned. */
  readonly bytes: number;
}

export interface Device {
  readonly name: DeviceName;
  /** Exact bytes of live storage on this device, and their peak. */
  readonly memory: MemoryTracker;
  /** The dtypes this device stores. */
  readonly dtypes: readonly DType[];
  /** True when the storage is host memory that `read` returns without a transfer. */
  readonly host: boolean;
  supportsDType(dtype: DType): boolean;

  /** A zero-filled tensor. */
  zeros(shape: readonly number[], dtype: DType): Tensor;
  /** A tensor whose every element the caller overwrites (its initial contents are arbitrary). */
  empty(shape: readonly number[], dtype: DType): Tensor;
  /** A tensor holding a copy of `data` (converted to dtype: rounded for bfloat16/float16, quantized by rows). */
  fromData(data: ArrayLike<number>, shape: readonly number[], dtype: DType): Tensor;
  /** A tensor over a host copy of `data` as it is stored (raw bfloat16/float16 bits, a quantized format's bytes). */
  fromStorage(data: DataArray, shape: readonly number[], dtype: DType): Tensor;
  /** A host copy of the tensor's values (bfloat16, float16 and quantized formats read back as float32). */
  read(t: Tensor): ValueArray;
  /** The same, without blocking on a device that computes asynchronously. */
  readAsync(t: Tensor): Promise<ValueArray>;
  /** A host copy of the storage array as it is stored (see fromStorage). */
  readStorage(t: Tensor): DataArray;
  /** In place: overwrites the tensor's elements with `data` (same length), converting to its dtype. */
  write(t: Tensor, data: ArrayLike<number>): void;
  /** In place: dst[dstOffset, +length) = src[srcOffset, +length), elements of one dtype on this device. */
  copy(src: Tensor, srcOffset: number, dst: Tensor, dstOffset: number, length: number): void;
  /** A tensor of another shape sharing the storage (a reshape); the storage lives until both are disposed. */
  view(t: Tensor, shape: readonly number[]): Tensor;
  /**
   * Blocks until every kernel and copy queued on the device has finished. Only devices that compute asynchronously
   * have it (cuda); on the others work is done when a kernel returns. Timing code calls it around what it times.
   */
  synchronize?(): void;

  /**
   * Only on a device whose reads are asynchronous: runs `compute` on the host after everything recorded so far and
   * before everything recorded later, with the values of `inputs`; its results (one array per tensor, in order) are
   * written into `outputs`. The kernel table's reference fallback uses it; the tensors stay alive until it has run.
   */
  deferHost?(
    inputs: readonly Tensor[],
    outputs: readonly Tensor[],
    compute: (values: ValueArray[]) => ValueArray[],
  ): void;

  /**
   * Only on a device with graphs (cuda): runs `fn` with the device recording its launches instead of running them,
   * and returns the recording with fn's outputs (whose values exist only after a replay, which overwrites them).
   * While recording, nothing may be read or written from the host. The tensors fn reads must stay where they are
   * while the graph lives; the graph keeps what fn freed. A failed capture throws and leaves nothing behind.
   */
  capture?(fn: () => Tensor[]): { graph: DeviceGraph; outputs: Tensor[] };

  /** The kernel table's resolved kernels for this device, per dispatch dtype (kept here for one-lookup dispatch). */
  readonly resolved: Partial<Record<DType, Kernels>>;
}
