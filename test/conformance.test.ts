// Native kernels against the reference backend on the same inputs: forward values and gradients.
// Tolerance: each case's `tol` (default 2e-6), relative to max(1, max |reference|), float32 on both sides.
import { describe, it } from 'node:test';

import { backward } from '../src/autograd/tape.js';
import { mul, sum } from '../src/ops/math.js';
import { Rng } from '../src/tensor/random.js';
import { tidy } from '../src/tensor/scope.js';
import type { Device } from '../src/backend/device.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { assertClose, nat, randomData, ref } from './helpers.js';
import { buildInputs, opCases } from './op-cases.js';

function run(be: Device, c: (typeof opCases)[number], specs: Parameters<typeof buildInputs>[2], seed: number) {
  const inputs = buildInputs(be, new Rng(seed), specs, 'float32');
  const out = tidy(() => {
    const y = c.f(inputs);
    const w = be.fromData(randomData(new Rng(seed + 1), y.size), y.shape, 'float32');
    if (y.requiresGrad) backward(sum(mul(y, w)));
    return y.data();
  });
  const grads = inputs.map((t: Tensor) => (t.grad ? t.grad.data() : null));
  for (const t of inputs) t.dispose();
  return { out, grads };
}

describe('native kernels equal the reference backend (float32)', () => {
  for (const c of opCases) {
    it(c.name, () => {
      const tol = c.tol ?? 2e-6;
      c.variants.forEach((specs, v) => {
        const seed = 2000 + 17 * v;
        const r = run(ref, c, specs, seed);
        const n = run(nat(), c, specs, seed);
        assertClose(n.out, r.out, tol, `${c.name} variant ${v} forward`);
        r.grads.forEach((g, k) => {
          if (g) assertClose(n.grads[k]!, g, tol * 5, `${c.name} variant ${v} gradient ${k}`);
        });
      });
    });
  }
});
