// Every op's backward against central finite differences, in float64 on the reference backend.
import { describe, it } from 'node:test';

import { Rng } from '../src/tensor/random.js';
import { checkGradients, ref } from './helpers.js';
import { buildInputs, opCases } from './op-cases.js';

describe('gradients match central finite differences (float64, tol 1e-6)', () => {
  for (const c of opCases.filter((c) => c.gradCheck !== false)) {
    it(c.name, () => {
      c.variants.forEach((specs, v) => {
        const inputs = buildInputs(ref, new Rng(1000 + v), specs, 'float64');
        checkGradients(c.f, inputs, `${c.name} variant ${v}`);
        for (const t of inputs) t.dispose();
      });
    });
  }
});
