// Test utilities: random tensors on either backend, closeness checks with stated tolerances, and central finite
// differences in float64 on the reference backend.

import assert from 'node:assert/strict';

import { getBackend, referenceBackend } from '../src/backend/index.js';
import type { Device } from '../src/backend/device.js';
import type { CpuDevice } from '../src/backend/cpu/device.js';
import type { HostDevice } from '../src/backend/host/device.js';
import type { DType } from '../src/tensor/dtype.js';
import { Rng } from '../src/tensor/random.js';
import { backward } from '../src/autograd/tape.js';
import { mul, sum } from '../src/ops/math.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { shapeSize } from '../src/tensor/tensor.js';
import { tidy } from '../src/tensor/scope.js';

export const ref = referenceBackend();

/**
 * The native backend; tests that need it fail loudly if the addon did not build. Its pool is poisoned: outputs that
 * kernels take without the zero fill start as NaN, so an element a kernel fails to write shows up in the comparison.
 */
export function nat(): Device {
  const be = getBackend('cpu') as CpuDevice;
  be.pool.poison = true;
  return be;
}

/** A device by name for the op suite (RETNET_TEST_DEVICE): 'cpu' is `nat()`, with its pool poisoned. */
export function testDevice(name: string): Device {
  if (name === 'cpu' || name === 'native') return nat();
  return name === 'reference' ? ref : getBackend(name);
}

export function randomData(rng: Rng, n: number, scale = 1): Float64Array {
  const d = new Float64Array(n);
  for (let i = 0; i < n; i++) d[i] = scale * rng.normal();
  return d;
}

export function randomTensor(
  be: Device,
  rng: Rng,
  shape: readonly number[],
  opts: { dtype?: DType; scale?: number; requiresGrad?: boolean } = {},
): Tensor {
  const t = be.fromData(randomData(rng, shapeSize(shape), opts.scale ?? 1), shape, opts.dtype ?? 'float32');
  t.requiresGrad = opts.requiresGrad ?? false;
  return t;
}

/** The same values on another backend/dtype. */
export function copyTo(t: Tensor, be: Device, dtype: DType = t.dtype, requiresGrad = t.requiresGrad): Tensor {
  const c = be.fromData(t.data(), t.shape, dtype);
  c.requiresGrad = requiresGrad;
  return c;
}

/** max |a - b| / max(1, max |b|) <= tol, with a message naming the worst element. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length} vs ${expected.length}`);
  let maxAbs = 0;
  for (let i = 0; i < expected.length; i++) maxAbs = Math.max(maxAbs, Math.abs(expected[i]!));
  const denom = Math.max(1, maxAbs);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < expected.length; i++) {
    const e = Math.abs(actual[i]! - expected[i]!) / denom;
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  assert.ok(
    worst <= tol,
    `${what}: relative error ${worst.toExponential(3)} > ${tol} at ${at} (got ${actual[at]}, expected ${expected[at]})`,
  );
}

/**
 * Checks the tape's gradients of sum(f(inputs) * R) against central finite differences, in float64 on the reference
 * backend. Inputs are float64 reference tensors with requiresGrad set on those to check.
 */
export function checkGradients(
  f: (inputs: Tensor[]) => Tensor,
  inputs: Tensor[],
  what: string,
  opts: { h?: number; tol?: number; seed?: number } = {},
): void {
  const h = opts.h ?? 1e-6;
  const tol = opts.tol ?? 1e-6;
  const rng = new Rng(opts.seed ?? 99);
  const out0 = tidy(() => f(inputs).shape);
  const dev = inputs[0]!.device;
  const weights = dev.fromData(randomData(rng, shapeSize(out0)), out0, 'float64');
  const objective = () => tidy(() => sum(mul(f(inputs), weights)).item());
  for (const t of inputs) {
    t.grad?.dispose();
    t.grad = null;
  }
  tidy(() => {
    const loss = sum(mul(f(inputs), weights));
    backward(loss);
  });
  for (const [k, t] of inputs.entries()) {
    if (!t.requiresGrad) continue;
    assert.ok(t.grad, `${what}: input ${k} received no gradient`);
    const analytic = t.grad.data();
    // Perturbed in place: through the storage on a host device, else by writing the whole tensor.
    const data = dev.host ? ((dev as HostDevice).raw(t) as Float64Array) : Float64Array.from(dev.read(t));
    const set = (i: number, x: number) => {
      data[i] = x;
      if (!dev.host) dev.write(t, data);
    };
    const numeric = new Float64Array(data.length);
    for (let i = 0; i < data.length; i++) {
      const v = data[i]!;
      set(i, v + h);
      const up = objective();
      set(i, v - h);
      const down = objective();
      set(i, v);
      numeric[i] = (up - down) / (2 * h);
    }
    assertClose(analytic, numeric, tol, `${what}: gradient of input ${k}`);
  }
  weights.dispose();
}

// Code point ranges a random string draws from: ASCII, Latin-1, Greek, combining marks, CJK, emoji (astral plane),
// odd whitespace, and characters outside the Basic Multilingual Plane.
const RANGES: [number, number][] = [
  [0x20, 0x7e], [0x09, 0x0a], [0xa0, 0xff], [0x370, 0x3ff], [0x300, 0x36f], [0x4e00, 0x4fff],
  [0x1f300, 0x1f6ff], [0x2000, 0x200f], [0x3000, 0x3000], [0x10000, 0x1000f], [0xe000, 0xe0ff],
]; // prettier-ignore

export function randomUnicode(rng: Rng, length: number): string {
  let s = '';
  for (let i = 0; i < length; i++) {
    const [lo, hi] = RANGES[rng.int(RANGES.length)]!;
    s += String.fromCodePoint(lo + rng.int(hi - lo + 1));
  }
  return s;
}
