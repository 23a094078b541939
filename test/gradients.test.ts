// Every op's backward against central finite differences, in float64: on the reference device, and on each device
// RETNET_TEST_DEVICE names that stores float64 (the others are held to the reference's gradients by
// conformance.test.ts, float32 differences being too coarse for finite differences).
import { describe, it } from 'node:test';

import { Rng } from '../src/tensor/random.js';
import { checkGradients, ref, testDevice } from './helpers.js';
import { buildInputs, opCases } from './op-cases.js';

const named = (process.env.RETNET_TEST_DEVICE ?? '').split(',').filter((n) => n !== '' && n !== 'reference');
const devices = [ref, ...named.map(testDevice).filter((d) => d.supportsDType('float64'))];

for (const be of devices)
  describe(`gradients match central finite differences on the ${be.name} device (float64, tol 1e-6)`, () => {
    for (const c of opCases.filter((c) => c.gradCheck !== false)) {
      it(c.name, () => {
        c.variants.forEach((specs, v) => {
          const inputs = buildInputs(be, new Rng(1000 + v), specs, 'float64');
          checkGradients(c.f, inputs, `${c.name} variant ${v}`);
          for (const t of inputs) t.dispose();
        });
      });
    }
  });
