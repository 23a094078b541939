// The op suite against the reference: every case of test/op-cases.ts, forward values and gradients, on the devices
// RETNET_TEST_DEVICE names (comma-separated; default 'cpu,reference'). For each device: float32 (not on the reference
// itself: its float64 kernels are checked against finite differences by gradients.test.ts), and bfloat16 and float16
// where the device stores them. A 16-bit case builds its inputs in that dtype on the device; the reference runs float32 on the same
// (rounded) values, so the comparison measures what the device does beyond storage rounding of the inputs.
// Tolerance: relative to max(1, max |reference|), each case's `tol` (default 2e-6) for float32, scaled per device and
// dtype by TOLERANCE below; gradients get 5x. A device the variable names must load: a missing one fails the run.
import { describe, it } from 'node:test';

import { backward } from '../src/autograd/tape.js';
import type { Device } from '../src/backend/device.js';
import { mul, sum } from '../src/ops/math.js';
import type { DType } from '../src/tensor/dtype.js';
import { Rng } from '../src/tensor/random.js';
import { tidy } from '../src/tensor/scope.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { assertClose, randomData, ref, testDevice } from './helpers.js';
import { type InputSpec, buildInputs, opCases } from './op-cases.js';

/**
 * Forward tolerance per device and dtype, a floor under each case's own float32 tolerance: two half-ulps of the
 * 16-bit format (2^-8 for bfloat16, 2^-11 for float16), since a result is rounded on storage and an op of several
 * kernels (linear: product, then bias) rounds once more in between. Statistics kept for backward stay float32
 * (KERNEL_INFO.stats), without which flash attention's bfloat16 gradients were 10% off.
 */
const TOLERANCE: Record<string, Partial<Record<DType, number>>> = {
  reference: { float32: 0, bfloat16: 4e-3, float16: 5e-4 },
  cpu: { float32: 0, bfloat16: 4e-3, float16: 5e-4 },
};
const DTYPES: DType[] = ['float32', 'bfloat16', 'float16'];

const names = (process.env.RETNET_TEST_DEVICE ?? 'cpu,reference').split(',').filter((n) => n !== '');

/** Forward of case c on its inputs, and the gradients of sum(y ⊙ w) for a fixed random w. */
function run(c: (typeof opCases)[number], inputs: Tensor[], w: (y: Tensor) => Tensor) {
  const out = tidy(() => {
    const y = c.f(inputs);
    if (y.requiresGrad) backward(sum(mul(y, w(y))));
    return y.data();
  });
  const grads = inputs.map((t) => (t.grad ? t.grad.data() : null));
  return { out, grads };
}

function check(be: Device, dtype: DType, c: (typeof opCases)[number], specs: InputSpec[], v: number): void {
  const seed = 2000 + 17 * v;
  const inputs = buildInputs(be, new Rng(seed), specs, dtype);
  // The reference's inputs: the device's values (rounded to dtype), in float32.
  const refInputs = inputs.map((t) => {
    const r = ref.fromData(t.data(), t.shape, t.dtype === 'int32' ? 'int32' : 'float32');
    r.requiresGrad = t.requiresGrad;
    return r;
  });
  const wFor = (on: Device, as: DType) => (y: Tensor) => {
    const values = ref.fromData(randomData(new Rng(seed + 1), y.size), y.shape, dtype).data();
    return on.fromData(values, y.shape, as);
  };
  const r = run(c, refInputs, wFor(ref, 'float32'));
  const d = run(c, inputs, wFor(be, dtype));
  const tol = Math.max(c.tol ?? 2e-6, TOLERANCE[be.name]?.[dtype] ?? 0);
  const what = `${c.name} variant ${v} on ${be.name} (${dtype})`;
  assertClose(d.out, r.out, tol, `${what} forward`);
  r.grads.forEach((g, k) => {
    if (g) assertClose(d.grads[k]!, g, tol * 5, `${what} gradient ${k}`);
  });
  for (const t of [...inputs, ...refInputs]) t.dispose();
}

for (const name of names) {
  const be = testDevice(name);
  for (const dtype of DTYPES.filter((d) => be.supportsDType(d) && (d !== 'float32' || be.name !== 'reference')))
    describe(`the ${be.name} device equals the reference kernels (${dtype})`, () => {
      for (const c of opCases)
        it(c.name, () => {
          c.variants.forEach((specs, v) => check(be, dtype, c, specs, v));
        });
    });
}
