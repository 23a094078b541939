// Engine behaviour beyond single kernels: error messages, memory accounting, scopes, the tape, AdamW and the RNG
// (safetensors I/O: safetensors.test.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { backward, noGrad, release, tapeLength } from '../src/autograd/tape.js';
import { DisposedError, DTypeError, ShapeError, BackendError } from '../src/errors.js';
import { add, linear, matmul, mul, scale, sum } from '../src/ops/math.js';
import { rotary } from '../src/ops/rotary.js';
import { crossEntropy, embedding, rmsNorm } from '../src/ops/nn.js';
import { reshape } from '../src/ops/shape.js';
import { BufferPool } from '../src/backend/host/pool.js';
import { Rng } from '../src/tensor/random.js';
import { keep, tidy } from '../src/tensor/scope.js';
import { assertClose, nat, randomTensor, ref } from './helpers.js';
import { kernelsOf } from '../src/backend/kernels.js';

describe('errors name the op and the shapes', () => {
  it('shape mismatches', () => {
    const be = nat();
    const rng = new Rng(1);
    tidy(() => {
      const a = randomTensor(be, rng, [2, 3]);
      const b = randomTensor(be, rng, [4, 5]);
      assert.throws(
        () => matmul(a, b),
        (e: Error) => e instanceof ShapeError && /matmul: cannot multiply \[2, 3\] by \[4, 5\]/.test(e.message),
      );
      assert.throws(() => add(a, b), /add: shape \[4, 5\] of b must equal a's \[2, 3\] or be a suffix of it/);
      assert.throws(() => linear(a, b), /linear: input \[2, 3\] does not fit weight \[4, 5\]/);
      assert.throws(() => reshape(a, [4, 2]), /reshape: cannot reshape \[2, 3\] \(6 elements\) to \[4, 2\]/);
      assert.throws(
        () => rmsNorm(a, randomTensor(be, rng, [2]), 1e-6),
        /rmsNorm: weight has shape \[2\], expected \[3\]/,
      );
    });
  });

  it('wrong dtypes and backends', () => {
    tidy(() => {
      const ids = nat().fromData([0, 1], [2], 'int32');
      const x = randomTensor(nat(), new Rng(2), [2, 4]);
      assert.throws(
        () => add(ids, ids),
        (e: Error) => e instanceof DTypeError && /add: a must be a float tensor, got int32/.test(e.message),
      );
      assert.throws(() => embedding(x, x), /embedding: ids must be int32, got float32/);
      assert.throws(() => crossEntropy(x, x), /crossEntropy: targets must be int32/);
      assert.throws(() => nat().zeros([2], 'float64'), /cpu device does not hold float64/);
      const r = randomTensor(ref, new Rng(3), [2, 4]);
      assert.throws(
        () => add(x, r),
        (e: Error) => e instanceof BackendError && /different backends/.test(e.message),
      );
      r.dispose();
    });
  });

  it('use after dispose', () => {
    const t = randomTensor(nat(), new Rng(4), [3]);
    t.name = 'weights';
    t.dispose();
    assert.throws(
      () => add(t, t),
      (e: Error) => e instanceof DisposedError && /'weights' of shape \[3\] was used after dispose/.test(e.message),
    );
    assert.throws(() => t.data(), DisposedError);
    t.dispose(); // twice is fine
  });

  it('out-of-range token ids are caught before any kernel reads memory', () => {
    for (const be of [ref, nat()])
      tidy(() => {
        const table = randomTensor(be, new Rng(5), [4, 2]);
        assert.throws(
          () => embedding(table, be.fromData([1, 4], [2], 'int32')),
          /token id 4 at position 1 is outside the vocabulary \[0, 4\)/,
        );
        const logits = randomTensor(be, new Rng(6), [2, 3]);
        assert.throws(
          () => crossEntropy(logits, be.fromData([0, 7], [2], 'int32')),
          /target 7 .*outside the vocabulary \[0, 3\)/,
        );
      });
  });

  it('native kernels reject short buffers with a TypeError, not a crash', () => {
    const addon = (nat() as unknown as { addon: Record<string, (...a: unknown[]) => void> }).addon;
    assert.throws(
      () => addon.scale!(new Float32Array(2), new Float32Array(8), 1, 8),
      /scale: a holds 2 elements, needs 8/,
    );
    assert.throws(() => addon.scale!(new Float64Array(8), new Float32Array(8), 1, 8), /must be a Float32Array/);
  });
});

describe('memory accounting', () => {
  it('counts live storage bytes exactly, shares storage across views, and tracks the peak', () => {
    for (const be of [ref, nat()]) {
      const base = be.memory.current;
      be.memory.resetPeak();
      const a = be.zeros([10, 10], 'float32');
      assert.equal(be.memory.current - base, 400);
      const v = reshape(a, [100]);
      assert.equal(be.memory.current - base, 400, 'a view shares its storage');
      a.dispose();
      assert.equal(be.memory.current - base, 400, 'the storage lives while a view does');
      v.dispose();
      assert.equal(be.memory.current - base, 0);
      const b = be.zeros([1000], 'float32');
      b.dispose();
      assert.equal(be.memory.peak - base, 4000);
      be.memory.resetPeak();
      assert.equal(be.memory.peak, be.memory.current);
    }
    assert.equal(ref.zeros([3], 'float64').storage.byteLength, 24);
  });

  it('tidy frees every intermediate and keeps the result; keep() exempts a tensor', () => {
    const be = nat();
    const base = be.memory.current;
    const rng = new Rng(7);
    let kept = null as unknown as ReturnType<typeof randomTensor>;
    const out = tidy(() => {
      const a = randomTensor(be, rng, [8, 8]);
      const b = mul(a, a);
      kept = keep(add(b, a));
      return sum(b);
    });
    assert.equal(be.memory.current - base, 4 + 256, 'only the result and the kept tensor remain');
    out.dispose();
    kept.dispose();
    assert.equal(be.memory.current, base);
  });

  it('a thrown error inside tidy still frees everything', () => {
    const be = nat();
    const base = be.memory.current;
    assert.throws(() =>
      tidy(() => {
        be.zeros([100], 'float32');
        throw new Error('boom');
      }),
    );
    assert.equal(be.memory.current, base);
  });
});

describe('autograd tape', () => {
  it('records only when an input requires grad, not under noGrad, and backward clears it', () => {
    const be = nat();
    const rng = new Rng(8);
    const w = randomTensor(be, rng, [3, 3], { requiresGrad: true });
    tidy(() => {
      const x = randomTensor(be, rng, [2, 3]);
      noGrad(() => linear(x, w));
      assert.equal(tapeLength(), 0);
      const y = sum(linear(x, w));
      assert.equal(tapeLength(), 2);
      backward(y);
      assert.equal(tapeLength(), 0);
    });
    assert.ok(w.grad);
    // A second backward accumulates.
    const first = w.grad.data();
    tidy(() => backward(sum(linear(randomTensor(be, new Rng(8), [2, 3]), w))));
    assert.ok(Math.abs(w.grad.data()[0]! - first[0]!) > 0);
    w.dispose();
  });

  it('release frees what no backward reads and recomputes what it can, with the same gradients', () => {
    for (const be of [ref, nat()]) {
      const rng = new Rng(10);
      const w = randomTensor(be, rng, [6, 5], { requiresGrad: true });
      const nw = randomTensor(be, rng, [6], { requiresGrad: true });
      const x = randomTensor(be, rng, [4, 5]);
      // h = x wᵀ (read by no backward: add reads no input), n = rmsNorm(h + h) (recomputable, read by mul's
      // backward), m = n ⊙ n; the loss Σ m.
      const run = (early: boolean) =>
        tidy(() => {
          const before = be.memory.current;
          const h = linear(x, w);
          const h2 = add(h, h);
          if (early) release(h);
          const n = rmsNorm(h2, nw, 1e-6);
          if (early) release(h2);
          const m = mul(n, n);
          if (early) release(n);
          const held = be.memory.current - before;
          backward(sum(m));
          return held;
        });
      const kept = run(false);
      const gw = w.grad!.toArray();
      const gn = nw.grad!.toArray();
      w.grad!.dispose();
      w.grad = null;
      nw.grad!.dispose();
      nw.grad = null;
      const freed = run(true);
      // h (4·6 floats: add reads no input) and n (recomputed for mul's backward) are gone; h2 and m stay.
      assert.equal(kept - freed, 2 * 4 * 6 * 4, `${be.name}: bytes freed early`);
      assert.deepEqual(w.grad!.toArray(), gw, `${be.name}: dw with recomputation`);
      assert.deepEqual(nw.grad!.toArray(), gn, `${be.name}: dnorm with recomputation`);
      for (const t of [w, nw, x]) t.dispose();
      assert.equal(tapeLength(), 0);
    }
  });

  it('a recomputed linear output and its views, scalings and rotations are freed and redone in backward', () => {
    for (const be of [ref, nat()]) {
      const rng = new Rng(12);
      const w = randomTensor(be, rng, [6, 5], { requiresGrad: true });
      const x = randomTensor(be, rng, [1, 4, 5], { requiresGrad: true });
      const cos = randomTensor(be, rng, [4, 2]);
      const sin = randomTensor(be, rng, [4, 2]);
      // q = rotary(0.5 · reshape(x wᵀ)), read by mul's backward; x is kept by the linear node anyway.
      const run = (redo: boolean) =>
        tidy(() => {
          const before = be.memory.current;
          const h = linear(x, w, null, redo); // [1, 4, 6]
          const r = reshape(h, [1, 4, 3, 2]);
          release(h);
          const s = scale(r, 0.5);
          release(r);
          const q = rotary(s, cos, sin);
          release(s);
          const m = mul(q, q);
          release(q);
          const held = be.memory.current - before;
          backward(sum(m));
          return held;
        });
      const kept = run(false);
      const grads = [w, x].map((t) => t.grad!.toArray());
      for (const t of [w, x]) {
        t.grad!.dispose();
        t.grad = null;
      }
      const freed = run(true);
      // q (4·6 floats) is gone, recomputed through the chain for mul's backward; m stays.
      assert.equal(kept - freed, 4 * 6 * 4, `${be.name}: bytes freed`);
      assert.deepEqual(w.grad!.toArray(), grads[0], `${be.name}: dw with recomputation`);
      assert.deepEqual(x.grad!.toArray(), grads[1], `${be.name}: dx with recomputation`);
      for (const t of [w, x, cos, sin]) t.dispose();
      assert.equal(tapeLength(), 0);
    }
  });

  it('a scope forgets nodes whose outputs were released before it ended', () => {
    const be = nat();
    const w = randomTensor(be, new Rng(11), [3, 3], { requiresGrad: true });
    const base = be.memory.current;
    tidy(() => {
      const a = mul(w, w);
      const b = rmsNorm(a, null, 1e-6);
      release(a, b);
    });
    assert.equal(tapeLength(), 0);
    assert.equal(be.memory.current, base);
    w.dispose();
  });

  it('the tape forgets nodes whose outputs a scope disposed', () => {
    const w = randomTensor(nat(), new Rng(9), [2, 2], { requiresGrad: true });
    tidy(() => {
      mul(w, w);
    });
    assert.equal(tapeLength(), 0);
    w.dispose();
  });
});

describe('AdamW kernel', () => {
  it('native equals reference and the textbook update', () => {
    const rng = new Rng(10);
    const n = 1001;
    const init = Array.from({ length: n }, () => rng.normal());
    const grad = Array.from({ length: n }, () => rng.normal());
    const hp = { lr: 1e-2, beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: 0.05, step: 3, gradScale: 0.5 };
    const results = [ref, nat()].map((be) => {
      const p = be.fromData(init, [n], 'float32');
      const g = be.fromData(grad, [n], 'float32');
      const m = be.fromData(
        grad.map((x) => 0.1 * x),
        [n],
        'float32',
      );
      const v = be.fromData(
        grad.map((x) => 0.01 * x * x),
        [n],
        'float32',
      );
      kernelsOf(p).adamw(p, g, m, v, hp);
      const out = p.data();
      for (const t of [p, g, m, v]) t.dispose();
      return out;
    });
    const expected = init.map((p0, i) => {
      const g = grad[i]! * hp.gradScale;
      const m = 0.9 * 0.1 * grad[i]! + 0.1 * g;
      const v = 0.98 * 0.01 * grad[i]! ** 2 + 0.02 * g * g;
      const mh = m / (1 - 0.9 ** 3);
      const vh = v / (1 - 0.98 ** 3);
      return p0 * (1 - hp.lr * hp.weightDecay) - (hp.lr * mh) / (Math.sqrt(vh) + hp.eps);
    });
    assertClose(results[0]!, expected, 1e-6, 'reference');
    assertClose(results[1]!, expected, 1e-6, 'native');
  });

  it('sumSquares', () => {
    const data = Array.from({ length: 100001 }, (_, i) => Math.sin(i));
    const expected = data.reduce((s, x) => s + Math.fround(x) ** 2, 0);
    for (const be of [ref, nat()]) {
      const t = be.fromData(data, [data.length], 'float32');
      assert.ok(Math.abs(kernelsOf(t).sumSquares([t]) - expected) < 1e-6 * expected);
      const [a, b] = [
        be.fromData(data.slice(0, 7), [7], 'float32'),
        be.fromData(data.slice(7), [data.length - 7], 'float32'),
      ];
      assert.ok(
        Math.abs(kernelsOf(t).sumSquares([a, b]) - expected) < 1e-6 * expected,
        'one call over several tensors',
      );
      assert.equal(kernelsOf(t).sumSquares([]), 0);
      t.dispose();
      a.dispose();
      b.dispose();
    }
  });
});

describe('Rng', () => {
  it('is deterministic per seed and resumes from its state', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    for (let i = 0; i < 10; i++) assert.equal(a.nextU32(), b.nextU32());
    const saved = a.getState();
    const next = [a.uniform(), a.normal()];
    const c = new Rng(0);
    c.setState(saved);
    assert.deepEqual([c.uniform(), c.normal()], next);
    assert.notEqual(new Rng(1).nextU32(), new Rng(2).nextU32());
    assert.throws(() => c.setState([1, 2]), /four 32-bit unsigned integers/);
  });
});

describe('buffer pool', () => {
  it('reuses freed buffers of the same size, zero-filled, and evicts the oldest beyond its capacity', () => {
    const pool = new BufferPool(3 * 65536);
    const a = pool.take('float32', 16384);
    a.fill(7);
    pool.give(a.buffer as ArrayBuffer);
    const b = pool.take('float32', 16384);
    assert.equal(b.buffer, a.buffer, 'the freed buffer comes back');
    assert.ok(
      b.every((x) => x === 0),
      'zero-filled',
    );
    assert.equal(pool.hits, 1);
    for (let i = 0; i < 4; i++) pool.give(new ArrayBuffer(65536));
    assert.equal(pool.pooledBytes, 3 * 65536, 'capacity holds');
    const tiny = pool.take('float32', 4);
    pool.give(tiny.buffer as ArrayBuffer);
    assert.equal(pool.pooledBytes, 3 * 65536, 'small buffers are not pooled');
  });

  it('tensors of a backend draw on it while the tracker counts only live tensors', () => {
    const be = nat() as unknown as { pool: BufferPool; memory: { current: number } } & ReturnType<typeof nat>;
    const base = be.memory.current;
    const t = be.zeros([100000], 'float32');
    const buffer = (t.storage as unknown as { data: Float32Array }).data.buffer;
    t.dispose();
    assert.equal(be.memory.current, base);
    const u = be.zeros([100000], 'float32');
    assert.equal((u.storage as unknown as { data: Float32Array }).data.buffer, buffer);
    u.dispose();
  });
});
