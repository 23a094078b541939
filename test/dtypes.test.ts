// Every dtype: sizes and memory accounting on every device that stores it, the 16-bit float conversions (round to
// nearest even, subnormals, infinities, NaN), casts in every direction, the safetensors names, and ops on bfloat16,
// float16 and quantized weights through the cast fallback.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { kernels } from '../src/backend/kernels.js';
import type { Device } from '../src/backend/device.js';
import type { HostDevice } from '../src/backend/host/device.js';
import { linear, matmul } from '../src/ops/math.js';
import {
  type DType,
  DTYPE_NAMES,
  bytesPerElement,
  dtypeKind,
  fromBFloat16,
  fromFloat16,
  fromSafetensorsDType,
  storageBytes,
  toBFloat16,
  toFloat16,
  toSafetensorsDType,
} from '../src/tensor/dtype.js';
import { Rng } from '../src/tensor/random.js';
import { assertClose, nat, randomData, ref } from './helpers.js';

const devices = (): Device[] => [ref, nat()];
const SHAPES = [[], [0], [7], [3, 5], [2, 3, 4], [4, 0]];

/** The float32 with these bits. */
function fromBits(u: number): number {
  return new Float32Array(Uint32Array.of(u).buffer)[0]!;
}

describe('dtype sizes and accounting', () => {
  for (const dtype of DTYPE_NAMES)
    it(`${dtype}: storage bytes, memory accounting and bytesPerElement`, () => {
      let held = 0;
      for (const be of devices()) {
        if (!be.supportsDType(dtype)) continue;
        held++;
        for (const shape of SHAPES) {
          const before = be.memory.current;
          const t = be.zeros(shape, dtype);
          const bytes = storageBytes(dtype, shape);
          assert.equal(t.storage.byteLength, bytes, `${dtype} ${JSON.stringify(shape)} on ${be.name}: storage bytes`);
          assert.equal((be as HostDevice).readStorage(t).byteLength, bytes, `${dtype}: storage array bytes`);
          assert.equal(be.memory.current - before, bytes, `${dtype} ${JSON.stringify(shape)}: accounted bytes`);
          assert.equal(t.storage.size, t.size, `${dtype}: element count`);
          assert.deepEqual(Array.from(t.data()), new Array(t.size).fill(0), `${dtype}: zeros read as 0`);
          t.dispose();
          assert.equal(be.memory.current, before, `${dtype}: released`);
        }
      }
      assert.ok(held > 0, `some device stores ${dtype}`);
      if (dtypeKind(dtype) === 'quantized')
        assert.throws(() => bytesPerElement(dtype), new RegExp(`${dtype} has no fixed size per element`));
      else assert.equal(bytesPerElement(dtype) * 12, storageBytes(dtype, [3, 4]));
    });

  it('the expected sizes', () => {
    const expected: Record<DType, number> = {
      float32: 4,
      float64: 8,
      int32: 4,
      bfloat16: 2,
      float16: 2,
      qint8: 0,
      qint4: 0,
    };
    for (const d of DTYPE_NAMES) if (dtypeKind(d) !== 'quantized') assert.equal(bytesPerElement(d), expected[d], d);
    // qint8 [3, 5]: three float32 scales and 15 one-byte codes.
    assert.equal(storageBytes('qint8', [3, 5]), 3 * 4 + 15);
    // qint4 [3, 70]: rows padded to 128 columns, so 4 float16 block scales and 64 code bytes per row.
    assert.equal(storageBytes('qint4', [3, 70]), 3 * (4 * 2 + 64));
  });

  it('an unknown dtype is an error naming it, never a default size', () => {
    assert.throws(() => bytesPerElement('int4' as DType), /unknown dtype 'int4' \(expected one of float32, /);
    assert.throws(() => ref.zeros([2], 'int4' as DType), /int4/);
  });

  it('a device that does not store a dtype says which it holds', () => {
    assert.throws(() => nat().zeros([2], 'float64'), /the cpu device does not hold float64 tensors \(it holds /);
  });
});

describe('16-bit float conversions', () => {
  it('bfloat16 rounds to nearest even and keeps inf, NaN and signed zero', () => {
    assert.equal(toBFloat16(1), 0x3f80);
    assert.equal(toBFloat16(fromBits(0x3f808000)), 0x3f80, 'a tie goes to the even neighbour (down)');
    assert.equal(toBFloat16(fromBits(0x3f818000)), 0x3f82, 'a tie goes to the even neighbour (up)');
    assert.equal(toBFloat16(fromBits(0x3f808001)), 0x3f81, 'above the tie rounds up');
    assert.equal(toBFloat16(Infinity), 0x7f80);
    assert.equal(toBFloat16(-Infinity), 0xff80);
    assert.equal(toBFloat16(fromBits(0x7f7fffff)), 0x7f80, 'the largest float32 rounds to infinity');
    assert.equal(toBFloat16(-0), 0x8000);
    assert.ok(Number.isNaN(fromBFloat16(toBFloat16(NaN))));
    assert.equal(toBFloat16(fromBits(0x00000001)), 0, 'the smallest float32 subnormal rounds to 0');
    for (let bits = 0; bits < 0x10000; bits++) {
      const x = fromBFloat16(bits);
      if (Number.isNaN(x)) assert.ok(Number.isNaN(fromBFloat16(toBFloat16(x))));
      else assert.equal(toBFloat16(x), bits, `bfloat16 ${bits.toString(16)} round trip`);
    }
  });

  it('float16 rounds to nearest even with subnormals, overflow to inf and NaN', () => {
    const cases: [number, number][] = [
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff],
      [65519.99, 0x7bff],
      [65520, 0x7c00],
      [1e9, 0x7c00],
      [-Infinity, 0xfc00],
      [2 ** -14, 0x0400],
      [2 ** -24, 0x0001],
      [2 ** -25, 0x0000],
      [3 * 2 ** -25, 0x0002],
      [1 + 2 ** -11, 0x3c00],
      [1 + 3 * 2 ** -11, 0x3c02],
      [-0, 0x8000],
      [(1023 + 0.5) * 2 ** -24, 0x0400],
    ];
    for (const [x, bits] of cases) assert.equal(toFloat16(x), bits, `float16(${x})`);
    assert.equal(toFloat16(NaN), 0x7e00);
    for (let bits = 0; bits < 0x10000; bits++) {
      const x = fromFloat16(bits);
      if (Number.isNaN(x)) assert.equal(toFloat16(x), 0x7e00);
      else assert.equal(toFloat16(x), bits, `float16 ${bits.toString(16)} round trip`);
    }
    assert.equal(fromFloat16(0x0001), 2 ** -24);
    assert.equal(fromFloat16(0x7bff), 65504);
  });

  it('storage of both formats rounds what fromData is given', () => {
    for (const be of devices()) {
      const x = [1.00390625, -3.14159, 1e-6, 70000];
      const b = be.fromData(x, [4], 'bfloat16');
      assert.deepEqual(
        Array.from(b.data()),
        x.map((v) => fromBFloat16(toBFloat16(v))),
      );
      const h = be.fromData(x, [4], 'float16');
      assert.deepEqual(
        Array.from(h.data()),
        x.map((v) => fromFloat16(toFloat16(v))),
      );
      assert.equal(Array.from(h.data())[3], Infinity, '70000 overflows float16');
      b.dispose();
      h.dispose();
    }
  });
});

describe('cast', () => {
  // Values every dtype holds exactly (small integers), so every direction can be checked exactly, quantized formats
  // included (a row's max is 127 codes: integers up to 127 survive).
  const values = [0, 1, -2, 3, 100, -127, 5, 6];
  for (const from of DTYPE_NAMES)
    for (const to of DTYPE_NAMES)
      it(`${from} -> ${to}`, () => {
        for (const be of devices()) {
          if (!be.supportsDType(from) || !be.supportsDType(to)) continue;
          const a = be.fromData(values, [2, 4], from);
          const b = kernels(be, from).cast(a, to);
          assert.equal(b.dtype, to);
          assert.deepEqual(b.shape, [2, 4]);
          assertClose(
            b.data(),
            values,
            dtypeKind(from) === 'quantized' || dtypeKind(to) === 'quantized' ? 0.5 : 0,
            `${from} -> ${to} on ${be.name}`,
          );
          a.dispose();
          b.dispose();
        }
      });

  it('float to bfloat16 and float16 round to nearest even; float to int32 truncates', () => {
    const a = ref.fromData([fromBits(0x3f808000), 2.75, -2.75], [3], 'float32');
    assert.equal((ref.readStorage(kernels(ref, 'float32').cast(a, 'bfloat16')) as Uint16Array)[0], 0x3f80);
    assert.deepEqual(Array.from(kernels(ref, 'float32').cast(a, 'int32').data()), [1, 2, -2]);
    a.dispose();
  });
});

describe('safetensors dtype names', () => {
  it('map both ways', () => {
    const named = {
      float32: 'F32',
      float64: 'F64',
      int32: 'I32',
      bfloat16: 'BF16',
      float16: 'F16',
      qint8: null,
      qint4: null,
    };
    for (const d of DTYPE_NAMES) {
      assert.equal(toSafetensorsDType(d), named[d], d);
      if (named[d] !== null) assert.equal(fromSafetensorsDType(named[d]), d);
    }
    assert.equal(fromSafetensorsDType('I64'), null);
    assert.equal(fromSafetensorsDType('BOOL'), null);
  });
});

describe('ops on bfloat16, float16 and quantized weights', () => {
  it('matmul of 16-bit tensors computes in float32 and stores the rounded result', () => {
    const rng = new Rng(4);
    const [a, b] = [randomData(rng, 5 * 7), randomData(rng, 7 * 3)];
    for (const dtype of ['bfloat16', 'float16'] as const)
      for (const be of devices()) {
        const [x, y] = [be.fromData(a, [5, 7], dtype), be.fromData(b, [7, 3], dtype)];
        const z = matmul(x, y);
        assert.equal(z.dtype, dtype);
        // The same product in float32 of the stored (rounded) values, then rounded as storage rounds it.
        const [xf, yf] = [ref.fromData(x.data(), [5, 7], 'float32'), ref.fromData(y.data(), [7, 3], 'float32')];
        const expected = ref.fromData(matmul(xf, yf).data(), [5, 3], dtype).data();
        assertClose(z.data(), expected, 0, `${dtype} matmul on ${be.name}`);
        for (const t of [x, y, z, xf, yf]) t.dispose();
      }
  });

  it('linear with a qint8 weight equals linear with its dequantized weight', () => {
    const rng = new Rng(5);
    const [xd, wd] = [randomData(rng, 4 * 9), randomData(rng, 6 * 9)];
    for (const be of devices()) {
      const x = be.fromData(xd, [4, 9], 'float32');
      const wq = be.fromData(wd, [6, 9], 'qint8');
      const wf = be.fromData(wq.data(), [6, 9], 'float32');
      assertClose(wq.data(), wd, 1.5 / 127, 'qint8 keeps each value within half a step of its row');
      // The cpu device's int8 kernel meets x quantized per block of 32 to int16 (native/cpu/lowp.h: an error of at
      // most max|x_block| / 65534 per element, bounded exactly in test/lowp.test.ts); the reference is the definition.
      const tol = be.name === 'cpu' ? 1e-4 : 1e-6;
      assertClose(linear(x, wq).data(), linear(x, wf).data(), tol, `qint8 linear on ${be.name}`);
      wq.requiresGrad = true;
      assert.throws(() => linear(x, wq), /linear: a qint8 weight takes float32 inputs and no gradient/);
      for (const t of [x, wq, wf]) t.dispose();
    }
  });
});
