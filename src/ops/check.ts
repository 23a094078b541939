// Validation shared by the ops: every op checks its inputs here before any kernel runs, so a mistake surfaces as a
// message naming the op and the shapes, never as a wrong answer or a crash inside a kernel.

import type { Device } from '../backend/device.js';
import { BackendError, DTypeError, ShapeError, formatShape } from '../errors.js';
import { type DType, dtypeKind } from '../tensor/dtype.js';
import type { Tensor } from '../tensor/tensor.js';

/** The common device of the inputs (also checks none is disposed). */
export function deviceOf(op: string, ...ts: Tensor[]): Device {
  for (const t of ts) void t.storage; // throws DisposedError for a disposed input
  const d = ts[0]!.device;
  for (const t of ts)
    if (t.device !== d)
      throw new BackendError(`${op}: inputs live on different backends (${d.name} and ${t.device.name})`);
  return d;
}

export function expectFloat(op: string, what: string, t: Tensor): void {
  if (dtypeKind(t.dtype) !== 'float') throw new DTypeError(`${op}: ${what} must be a float tensor, got ${t.dtype}`);
}

export function expectDType(op: string, what: string, t: Tensor, dtype: DType): void {
  if (t.dtype !== dtype) throw new DTypeError(`${op}: ${what} must be ${dtype}, got ${t.dtype}`);
}

export function sameDType(op: string, a: Tensor, b: Tensor): void {
  if (a.dtype !== b.dtype) throw new DTypeError(`${op}: dtypes differ (${a.dtype} and ${b.dtype})`);
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function expectShape(op: string, what: string, t: Tensor, shape: readonly number[]): void {
  if (!sameShape(t.shape, shape))
    throw new ShapeError(`${op}: ${what} has shape ${formatShape(t.shape)}, expected ${formatShape(shape)}`);
}

/** True when `suffix` equals the trailing dims of `shape`. */
export function isSuffix(suffix: readonly number[], shape: readonly number[]): boolean {
  if (suffix.length > shape.length) return false;
  const off = shape.length - suffix.length;
  return suffix.every((d, i) => d === shape[off + i]);
}

export function normalizeAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank)
    throw new ShapeError(`${op}: axis ${axis} out of range for rank ${rank}`);
  return a;
}
