// Low-precision weights (src/quant, native/cpu/lowp.h): the formats' definition, every native kernel variant this
// CPU can run against the reference product on odd shapes (variants the CPU lacks are skipped with the reason
// logged), and whole models with quantised weights against their float32 selves, torchscale's vectors included.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { backward, noGrad } from '../src/autograd/tape.js';
import type { CpuDevice } from '../src/backend/cpu/device.js';
import { LOWP_FORMAT, lowpAddon, weightParts } from '../src/backend/cpu/lowp.js';
import type { Device } from '../src/backend/device.js';
import { FLA_1_3B, writeFlaStandIn } from '../bench/standin.js';
import { QUANTIZED_KEY, loadModelDir } from '../src/io/model-dir.js';
import { type TensorToSave, readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import type { CausalLM } from '../src/models/lm.js';
import { modelFromConfig } from '../src/models/registry.js';
import type { RetNetModel } from '../src/models/retnet/model.js';
import { add, linear, linearShared, sum } from '../src/ops/math.js';
import { WEIGHT_DTYPES, WEIGHT_FORMATS, type WeightFormat, parseWeightFormat } from '../src/quant/formats.js';
import { quantizeModel, weightBytes } from '../src/quant/model.js';
import {
  type QuantizedDType,
  fromFloat16,
  q4PaddedCols,
  quantParts,
  storageBytes,
  toFloat16,
} from '../src/tensor/dtype.js';
import { Rng } from '../src/tensor/random.js';
import { tidy } from '../src/tensor/scope.js';
import { Linear, SHARED_ROWS, sharedForward } from '../src/nn/layers.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { assertClose, nat, randomData, ref } from './helpers.js';
import { tempDir } from './temp.js';

const ROOT = join(import.meta.dirname, '..');
const CLI = join(ROOT, 'src', 'cli', 'run.ts');

/** A weight [N, K] held in `format` on a device. */
function weight(be: Device, format: WeightFormat, values: ArrayLike<number>, N: number, K: number): Tensor {
  return be.fromData(values, [N, K], WEIGHT_DTYPES[format]);
}

describe('weight formats (the definition: src/tensor/dtype.ts)', () => {
  it('every format stays within its stated error, and q4 keeps each block extreme exactly', () => {
    const rng = new Rng(3);
    const [N, K] = [5, 77]; // K not a multiple of the 32-blocks nor of the 64-column q4 row padding
    const w = randomData(rng, N * K);
    const bytes: Record<WeightFormat, number> = {
      f32: 4 * N * K,
      bf16: 2 * N * K,
      f16: 2 * N * K,
      int8: N * K + 4 * N,
      q4: N * (128 / 2) + 2 * N * (128 / 32),
    };
    for (const format of WEIGHT_FORMATS) {
      const t = weight(ref, format, w, N, K);
      assert.equal(t.storage.byteLength, bytes[format], `${format} bytes`);
      assert.equal(storageBytes(t.dtype, t.shape), bytes[format], `${format} storageBytes`);
      const back = t.data();
      const stored = ref.readStorage(t) as Uint8Array;
      const parts = format === 'int8' || format === 'q4' ? quantParts(t.dtype as QuantizedDType, t.shape) : [];
      const scaleAt = (n: number, k: number) => {
        const sc = parts[0]!;
        if (format === 'int8') return new Float32Array(stored.buffer, stored.byteOffset + sc.offset, N)[n]!;
        const h = new Uint16Array(stored.buffer, stored.byteOffset + sc.offset, sc.bytes / 2);
        return Math.abs(fromFloat16(h[n * (q4PaddedCols(K) / 32) + Math.floor(k / 32)]!));
      };
      for (let n = 0; n < N; n++)
        for (let k = 0; k < K; k++) {
          const v = Math.fround(w[n * K + k]!);
          const err = Math.abs(back[n * K + k]! - v);
          let bound = 0;
          if (format === 'bf16') bound = Math.abs(v) * 2 ** -8;
          if (format === 'f16') bound = Math.abs(v) * 2 ** -11 + 2 ** -25;
          if (format === 'int8') bound = scaleAt(n, k) / 2 + 1e-7;
          if (format === 'q4') {
            const d = scaleAt(n, k);
            // half a step, or for values clamped at u = 15 (|v| up to 8|d| on the side opposite the extreme) the
            // distance to 7|d|; plus the float16 rounding of d times up to 8
            bound = (Math.abs(v) > 7.5 * d ? Math.abs(v) - 7 * d : d / 2) + Math.abs(v) * 2 ** -10;
          }
          assert.ok(err <= bound, `${format} [${n}, ${k}]: |${back[n * K + k]} - ${v}| > ${bound}`);
        }
      if (format === 'q4')
        for (let n = 0; n < N; n++)
          for (let b = 0; b * 32 < K; b++) {
            let m = 0;
            let at = 0;
            for (let k = b * 32; k < Math.min(K, b * 32 + 32); k++)
              if (Math.abs(w[n * K + k]!) > Math.abs(m)) [m, at] = [w[n * K + k]!, k];
            assert.ok(Math.abs(back[n * K + at]! - m) <= Math.abs(m) * 2 ** -11, `q4 block extreme [${n}, ${at}]`);
          }
      t.dispose();
    }
  });

  it('q4 stores its scales first, then block j of a row at bytes 16j.., element i low and i+16 high', () => {
    const K = 64;
    const w = new Float64Array(K);
    w[0] = -8; // the block's largest magnitude: d = 1, u = 0
    w[1] = 7; // u = 15
    w[16] = 3; // u = 11, high nibble of byte 0
    w[32 + 5] = 2; // second block: d = 2 / -8, u = round(2 / -0.25) + 8 = 0
    const t = weight(ref, 'q4', w, 1, K);
    const stored = ref.readStorage(t) as Uint8Array;
    const [scales, codes] = quantParts('qint4', t.shape);
    assert.deepEqual([scales!.offset, scales!.bytes, codes!.offset, codes!.bytes], [0, 4, 4, 32]);
    assert.deepEqual([...new Uint16Array(stored.buffer, stored.byteOffset, 2)], [toFloat16(1), toFloat16(-0.25)]);
    const bytes = stored.subarray(4);
    assert.equal(bytes[0], 0 | (11 << 4));
    assert.equal(bytes[1], 15 | (8 << 4));
    assert.equal(bytes[16 + 5], 0 | (8 << 4));
    t.dispose();
  });

  it('rejects non-finite weights and unknown format names with messages that name them', () => {
    assert.throws(() => ref.fromData([1, NaN], [1, 2], 'qint8'), /qint8: element 1 is NaN/);
    assert.throws(() => ref.fromData([1, Infinity], [1, 2], 'qint4'), /qint4: element 1 is Infinity/);
    assert.throws(() => parseWeightFormat('q3'), /unknown weight format 'q3' \(expected f32, bf16, f16, int8, q4\)/);
  });
});

// The bound the kernels promise against the reference product (native/cpu/lowp.h): x quantised per block of 32 to
// int16 (int8 weights) or int8 (q4 weights) errs by half a step of its block scale; bf16 on AVX512-BF16 splits x into
// hi + lo (2⁻¹⁶ relative); float32 accumulation adds K·2⁻²⁴ of Σ|x w|.
function allowedError(
  format: WeightFormat,
  isa: string,
  x: Float32Array,
  w: Float32Array,
  K: number,
  n: number,
  b: number,
) {
  const qmax = isa === 'scalar' ? 0 : format === 'int8' ? 32767 : format === 'q4' ? 127 : 0;
  let allowed = 0;
  let mag = 0;
  for (let k = 0; k < K; k++) {
    const xk = x[b * K + k]!;
    const wk = w[n * K + k]!;
    mag += Math.abs(xk * wk);
    let e = 0;
    if (qmax > 0) {
      let amax = 0;
      for (let j = Math.floor(k / 32) * 32; j < Math.min(K, Math.floor(k / 32) * 32 + 32); j++)
        amax = Math.max(amax, Math.abs(x[b * K + j]!));
      e = amax / (2 * qmax);
    } else if (isa === 'avx512bf16') e = Math.abs(xk) * 2 ** -16;
    allowed += Math.abs(wk) * e;
  }
  return allowed + mag * (K + 2) * 2 ** -24 + 1e-30;
}

const SHAPES: [number, number, number][] = [
  // [N, K, rows of x]
  [1, 1, 1],
  [7, 33, 3],
  [13, 100, 1],
  [37, 64, 16],
  [9, 257, 5],
  [64, 512, 2],
  [45, 130, 1], // batch 1 in row streams (lowp_kernels.inc rowStreams): 8 of 5 rows and 5 left, or 4 of 11 and 1
  [517, 1000, 1], // several chunks of rows, the last one cut short by N
  [3, 0, 2],
  [0, 5, 1],
  [21, 95, 17], // more rows than a decode batch: the tile + sgemm path
  [300, 40, 33],
  [1030, 2100, 18], // the tile path on two threads: a part of W's rows each, two tiles (512 + 3 rows) per part
];

describe('low-precision products: every native variant against the reference', () => {
  const be = nat() as CpuDevice;
  const addon = lowpAddon(be.addon);
  const variants = addon.lowpVariants();
  const all = ['scalar', 'avx2', 'avx512bf16', 'avx512vnni', 'avx512'];
  const exists: Record<WeightFormat, string[]> = {
    f32: ['scalar', 'avx2', 'avx512'],
    bf16: ['scalar', 'avx2', 'avx512bf16', 'avx512'],
    f16: ['scalar', 'avx2', 'avx512'],
    int8: ['scalar', 'avx2', 'avx512vnni'],
    q4: ['scalar', 'avx2', 'avx512vnni'],
  };
  for (const format of WEIGHT_FORMATS)
    for (const isa of exists[format]) {
      const runs = variants[format]!.includes(isa);
      it(`${format} / ${isa}`, { skip: runs ? false : `this CPU cannot run ${isa}` }, () => {
        const rng = new Rng(11);
        const code = LOWP_FORMAT[WEIGHT_DTYPES[format]]!;
        for (const [N, K, R] of SHAPES) {
          if (R > 16) continue; // the decode kernels take up to 16 rows
          const x = Float32Array.from(randomData(rng, R * K));
          const t = weight(be, format, randomData(rng, N * K), N, K);
          const w = t.data() as Float32Array;
          const { data, scales } = weightParts(be, t);
          const y = new Float32Array(R * N).fill(NaN);
          const bytes = addon.lowpWorkspace(code, all.indexOf(isa), R, K);
          const ws = new Uint8Array(bytes + 3).subarray(3); // any alignment
          addon.lowpGemv(code, all.indexOf(isa), N, K, R, data, scales, x, y, ws);
          t.dispose();
          for (let b = 0; b < R; b++)
            for (let n = 0; n < N; n++) {
              let want = 0;
              for (let k = 0; k < K; k++) want += x[b * K + k]! * w[n * K + k]!;
              const err = Math.abs(y[b * N + n]! - want);
              const allowed = allowedError(format, isa, x, w, K, n, b);
              assert.ok(
                err <= allowed,
                `${format}/${isa} [${N}, ${K}] x ${R} rows: y[${b}, ${n}] = ${y[b * N + n]}, want ${want} (allowed error ${allowed})`,
              );
            }
        }
        // Blocks the vector quantisers leave to the scalar one: row 0's first 32-block all zero (the rest as usual),
        // row 1 with an infinity in its second block, which must reach every output of that row.
        const [N, K] = [10, 96];
        const x = Float32Array.from(randomData(rng, 2 * K));
        x.fill(0, 0, 32);
        x[K + 40] = Infinity;
        const t = weight(be, format, randomData(rng, N * K), N, K);
        const w = t.data() as Float32Array;
        const { data, scales } = weightParts(be, t);
        const y = new Float32Array(2 * N);
        addon.lowpGemv(
          code,
          all.indexOf(isa),
          N,
          K,
          2,
          data,
          scales,
          x,
          y,
          new Uint8Array(addon.lowpWorkspace(code, all.indexOf(isa), 2, K)),
        );
        t.dispose();
        for (let n = 0; n < N; n++) {
          let want = 0;
          for (let k = 0; k < K; k++) want += x[k]! * w[n * K + k]!;
          assert.ok(
            Math.abs(y[n]! - want) <= allowedError(format, isa, x, w, K, n, 0),
            `${format}/${isa} zero block: y[0, ${n}]`,
          );
          assert.ok(!Number.isFinite(y[N + n]!), `${format}/${isa} infinite x: y[1, ${n}] = ${y[N + n]}`);
        }
      });
    }

  it('the read probe reads every byte, on 1 and 2 threads, whatever the size', () => {
    // All zeros sum to 0; four 0xff bytes anywhere make a NaN in the vector part or −4 in the tail, so a byte the
    // probe skipped would leave the sum 0.
    for (const bytes of [1, 63, 511, 513, 4097, (1 << 20) + 100, 3 * (1 << 20) + 7])
      for (const threads of [1, 2]) {
        const data = new Uint8Array(bytes);
        assert.equal(addon.streamRead(data, threads), 0, `${bytes} zero bytes`);
        for (const at of [0, Math.floor(bytes / 3), bytes - 4]) {
          const p = Math.max(0, at) & ~3;
          data.fill(0xff, p, Math.min(bytes, p + 4));
          assert.notEqual(addon.streamRead(data, threads), 0, `${bytes} bytes on ${threads} threads, 0xff at ${p}`);
          data.fill(0, p, Math.min(bytes, p + 4));
        }
      }
  });

  it('linear with a stored weight: native (decode kernels and the tile path) against the reference, every format', () => {
    const rng = new Rng(5);
    for (const format of WEIGHT_FORMATS)
      for (const [N, K, R] of SHAPES) {
        const xd = randomData(rng, R * K);
        const wd = randomData(rng, N * K);
        const run = (b: Device) =>
          tidy(() => {
            const w = weight(b, format, wd, N, K);
            const y = linear(b.fromData(xd, [R, K], 'float32'), w);
            assert.equal(y.dtype, 'float32');
            return { y: y.data(), w: w.data() as Float32Array };
          });
        const want = run(ref);
        const got = run(be);
        assert.deepEqual(got.w, want.w, `${format}: the same stored values on both devices`);
        const x = Float32Array.from(xd);
        for (let b = 0; b < R; b++)
          for (let n = 0; n < N; n++) {
            const err = Math.abs(got.y[b * N + n]! - want.y[b * N + n]!);
            const allowed =
              R > 16
                ? allowedError(format, 'scalar', x, want.w, K, n, b) * 4
                : allowedError(format, 'best', x, want.w, K, n, b) * 1.01 +
                  2 * allowedError(format, 'scalar', x, want.w, K, n, b);
            assert.ok(
              err <= allowed,
              `linear ${format} [${N}, ${K}] x ${R}: [${b}, ${n}] ${got.y[b * N + n]} vs ${want.y[b * N + n]}`,
            );
          }
      }
  });

  it('shared products (lowpGemvShared, linearShared): each weight as its own product, every format and variant', () => {
    const rng = new Rng(13);
    // [K, rows of x, the weights' N]: odd K, an empty weight among others, several chunks, more than 8 weights, and
    // more rows than a decode batch (product by product through the tile path)
    const groups: [number, number, number[]][] = [
      [33, 1, [7, 1, 13]],
      [100, 3, [64, 0, 45]],
      [257, 16, [9, 37]],
      [1000, 1, [517, 8, 1030, 3]],
      [64, 2, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]],
      [0, 2, [3, 5]],
      [95, 17, [21, 300]],
    ];
    for (const format of WEIGHT_FORMATS) {
      const code = LOWP_FORMAT[WEIGHT_DTYPES[format]]!;
      for (const [K, R, Ns] of groups) {
        const xd = randomData(rng, R * K);
        const wds = Ns.map((N) => randomData(rng, N * K));
        // the native call against lowpGemv on each weight, for every variant this CPU has: the same bits
        if (R <= 16)
          for (const isa of variants[format]!) {
            const x = Float32Array.from(xd);
            const ts = wds.map((wd, i) => weight(be, format, wd, Ns[i]!, K));
            const ws = new Uint8Array(addon.lowpWorkspace(code, all.indexOf(isa), R, K) + 5).subarray(5);
            const args: (number | ArrayBufferView)[] = [code, all.indexOf(isa), K, R, x, ws];
            const ys = Ns.map((N) => new Float32Array(R * N).fill(NaN));
            ts.forEach((t, i) => {
              const { data, scales } = weightParts(be, t);
              args.push(Ns[i]!, data, scales, ys[i]!);
            });
            addon.lowpGemvShared(...args);
            ts.forEach((t, i) => {
              const { data, scales } = weightParts(be, t);
              const one = new Float32Array(R * Ns[i]!).fill(NaN);
              addon.lowpGemv(code, all.indexOf(isa), Ns[i]!, K, R, data, scales, x, one, ws);
              assert.deepEqual(ys[i], one, `${format}/${isa} K ${K} x ${R} rows: weight ${i} [${Ns[i]}, ${K}]`);
              t.dispose();
            });
          }
        // the op: on the cpu device the same values as linear() weight by weight; on the reference device too
        for (const b of [be, ref])
          tidy(() => {
            const x = b.fromData(xd, [R, K], 'float32');
            const ws = wds.map((wd, i) => weight(b, format, wd, Ns[i]!, K));
            const shared = noGrad(() => linearShared(x, ws));
            ws.forEach((w, i) => {
              assert.deepEqual(shared[i]!.shape, [R, Ns[i]]);
              assert.deepEqual(shared[i]!.data(), linear(x, w).data(), `${b.name} linearShared ${format} weight ${i}`);
            });
          });
      }
    }
  });

  it('linearShared: the gradient as through linear() one by one; bad calls named', () => {
    const rng = new Rng(9);
    const [xd, w1, w2] = [randomData(rng, 3 * 40), randomData(rng, 6 * 40), randomData(rng, 5 * 40)];
    const gradOf = (f: (x: Tensor, a: Tensor, b: Tensor) => Tensor[]) =>
      tidy(() => {
        const x = be.fromData(xd, [3, 40], 'float32');
        x.requiresGrad = true;
        const [a, b] = f(x, be.fromData(w1, [6, 40], 'float32'), be.fromData(w2, [5, 40], 'float32'));
        backward(add(sum(a!), sum(b!)));
        return x.grad!.data();
      });
    assertClose(
      gradOf((x, a, b) => linearShared(x, [a, b])),
      gradOf((x, a, b) => [linear(x, a), linear(x, b)]),
      1e-6,
      'dL/dx',
    );
    tidy(() => {
      const x = be.fromData(xd, [3, 40], 'float32');
      assert.throws(
        () => noGrad(() => linearShared(x, [be.fromData(w1, [6, 40], 'float32'), be.zeros([2, 39], 'float32')])),
        /linearShared: input \[3, 40\] does not fit weight \[2, 39\]/,
      );
    });
    // sharedForward: a decode step's rows only, no bias, no gradient (null: the caller runs the layers its own way)
    tidy(() => {
      const layers = [new Linear(be.fromData(w1, [6, 40], 'float32')), new Linear(be.fromData(w2, [5, 40], 'float32'))];
      const at = (rows: number) => be.fromData(randomData(rng, rows * 40), [1, rows, 40], 'float32');
      const ys = noGrad(() => sharedForward(at(SHARED_ROWS), layers));
      assert.deepEqual(
        ys?.map((y) => y.shape),
        [
          [1, SHARED_ROWS, 6],
          [1, SHARED_ROWS, 5],
        ],
      );
      assert.equal(
        noGrad(() => sharedForward(at(SHARED_ROWS + 1), layers)),
        null,
      );
      const x = at(2);
      x.requiresGrad = true;
      assert.equal(sharedForward(x, layers), null);
      const biased = new Linear(be.fromData(w2, [5, 40], 'float32'), be.zeros([5], 'float32'));
      assert.equal(
        noGrad(() => sharedForward(at(2), [layers[0]!, biased])),
        null,
      );
    });
    assert.throws(
      () => addon.lowpGemvShared(0, -1, 2, 1, new Float32Array(2), new Uint8Array(64), 2, new Float32Array(4)),
      /lowpGemvShared: after the workspace come \(N, W, scales, y\) for each weight/,
    );
  });

  it('the gradient of x flows through a stored weight; the weight itself takes none', () => {
    const rng = new Rng(8);
    const [xd, wd] = [randomData(rng, 3 * 40), randomData(rng, 6 * 40)];
    for (const format of ['bf16', 'q4'] as const) {
      const w = weight(be, format, wd, 6, 40);
      const wf = be.fromData(w.data(), [6, 40], 'float32'); // the stored values, in float32
      const gradOf = (ww: Tensor) => {
        const x = be.fromData(xd, [3, 40], 'float32');
        x.requiresGrad = true;
        backward(sum(linear(x, ww)));
        const g = x.grad!.data();
        x.dispose();
        return g;
      };
      assertClose(gradOf(w), gradOf(wf), 1e-6, `${format}: dL/dx through the stored weight`);
      w.requiresGrad = true;
      assert.throws(
        () => linear(be.fromData(xd, [3, 40], 'float32'), w),
        new RegExp(`linear: a ${WEIGHT_DTYPES[format]} weight takes float32 inputs and no gradient`),
      );
      w.dispose();
      wf.dispose();
    }
  });

  it('rejects bad calls with messages naming the problem', () => {
    const w = weight(be, 'int8', [1, 2, 3, 4], 2, 2);
    assert.throws(
      () => linear(be.fromData([1, 2, 3], [1, 3], 'float32'), w),
      /linear: input \[1, 3\] does not fit weight \[2, 2\]/,
    );
    const { data, scales } = weightParts(be, w);
    assert.throws(
      () => addon.lowpGemv(2, -1, 2, 3, 1, data, scales, new Float32Array(3), new Float32Array(2), new Uint8Array(256)),
      /lowpGemv: W holds 4 bytes and scales 8, a \[2, 3\] weight needs 6 and 8/,
    );
    w.dispose();
  });
});

describe('models with low-precision weights', () => {
  const VECTORS = join(import.meta.dirname, '..', '..', 'shared', 'torchscale-vectors');
  // Largest |logit − float32 logit| / max |float32 logit| allowed per format, from the errors measured (printed): 4
  // bits on these random 48- and 64-wide models move logits by 0.63 and 0.10 of their scale; the quality that counts,
  // perplexity of a trained model, is measured by `retnet bench lowp`. NATIVE: the same format on the native backend
  // against the reference (its kernels quantise x: int16 for int8 weights, int8 for q4).
  const TOL: Record<WeightFormat, number> = { f32: 1e-5, bf16: 1e-2, f16: 2e-3, int8: 3e-2, q4: 1 };
  const NATIVE: Record<WeightFormat, number> = { f32: 1e-5, bf16: 1e-5, f16: 1e-5, int8: 1e-4, q4: 0.1 };
  for (const name of ['dev_default', 'dev_options'])
    it(`torchscale vectors ${name}: logits of every format against float32, native and reference`, () => {
      const config = JSON.parse(readFileSync(join(VECTORS, `config_${name}.json`), 'utf8')) as Record<string, unknown>;
      const tokens = JSON.parse(readFileSync(join(VECTORS, `tokens_${name}.json`), 'utf8')) as number[];
      const weights = readSafetensors(join(VECTORS, `weights_${name}.safetensors`)).tensors;
      const logits = (b: Device, format: WeightFormat | null, decode: boolean) => {
        const model = modelFromConfig(config, name, { backend: b, dtype: 'float32' }) as RetNetModel;
        model.loadValues(weights, name, (n) => n.startsWith('retnet_rel_pos.'));
        const before = weightBytes(model);
        if (format) quantizeModel(model, format);
        const after = weightBytes(model);
        const out = noGrad(() =>
          tidy(() => {
            if (!decode)
              return model.forward(b.fromData(tokens, [1, tokens.length], 'int32'), { form: 'parallel' }).data();
            const state = model.emptyState(1);
            const rows = tokens.map((t) => model.step([t], state).data());
            state.dispose();
            const all = new Float32Array(rows.length * rows[0]!.length);
            rows.forEach((r, i) => all.set(r, i * r.length));
            return all;
          }),
        );
        model.dispose();
        return { out: out as Float32Array, before, after };
      };
      const maxAbs = (a: Float32Array) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      const maxDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
      const base = { reference: logits(ref, null, false).out, native: logits(nat(), null, false).out };
      const scale = maxAbs(base.reference);
      for (const format of WEIGHT_FORMATS)
        for (const decode of [false, true]) {
          const r = logits(ref, format, decode);
          const n = logits(nat(), format, decode);
          const rel = maxDiff(r.out, base.reference) / scale;
          const relNative = maxDiff(n.out, base.native) / scale;
          const kernels = maxDiff(n.out, r.out) / scale;
          const form = decode ? 'recurrent' : 'parallel';
          console.log(
            `# ${name} ${format} ${form}: max |Δlogit| vs float32 = ${rel.toExponential(2)} (reference), ` +
              `${relNative.toExponential(2)} (native) of max |logit|; native vs reference ${kernels.toExponential(2)}; ` +
              `weights ${r.before} -> ${r.after} bytes`,
          );
          assert.ok(rel <= TOL[format] && relNative <= TOL[format], `${name} ${format} ${form}: ${rel}, ${relNative}`);
          assert.ok(kernels <= NATIVE[format], `${name} ${format} ${form}: native vs reference ${kernels}`);
          if (format !== 'f32')
            assert.ok(r.after < r.before, `${format}: weights must shrink (${r.before} -> ${r.after})`);
        }
    });

  it('fla vectors (dev): logits of every format against float32, native', () => {
    const dev = join(import.meta.dirname, '..', '..', 'shared', 'fla-vectors', 'dev');
    const tokens = (JSON.parse(readFileSync(join(dev, 'tokens.json'), 'utf8')) as { single_input_ids: number[][] })
      .single_input_ids[0]!;
    const be = nat();
    const run = (weights?: WeightFormat) => {
      const { model } = loadModelDir(dev, { backend: be, weights });
      const out = noGrad(() => tidy(() => model.forward(be.fromData(tokens, [1, tokens.length], 'int32')).data()));
      model.dispose();
      return out as Float32Array;
    };
    const base = run();
    const scale = base.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    // fla's checkpoint holds bf16 values, so bf16 is exact; the rest from the errors measured (printed): int8 0.019,
    // q4 0.31 of the logits' scale on this random 64-wide model (perplexity of a trained model: bench lowp).
    const tol: Record<WeightFormat, number> = { f32: 1e-6, bf16: 1e-6, f16: 2e-3, int8: 3e-2, q4: 0.5 };
    for (const format of WEIGHT_FORMATS) {
      const got = run(format);
      const rel = got.reduce((m, v, i) => Math.max(m, Math.abs(v - base[i]!)), 0) / scale;
      console.log(`# fla dev ${format}: max |Δlogit| vs float32 = ${rel.toExponential(2)} of max |logit|`);
      assert.ok(rel <= tol[format], `fla dev ${format}: ${rel}`);
    }
  });
});

describe('stored and quantized checkpoints', () => {
  // A tiny fla-shaped stand-in: BF16 weights in two shards, HF directory (bench/standin.ts).
  const shape = { ...FLA_1_3B, vocab_size: 300, hidden_size: 64, num_hidden_layers: 2, num_heads: 2 };
  const work = tempDir('retnet-lowp-ckpt-');
  const src = join(work, 'bf16');
  writeFlaStandIn(src, shape, { shards: 2, seed: 6, tokenizer: null });
  const tokens = [1, 17, 250, 3, 99, 42, 7];
  const logitsOf = (model: CausalLM) =>
    noGrad(() => tidy(() => model.forward(nat().fromData(tokens, [1, tokens.length], 'int32')).data()));

  it('a BF16 checkpoint loads without widening: Linear and Embedding weights keep the bytes as read', () => {
    const be = nat();
    const before = be.memory.current;
    const { model } = loadModelDir(src, { backend: be });
    const dtypes = new Map<string, string>();
    for (const [n, t] of model.namedParameters()) dtypes.set(n, t.dtype);
    assert.equal(dtypes.get('model.embeddings.weight'), 'bfloat16');
    assert.equal(dtypes.get('model.layers.0.attn.q_proj.weight'), 'bfloat16');
    assert.equal(dtypes.get('lm_head.weight'), 'bfloat16');
    assert.equal(dtypes.get('model.norm.weight'), 'float32', 'norm gains widen (they are tiny)');
    // Exactly the file's bytes, plus 2 more bytes per norm gain: the device's accounting, nothing else held.
    const files = readSafetensorsBytes(src);
    const norms = model.namedParameters().filter(([, t]) => t.dtype === 'float32');
    const normValues = norms.reduce((a, [, t]) => a + t.size, 0);
    assert.equal(weightBytes(model), files + 2 * normValues);
    assert.equal(be.memory.current - before, weightBytes(model), 'no float32 copy left behind');
    // The values are the file's: the same logits as the widened load, to float32 summation order.
    const kept = logitsOf(model);
    model.dispose();
    const widened = loadModelDir(src, { backend: be, weights: 'f32' }).model;
    for (const [, t] of widened.namedParameters()) assert.equal(t.dtype, 'float32');
    assertClose(kept, logitsOf(widened), 1e-5, 'bf16 as read vs widened to float32');
    widened.dispose();
  });

  for (const format of ['int8', 'q4', 'bf16', 'f16'] as const)
    it(`retnet quantize --weights ${format}: the copy loads alone and gives the same logits, bit for bit`, () => {
      const out = join(work, `out-${format}`);
      const r = spawnSync(
        process.execPath,
        ['--import', 'tsx', CLI, 'quantize', '--model', src, '--weights', format, '--out', out],
        { encoding: 'utf8', cwd: ROOT },
      );
      assert.equal(r.status, 0, r.stderr);
      const direct = loadModelDir(src, { backend: nat(), weights: format }).model;
      const saved = loadModelDir(out, { backend: nat() }).model;
      const a = new Map(direct.namedParameters());
      for (const [n, t] of saved.namedParameters()) {
        assert.equal(t.dtype, a.get(n)!.dtype, `${n} dtype`);
        assert.deepEqual(nat().readStorage(t), nat().readStorage(a.get(n)!), `${n} stored bytes`);
      }
      assert.deepEqual(logitsOf(saved), logitsOf(direct));
      assert.equal(weightBytes(saved), weightBytes(direct));
      const meta = readSafetensors(join(out, 'model.safetensors')).metadata;
      if (format === 'int8' || format === 'q4') {
        const named = JSON.parse(meta[QUANTIZED_KEY]!) as Record<string, string>;
        assert.equal(named['model.layers.1.mlp.down_proj.weight'], format);
      } else assert.equal(meta[QUANTIZED_KEY], undefined);
      direct.dispose();
      saved.dispose();
    });

  it('bad quantized checkpoints: missing scales, wrong shapes and unknown formats name the file and tensor', () => {
    const good = join(work, 'out-q4');
    const file = join(good, 'model.safetensors');
    const { tensors, metadata } = readSafetensors(file);
    const rewrite = (name: string, edit: (m: Map<string, TensorToSave>, meta: Record<string, string>) => void) => {
      const dir = join(work, name);
      mkdirSync(dir, { recursive: true });
      for (const f of ['config.json']) copyFileSync(join(good, f), join(dir, f));
      const m = new Map<string, TensorToSave>();
      for (const [n, t] of tensors) m.set(n, { dtype: t.dtype as TensorToSave['dtype'], shape: t.shape, data: t.data });
      const meta = { ...metadata };
      edit(m, meta);
      writeSafetensors(join(dir, 'model.safetensors'), m, meta);
      return dir;
    };
    const w = 'model.layers.0.attn.q_proj.weight';
    const noScales = rewrite('no-scales', (m) => m.delete(`${w}.scales`));
    assert.throws(() => loadModelDir(noScales), new RegExp(`missing tensors ${w.replace(/\./g, '\\.')}\\.scales`));
    const badShape = rewrite('bad-shape', (m) => {
      const s = m.get(`${w}.scales`)!;
      m.set(`${w}.scales`, { ...s, shape: [s.shape[0]! / 2, s.shape[1]! * 2] });
    });
    assert.throws(
      () => loadModelDir(badShape),
      /model\.safetensors: tensor 'model\.layers\.0\.attn\.q_proj\.weight\.scales' is F16 \[32, 4\]; a q4 weight \[64, 64\] stores its scales as F16 \[64, 2\]/,
    );
    const unknown = rewrite('unknown', (_, meta) => {
      meta[QUANTIZED_KEY] = JSON.stringify({ ...JSON.parse(meta[QUANTIZED_KEY]!), [w]: 'q3' });
    });
    assert.throws(
      () => loadModelDir(unknown),
      /model\.safetensors: __metadata__ 'retnet\.quantized' gives tensor 'model\.layers\.0\.attn\.q_proj\.weight' the format "q3", not a quantized one \(expected int8, q4\)/,
    );
    const stray = rewrite('stray', (_, meta) => {
      meta[QUANTIZED_KEY] = JSON.stringify({ ...JSON.parse(meta[QUANTIZED_KEY]!), 'model.norm.weight': 'int8' });
    });
    assert.throws(() => loadModelDir(stray), /missing tensors model\.norm\.weight\.scales, model\.norm\.weight\.codes/);
  });
});

/** Bytes of the tensors of a model directory's safetensors files (the data sections). */
function readSafetensorsBytes(dir: string): number {
  let bytes = 0;
  for (const f of readdirSync(dir).filter((x) => x.endsWith('.safetensors')))
    for (const [, t] of readSafetensors(join(dir, f)).tensors)
      bytes += t.shape.reduce((a, b) => a * b, 1) * (t.dtype === 'BF16' || t.dtype === 'F16' ? 2 : 4);
  return bytes;
}
