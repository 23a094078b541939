// Causal attention beyond the op-case table (test/op-cases.ts, which checks small shapes against the reference and
// finite differences): FlashAttention equals the naive algorithm (forward and gradients) on shapes around and across
// the native tile, native equals the reference there, causality, KV-cache decoding equals the full computation, and
// flash memory is linear in T while naive memory is quadratic.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { Device } from '../src/backend/device.js';
import type { AttentionAlgorithm } from '../src/backend/kernels.js';
import { backward } from '../src/autograd/tape.js';
import { ShapeError } from '../src/errors.js';
import { attentionDecode, causalAttention } from '../src/ops/attention.js';
import { concat, permute, reshape, slice } from '../src/ops/shape.js';
import type { DType } from '../src/tensor/dtype.js';
import { Rng } from '../src/tensor/random.js';
import { tidy } from '../src/tensor/scope.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { assertClose, nat, randomTensor, ref } from './helpers.js';

const ALGORITHMS: AttentionAlgorithm[] = ['naive', 'flash'];

// [B, T, H, K, V]: T = 1, odd T, T around and across the native tile (64), V ≠ K, and B·H = 1 (the kernels' serial
// path) next to B·H ≥ 2 (the thread-parallel path).
const SHAPES: [number, number, number, number, number][] = [
  [1, 1, 1, 4, 4],
  [2, 7, 3, 5, 3],
  [1, 64, 2, 16, 16],
  [1, 65, 1, 8, 12],
  [2, 130, 2, 32, 32],
  [1, 200, 3, 64, 64],
];

interface Result {
  o: Float64Array;
  grads: Float64Array[];
}

/** Forward and backward (with a fixed random output gradient) of one algorithm on one backend, same seeded inputs. */
function run(be: Device, dtype: DType, algorithm: AttentionAlgorithm, shape: number[], seed: number): Result {
  const [B, T, H, K, V] = shape as [number, number, number, number, number];
  const rng = new Rng(seed);
  const q = randomTensor(be, rng, [B, T, H, K], { dtype, requiresGrad: true });
  const k = randomTensor(be, rng, [B, T, H, K], { dtype, requiresGrad: true });
  const v = randomTensor(be, rng, [B, T, H, V], { dtype, requiresGrad: true });
  const g = randomTensor(be, rng, [B, T, H, V], { dtype });
  const o = tidy(() => {
    const out = causalAttention(q, k, v, { algorithm });
    backward(out, g);
    return Float64Array.from(out.data());
  });
  const grads = [q, k, v].map((t) => Float64Array.from(t.grad!.data()));
  for (const t of [q, k, v, g]) t.dispose();
  return { o, grads };
}

function assertSame(a: Result, b: Result, tol: number, what: string): void {
  assertClose(a.o, b.o, tol, `${what}: o`);
  ['dq', 'dk', 'dv'].forEach((name, i) => assertClose(a.grads[i]!, b.grads[i]!, tol, `${what}: ${name}`));
}

describe('causal attention', () => {
  it('flash equals naive on the reference backend (float64, tol 1e-12)', () => {
    for (const [s, shape] of SHAPES.slice(0, 5).entries()) {
      const naive = run(ref, 'float64', 'naive', shape, 10 + s);
      const flash = run(ref, 'float64', 'flash', shape, 10 + s);
      assertSame(flash, naive, 1e-12, `reference [${shape}]`);
    }
  });

  it('native flash equals native naive (float32, tol 1e-5)', () => {
    for (const [s, shape] of SHAPES.entries()) {
      const naive = run(nat(), 'float32', 'naive', shape, 20 + s);
      const flash = run(nat(), 'float32', 'flash', shape, 20 + s);
      assertSame(flash, naive, 1e-5, `native [${shape}]`);
    }
  });

  it('native equals the reference for both algorithms (float32, tol 1e-5)', () => {
    for (const algorithm of ALGORITHMS)
      for (const [s, shape] of SHAPES.slice(0, 5).entries()) {
        const r = run(ref, 'float32', algorithm, shape, 30 + s);
        const n = run(nat(), 'float32', algorithm, shape, 30 + s);
        assertSame(n, r, 1e-5, `${algorithm} [${shape}]`);
      }
  });

  it('a position attends only to itself and earlier ones', () => {
    // Changing k, v at the last position must leave every earlier output unchanged.
    const [B, T, H, K] = [2, 70, 2, 8];
    const row = T * H * K; // one batch row of a [B, T, H, K] tensor; its last position is the last H·K values
    for (const algorithm of ALGORITHMS) {
      const rng = new Rng(5);
      const q = randomTensor(nat(), rng, [B, T, H, K]);
      const k = randomTensor(nat(), rng, [B, T, H, K]);
      const v = randomTensor(nat(), rng, [B, T, H, K]);
      const before = tidy(() => causalAttention(q, k, v, { algorithm }).data());
      for (const t of [k, v]) {
        const d = t.data();
        for (let b = 0; b < B; b++) for (let x = row - H * K; x < row; x++) d[b * row + x] += 3;
        nat().write(t, d);
      }
      const after = tidy(() => causalAttention(q, k, v, { algorithm }).data());
      for (let b = 0; b < B; b++)
        for (let i = 0; i < row - H * K; i++) assert.equal(after[b * row + i], before[b * row + i]);
      for (const t of [q, k, v]) t.dispose();
    }
  });

  it('rejects mismatched shapes and unknown algorithms', () => {
    const t = (shape: number[]) => nat().zeros(shape, 'float32');
    assert.throws(() => causalAttention(t([1, 3, 2, 4]), t([1, 4, 2, 4]), t([1, 3, 2, 4]), { algorithm: 'flash' }), {
      name: 'ShapeError',
      message: /causalAttention: k has shape \[1, 4, 2, 4\], expected \[1, 3, 2, 4\]/,
    });
    assert.throws(() => causalAttention(t([1, 3, 2, 4]), t([1, 3, 2, 4]), t([1, 3, 1, 4]), { algorithm: 'flash' }), {
      message: /v must be \[1, 3, 2, V\], got \[1, 3, 1, 4\]/,
    });
    assert.throws(() => causalAttention(t([2, 3, 4]), t([2, 3, 4]), t([2, 3, 4]), { algorithm: 'naive' }), ShapeError);
    assert.throws(
      () =>
        causalAttention(t([1, 1, 2, 2]), t([1, 1, 2, 2]), t([1, 1, 2, 2]), {
          algorithm: 'fast' as AttentionAlgorithm,
        }),
      /algorithm must be 'naive' or 'flash'/,
    );
  });
});

describe('KV-cache decode attention', () => {
  // Row b of a batch has lengths[b] cached positions in a cache of capacity C; entries past the length hold junk
  // that must be ignored. Each row's output must equal the last row of full causal attention over its prefix.
  function check(be: Device, dtype: DType, tol: number): void {
    const [B, C, H, K, V] = [3, 9, 2, 6, 5];
    const lengths = [1, 9, 4];
    const rng = new Rng(7);
    const q = randomTensor(be, rng, [B, C, H, K], { dtype });
    const k = randomTensor(be, rng, [B, C, H, K], { dtype });
    const v = randomTensor(be, rng, [B, C, H, V], { dtype });
    tidy(() => {
      // The caches are head-major [B, H, C, *]; the query of row b is its position lengths[b] − 1.
      const kCache = permute(k, [0, 2, 1, 3]);
      const vCache = permute(v, [0, 2, 1, 3]);
      const qDecode = concat(
        lengths.map((n, b) => reshape(slice(slice(q, 0, b, b + 1), 1, n - 1, n), [1, H, K])),
        0,
      );
      const got = attentionDecode(qDecode, kCache, vCache, lengths).data();
      lengths.forEach((n, b) => {
        const prefix = (t: Tensor) => slice(slice(t, 0, b, b + 1), 1, 0, n);
        const full = causalAttention(prefix(q), prefix(k), prefix(v), { algorithm: 'naive' }); // [1, n, H, V]
        const expected = slice(full, 1, n - 1, n).data();
        assertClose(got.subarray(b * H * V, (b + 1) * H * V), expected, tol, `decode row ${b} (length ${n})`);
      });
    });
    for (const t of [q, k, v]) t.dispose();
  }

  it('equals the last row of full attention (reference float64, native float32)', () => {
    check(ref, 'float64', 1e-12);
    check(nat(), 'float32', 1e-5);
  });

  it('rejects lengths outside the cache', () => {
    const z = (shape: number[]) => nat().zeros(shape, 'float32');
    assert.throws(() => attentionDecode(z([2, 1, 4]), z([2, 1, 3, 4]), z([2, 1, 3, 4]), [1, 4]), {
      name: 'ShapeError',
      message: /length 4 of row 1 is outside \[1, 3\]/,
    });
    assert.throws(() => attentionDecode(z([2, 1, 4]), z([2, 1, 3, 4]), z([2, 1, 3, 4]), [0, 1]), /length 0 of row 0/);
    assert.throws(() => attentionDecode(z([2, 1, 4]), z([2, 1, 3, 4]), z([2, 1, 3, 4]), [1]), /1 lengths/);
  });
});

describe('attention memory (engine accounting, native)', () => {
  /** Peak tensor bytes of a forward + backward at length T above what the inputs hold. */
  function peakBytes(algorithm: AttentionAlgorithm, T: number): number {
    const be = nat();
    const [B, H, K] = [1, 4, 64];
    const rng = new Rng(3);
    const q = randomTensor(be, rng, [B, T, H, K], { requiresGrad: true });
    const k = randomTensor(be, rng, [B, T, H, K], { requiresGrad: true });
    const v = randomTensor(be, rng, [B, T, H, K], { requiresGrad: true });
    const g = randomTensor(be, rng, [B, T, H, K]);
    const base = be.memory.current;
    be.memory.resetPeak();
    tidy(() => backward(causalAttention(q, k, v, { algorithm }), g));
    const peak = be.memory.peak - base;
    for (const t of [q, k, v, g]) t.dispose();
    return peak;
  }

  it('flash grows linearly with T, naive quadratically', () => {
    const ratios = (algorithm: AttentionAlgorithm) => {
      const [p512, p1024, p2048] = [512, 1024, 2048].map((T) => peakBytes(algorithm, T));
      return [p1024! / p512!, p2048! / p1024!];
    };
    for (const r of ratios('flash')) assert.ok(r > 1.8 && r < 2.2, `flash peak ratio for 2x length: ${r}`);
    for (const r of ratios('naive')) assert.ok(r > 3.3, `naive peak ratio for 2x length: ${r}`);
  });
});
