// Accuracy of the cpu device's vectorised exp, sigmoid and normal CDF/PDF (native/cpu/vmath.h) through the kernels
// that use them, on dense grids against the reference device's double-precision functions, with the bounds stated
// per function. Whichever build of the addon this CPU loads is tested (the avx2 build's vector code on an x86-64-v3
// CPU); RETNET_CPU_VARIANT=baseline runs the same bounds on the baseline build's libm path.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { kernels } from '../src/backend/kernels.js';
import { activationDerivative, activationValue } from '../src/backend/reference/kernels.js';
import { nat } from './helpers.js';

const cpu = () => kernels(nat(), 'float32');

/** Points from lo to hi, `n` of them evenly spaced, plus values that exercise branches and special cases. */
function grid(lo: number, hi: number, n: number, extra: number[] = []): Float32Array {
  const xs = Array.from({ length: n }, (_, i) => lo + ((hi - lo) * i) / (n - 1));
  return Float32Array.from([...xs, ...extra]);
}

type Abs = number | ((x: number) => number);

/** The largest |got - want| / (abs + rel |want|) over the points, with the worst point for the message. */
function worst(x: Float32Array, got: Float32Array, want: (x: number) => number, abs: Abs, rel: number) {
  let w = 0;
  let at = 0;
  for (let i = 0; i < x.length; i++) {
    const a = typeof abs === 'number' ? abs : abs(x[i]!);
    const e = Math.abs(got[i]! - want(x[i]!)) / (a + rel * Math.abs(want(x[i]!)));
    if (!(e <= w)) {
      w = e;
      at = i;
    }
  }
  return { ratio: w, x: x[at]!, got: got[at]!, want: want(x[at]!) };
}

function check(name: string, x: Float32Array, got: Float32Array, want: (x: number) => number, abs: Abs, rel: number) {
  const r = worst(x, got, want, abs, rel);
  assert.ok(
    r.ratio <= 1,
    `${name}: at x = ${r.x} got ${r.got}, want ${r.want} (error ${r.ratio.toFixed(2)}x the bound)`,
  );
}

const f32 = Math.fround;
// One float32 ulp relative is 2^-23 = 1.19e-7.
const ULP = 2 ** -23;

/** The activation `kind` on the points x and, unless `grad` is null, its derivative, each against the reference. */
function activationCase(
  kind: 'gelu' | 'silu',
  x: Float32Array,
  value: { abs: Abs; rel: number },
  grad: { abs: Abs; rel: number } | null,
) {
  const be = nat();
  const t = be.fromData(x, [x.length], 'float32');
  const y = cpu().activation(kind, t).data() as Float32Array;
  check(kind, x, y, (v) => activationValue(kind, v), value.abs, value.rel);
  if (!grad) return;
  const ones = be.fromData(new Float32Array(x.length).fill(1), [x.length], 'float32');
  const d = cpu().activationBackward(kind, t, ones).data() as Float32Array;
  check(`${kind} derivative`, x, d, (v) => activationDerivative(kind, v), grad.abs, grad.rel);
}

describe('cpu vector math (native/cpu/vmath.h)', () => {
  it('GELU within 1.5e-7 + 2 ulp of x Φ(x), its derivative within 2.5e-7 + 2 ulp, on [-12, 12]', () => {
    const x = grid(-12, 12, 240001, [0, -0, 1e-30, -1e-30, 5.65685, -5.65685, 1.41421, -1.41421, 30, -30, 90]);
    activationCase('gelu', x, { abs: 1.5e-7, rel: 2 * ULP }, { abs: 2.5e-7, rel: 2 * ULP });
  });

  // The reference's 0.5 x (1 + erf(x / √2)) cancels in double too: below x = -6 (Φ = 1e-9) it is not accurate enough.
  // The bound is the baseline build's: libm's erfcf of x / √2 rounded to float is off by 2 (x/√2)² 2^-24 relatively
  // (2.8e-6 at x = -6); the avx2 build, which takes x² exactly, measured 7e-7.
  it("GELU's tail: x Φ(x) within 4e-6 relatively for x in [-6, -1]", () => {
    activationCase('gelu', grid(-6, -1, 50001), { abs: 0, rel: 4e-6 }, null);
  });

  // The derivative s (1 + x (1 - s)) carries the float rounding of s = sigmoid(x) times x: |x| 2^-24 absolutely, in
  // libm's float formula as here.
  it('SiLU within 4 ulp (plus 1e-30 absolute), its derivative within 4 ulp + (1 + |x|) 2^-24, on [-100, 100]', () => {
    const x = grid(-100, 100, 200001, [0, -0, 88.5, -88.5, 104, -104, 1e-30]);
    activationCase('silu', x, { abs: 1e-30, rel: 4 * ULP }, { abs: (v) => (1 + Math.abs(v)) * 2 ** -24, rel: 4 * ULP });
  });

  it('exp within 3 ulp through softmax of [0, x] rows, x in [-87, 0]; denormal results and 0 below -104', () => {
    const xs = grid(-87, 0, 100001, [-90, -100, -103.9, -110, -1000]);
    const rows = new Float32Array(2 * xs.length);
    xs.forEach((v, i) => (rows[2 * i + 1] = v));
    const y = cpu()
      .softmax(nat().fromData(rows, [xs.length, 2], 'float32'))
      .data() as Float32Array;
    const second = Float32Array.from(xs, (_, i) => y[2 * i + 1]!);
    const want = (v: number) => Math.exp(v) / (1 + Math.exp(v));
    check('exp', xs.slice(0, 100001), second.slice(0, 100001), want, 0, 3 * ULP);
    // below float's normal range: within half the smallest denormal (2^-150) plus 3 ulp of the true value
    check('exp (denormal)', xs.slice(100001), second.slice(100001), want, 2 ** -150, 3 * ULP);
  });

  it('special values: NaN stays NaN, ±inf give the limits, and no lane of a partial block is left unwritten', () => {
    const x = Float32Array.from([NaN, Infinity, -Infinity, 0, 1, -1, NaN]);
    const t = nat().fromData(x, [x.length], 'float32');
    const s = cpu().activation('silu', t).data() as Float32Array;
    assert.ok(Number.isNaN(s[0]) && Number.isNaN(s[6]));
    assert.equal(s[1], Infinity);
    assert.ok(Number.isNaN(s[2]), 'silu(-inf) = -inf * 0 is NaN, as 0 * libm');
    assert.equal(s[3], 0);
    assert.equal(s[4], f32(1 / (1 + Math.exp(-1))));
    const g = cpu().activation('gelu', t).data() as Float32Array;
    assert.ok(Number.isNaN(g[0]) && Number.isNaN(g[6]));
    assert.equal(g[1], Infinity);
    assert.equal(g[3], 0);
    // softmax of a row with -inf entries: exactly 0 there
    const y = cpu()
      .softmax(nat().fromData(Float32Array.from([0, -Infinity, 0]), [1, 3], 'float32'))
      .data();
    assert.deepEqual(Array.from(y), [0.5, 0, 0.5]);
  });
});
