// Tensor creation on the default backend (or one passed in the options).

import type { Device } from '../backend/device.js';
import { getBackend } from '../backend/select.js';
import type { DType } from '../tensor/dtype.js';
import type { Rng } from '../tensor/random.js';
import { type Tensor, checkShape, shapeSize } from '../tensor/tensor.js';

export interface CreateOptions {
  dtype?: DType;
  backend?: Device;
  requiresGrad?: boolean;
}

function finish(t: Tensor, opts: CreateOptions): Tensor {
  if (opts.requiresGrad) t.requiresGrad = true;
  return t;
}

/** A tensor holding a copy of `data` with the given shape (default: 1-D). */
export function tensor(data: ArrayLike<number>, shape?: readonly number[], opts: CreateOptions = {}): Tensor {
  const be = opts.backend ?? getBackend();
  return finish(be.fromData(data, shape ?? [data.length], opts.dtype ?? 'float32'), opts);
}

export function zeros(shape: readonly number[], opts: CreateOptions = {}): Tensor {
  const be = opts.backend ?? getBackend();
  return finish(be.zeros(shape, opts.dtype ?? 'float32'), opts);
}

export function full(shape: readonly number[], value: number, opts: CreateOptions = {}): Tensor {
  checkShape(shape, 'full');
  return tensor(new Array<number>(shapeSize(shape)).fill(value), shape, opts);
}

export function ones(shape: readonly number[], opts: CreateOptions = {}): Tensor {
  return full(shape, 1, opts);
}

/** Normal(mean, std) entries from rng. */
export function randn(shape: readonly number[], rng: Rng, std = 1, opts: CreateOptions = {}, mean = 0): Tensor {
  checkShape(shape, 'randn');
  const data = new Float64Array(shapeSize(shape));
  for (let i = 0; i < data.length; i++) data[i] = mean + std * rng.normal();
  return tensor(data, shape, opts);
}

/** Uniform [lo, hi) entries from rng. */
export function uniform(shape: readonly number[], rng: Rng, lo: number, hi: number, opts: CreateOptions = {}): Tensor {
  checkShape(shape, 'uniform');
  const data = new Float64Array(shapeSize(shape));
  for (let i = 0; i < data.length; i++) data[i] = lo + (hi - lo) * rng.uniform();
  return tensor(data, shape, opts);
}
