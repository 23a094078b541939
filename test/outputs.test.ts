// Native kernels take their outputs from the buffer pool without the zero fill (a recycled buffer holds old values).
// With the pool poisoned (every such buffer starts as NaN), each kernel must still match the reference backend, at
// sizes large enough for the multi-threaded paths (> kParallelGrain = 32768 elements) and at the edge cases.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { Device } from '../src/backend/device.js';
import type { CpuDevice } from '../src/backend/cpu/device.js';
import { BufferPool } from '../src/backend/host/pool.js';
import { Rng } from '../src/tensor/random.js';
import { tidy } from '../src/tensor/scope.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { assertClose, nat, randomTensor, ref } from './helpers.js';
import { kernels } from '../src/backend/kernels.js';

describe('buffer pool without zero fill', () => {
  it('evicts the oldest buffers, of any size, to stay within its capacity', () => {
    const K = 16384;
    const pool = new BufferPool(4 * K);
    const [a, b, c, d] = [K, 2 * K, K, 2 * K].map((bytes) => new ArrayBuffer(bytes));
    for (const x of [a, b, c, d]) pool.give(x!);
    assert.equal(pool.pooledBytes, 3 * K, 'a and b went to make room for d');
    assert.equal(pool.take('float32', K / 4).buffer, c);
    assert.equal(pool.take('float32', K / 2).buffer, d);
    assert.equal(pool.pooledBytes, 0);
    assert.notEqual(pool.take('float32', K / 4).buffer, a, 'evicted buffers do not come back');
  });

  it('reclaims only large arrays that own their whole buffer', () => {
    const pool = new BufferPool(1 << 22);
    pool.reclaim(new Float32Array(200), 800); // under the pool's 1 KiB
    pool.reclaim(new Float32Array(new ArrayBuffer(1 << 20), 4, 20000), 80000);
    assert.equal(pool.pooledBytes, 0, 'small arrays and views into larger buffers stay out');
    const big = new Float32Array(20000);
    pool.reclaim(big, 80000);
    assert.equal(pool.pooledBytes, 80000);
    assert.equal(pool.take('float32', 20000).buffer, big.buffer);
  });

  it('skips the fill of a recycled buffer only when asked, and poisons unfilled buffers when told', () => {
    const pool = new BufferPool(1 << 20);
    const a = pool.take('float32', 20000);
    a.fill(3);
    pool.give(a.buffer as ArrayBuffer);
    const b = pool.take('float32', 20000, false);
    assert.equal(b.buffer, a.buffer);
    assert.equal(b[0], 3, 'recycled without the fill');
    pool.give(b.buffer as ArrayBuffer);
    assert.ok(
      pool.take('float32', 20000).every((x) => x === 0),
      'zeroed on request',
    );
    pool.poison = true;
    assert.ok(
      pool.take('float32', 20000, false).every((x) => Number.isNaN(x)),
      'fresh buffers are poisoned too',
    );
    assert.ok(pool.take('int32', 7, false).every((x) => x === -1));
    assert.ok(
      pool.take('float32', 20000).every((x) => x === 0),
      'zeroed buffers are never poisoned',
    );
  });
});

type Case = [name: string, run: (be: Device, rng: Rng) => Tensor[]];

const rand = (be: Device, rng: Rng, shape: number[]) => randomTensor(be, rng, shape);
const ids = (be: Device, rng: Rng, n: number, limit: number, ignore?: number) =>
  be.fromData(
    Array.from({ length: n }, (_, i) => (ignore !== undefined && i % 5 === 2 ? ignore : rng.int(limit))),
    [n],
    'int32',
  );

const cases: Case[] = [
  [
    'matmul 300x200 by 200x130',
    (be, r) => [kernels(be, 'float32').matmul(rand(be, r, [300, 200]), rand(be, r, [200, 130]), false, false)],
  ],
  [
    'matmul transposed, batched',
    (be, r) => [kernels(be, 'float32').matmul(rand(be, r, [3, 90, 70]), rand(be, r, [3, 50, 90]), true, true)],
  ],
  [
    'matmul with K = 0 gives zeros',
    (be, r) => [kernels(be, 'float32').matmul(rand(be, r, [3, 0]), rand(be, r, [0, 4]), false, false)],
  ],
  ['add broadcast', (be, r) => [kernels(be, 'float32').binary('add', rand(be, r, [400, 100]), rand(be, r, [100]))]],
  ['mul', (be, r) => [kernels(be, 'float32').binary('mul', rand(be, r, [70000]), rand(be, r, [70000]))]],
  ['scale', (be, r) => [kernels(be, 'float32').scale(rand(be, r, [70000]), 0.5)]],
  [
    'sumToShape',
    (be, r) => [
      kernels(be, 'float32').sumToShape(rand(be, r, [300, 200]), [200]),
      kernels(be, 'float32').sumToShape(rand(be, r, [0, 5]), [5]),
    ],
  ],
  ...(['gelu', 'silu', 'relu'] as const).map((k): Case => [
    `activation ${k} and backward`,
    (be, r) => {
      const x = rand(be, r, [70000]);
      return [
        kernels(be, 'float32').activation(k, x),
        kernels(be, 'float32').activationBackward(k, x, rand(be, r, [70000])),
      ];
    },
  ]),
  [
    'softmax and backward',
    (be, r) => {
      const y = kernels(be, 'float32').softmax(rand(be, r, [300, 200]));
      return [y, kernels(be, 'float32').softmaxBackward(y, rand(be, r, [300, 200]))];
    },
  ],
  [
    'rmsNorm with and without weight, and dx',
    (be, r) => {
      const x = rand(be, r, [300, 200]);
      const w = rand(be, r, [200]);
      const a = kernels(be, 'float32').rmsNorm(x, w, 1e-6);
      const b = kernels(be, 'float32').rmsNorm(x, null, 1e-6);
      const g = kernels(be, 'float32').rmsNormBackward(x, w, a.rstd, rand(be, r, [300, 200]));
      return [a.y, a.rstd, b.y, b.rstd, g.dx, g.dw!];
    },
  ],
  [
    'crossEntropy with ignored rows, and backward',
    (be, r) => {
      const logits = rand(be, r, [700, 60]);
      const t = ids(be, r, 700, 60, -100);
      const f = kernels(be, 'float32').crossEntropy(logits, t, -100);
      return [f.loss, f.lse, kernels(be, 'float32').crossEntropyBackward(logits, t, f.lse, rand(be, r, [700]), -100)];
    },
  ],
  [
    'embedding and backward',
    (be, r) => {
      const i = be.view(ids(be, r, 700, 50), [7, 100]);
      return [
        kernels(be, 'float32').embedding(rand(be, r, [50, 100]), i),
        kernels(be, 'float32').embeddingBackward(rand(be, r, [7, 100, 100]), i, 50),
      ];
    },
  ],
  [
    'permute float32 and int32',
    (be, r) => {
      const i = be.fromData(
        Array.from({ length: 60000 }, () => r.int(1000)),
        [30, 40, 50],
        'int32',
      );
      return [
        kernels(be, 'float32').permute(rand(be, r, [30, 40, 50]), [2, 0, 1]),
        kernels(be, 'int32').permute(i, [1, 2, 0]),
      ];
    },
  ],
];

describe('native kernels fill their unzeroed outputs completely (poisoned pool)', () => {
  for (const [name, run] of cases)
    it(name, () => {
      const native = nat() as CpuDevice;
      assert.ok(native.pool.poison, 'test/helpers.ts poisons the native pool');
      const expected = tidy(() => run(ref, new Rng(5)).map((t) => t.data()));
      const actual = tidy(() => run(native, new Rng(5)).map((t) => t.data()));
      assert.equal(actual.length, expected.length);
      actual.forEach((a, k) => {
        assert.ok(!a.some((x) => Number.isNaN(x)), `${name}: output ${k} has unwritten (NaN) elements`);
        assertClose(a, expected[k]!, 2e-5, `${name}: output ${k}`);
      });
    });
});
