// Tensor: a shape, a dtype and a reference-counted storage owned by a device. Tensors are contiguous and row-major;
// ops that change the layout (permute) copy. Autograd state lives here too: `requiresGrad`, `grad` for leaves, and
// `fromOp` marking tensors produced by a recorded op.

import type { Device } from '../backend/device.js';
import { DisposedError, ShapeError, formatShape } from '../errors.js';
import type { DType, ValueArray } from './dtype.js';
import { trackTensor } from './scope.js';
import type { Storage } from './storage.js';

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function checkShape(shape: readonly number[], what: string): void {
  for (const d of shape)
    if (!Number.isInteger(d) || d < 0)
      throw new ShapeError(`${what}: shape ${formatShape(shape)} must hold non-negative integers`);
}

export class Tensor {
  readonly isTensor = true;
  readonly size: number;
  requiresGrad = false;
  /** Accumulated gradient of a leaf tensor after `backward`. */
  grad: Tensor | null = null;
  /** True when produced by an op recorded on the tape (not a leaf). */
  fromOp = false;
  /** Optional name, used in error messages and checkpoints. */
  name: string | undefined;
  /** Tape bookkeeping (src/autograd/tape.ts): how many recorded nodes keep this tensor for their backward. */
  tapeRefs = 0;
  /** Set by the tape's `release`: the owner is done with it; its storage goes once no node keeps it. */
  released = false;
  /** True while the tape has freed the storage of a graph member it can recompute (see tape.ts `materialize`). */
  dropped = false;
  private storageRef: Storage | null;

  constructor(
    readonly device: Device,
    storage: Storage,
    readonly shape: readonly number[],
    readonly dtype: DType,
  ) {
    this.size = shapeSize(shape);
    if (storage.size !== this.size)
      throw new ShapeError(
        `tensor: shape ${formatShape(shape)} needs ${this.size} elements, storage has ${storage.size}`,
      );
    this.storageRef = storage;
    trackTensor(this);
  }

  get rank(): number {
    return this.shape.length;
  }

  get disposed(): boolean {
    return this.storageRef === null;
  }

  get storage(): Storage {
    if (this.storageRef === null)
      throw new DisposedError(
        `tensor${this.name ? ` '${this.name}'` : ''} of shape ${formatShape(this.shape)} was used after dispose()`,
      );
    return this.storageRef;
  }

  /** Releases the storage (and the gradient). Safe to call twice; a dropped tensor is then gone for good. */
  dispose(): void {
    this.dropped = false;
    if (this.storageRef === null) return;
    this.storageRef.release();
    this.storageRef = null;
    this.grad?.dispose();
    this.grad = null;
  }

  /** The tape's: frees the storage but keeps the tensor's place in the graph (it can be refilled by `refill`). */
  drop(): void {
    if (this.storageRef === null) return;
    this.storageRef.release();
    this.storageRef = null;
    this.dropped = true;
  }

  /** The tape's: takes the storage of `from` (the same shape and dtype, recomputed), which is left disposed. */
  refill(from: Tensor): void {
    if (!this.dropped || from.storageRef === null || from.size !== this.size || from.dtype !== this.dtype)
      throw new ShapeError(`tensor: cannot refill ${this.toString()} from ${from.toString()}`);
    this.storageRef = from.storageRef;
    from.storageRef = null;
    this.dropped = false;
  }

  /** A host copy of the elements (synchronous: for the host devices; see `dataAsync`). */
  data(): ValueArray {
    return this.device.read(this);
  }

  /** A host copy of the elements, without blocking on a device that computes asynchronously. */
  dataAsync(): Promise<ValueArray> {
    return this.device.readAsync(this);
  }

  toArray(): number[] {
    return Array.from(this.data());
  }

  /** The single element of a tensor of size 1. */
  item(): number {
    if (this.size !== 1)
      throw new ShapeError(`item: tensor of shape ${formatShape(this.shape)} has ${this.size} elements`);
    return this.data()[0]!;
  }

  toString(): string {
    return `Tensor(${this.dtype}, ${formatShape(this.shape)}, ${this.device.name})`;
  }
}
