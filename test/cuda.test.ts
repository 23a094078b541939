// The cuda device against the reference backend: the op-case table (forward values and gradients, float32) and the
// kernels the models use beyond it, at shapes that span several chunks and warps. Skipped, saying why, where no CUDA
// device or addon is present (CI); scripts/cuda/device-run.sh runs it on a GPU.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { backward } from '../src/autograd/tape.js';
import { cudaBackend, cudaUnavailableReason } from '../src/backend/index.js';
import { kernels } from '../src/backend/kernels.js';
import { retentionGammas } from '../src/backend/reference/retention-math.js';
import type { Device } from '../src/backend/device.js';
import { add, mul, scale, sum } from '../src/ops/math.js';
import { RETNET_DEFAULTS, validateRetNetConfig } from '../src/models/retnet/config.js';
import { RetNetModel } from '../src/models/retnet/model.js';
import { Rng } from '../src/tensor/random.js';
import { tidy } from '../src/tensor/scope.js';
import { type Tensor, shapeSize } from '../src/tensor/tensor.js';
import { assertClose, randomData, ref } from './helpers.js';
import { buildInputs, opCases } from './op-cases.js';

const cuda = cudaBackend();
const skip = cuda ? false : `no cuda device: ${cudaUnavailableReason()}`;
if (cuda) cuda.poison = true;

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

describe('cuda kernels equal the reference backend (float32, op cases)', { skip }, () => {
  for (const c of opCases) {
    it(c.name, () => {
      const tol = c.tol ?? 2e-6;
      c.variants.forEach((specs, v) => {
        const seed = 2000 + 17 * v;
        const r = run(ref, c, specs, seed);
        const n = run(cuda!, c, specs, seed);
        assertClose(n.out, r.out, tol, `${c.name} variant ${v} forward`);
        r.grads.forEach((g, k) => {
          if (g) assertClose(n.grads[k]!, g, tol * 5, `${c.name} variant ${v} gradient ${k}`);
        });
      });
    });
  }
});

const R = kernels(ref, 'float32');
const G = cuda ? kernels(cuda, 'float32') : R;

/** The same random tensors on both devices. */
function pair(rng: Rng, shape: number[], scale = 1): [Tensor, Tensor] {
  const d = randomData(
    rng,
    shape.reduce((a, b) => a * b, 1),
    scale,
  );
  return [ref.fromData(d, shape, 'float32'), cuda!.fromData(d, shape, 'float32')];
}

describe('cuda sequence kernels at device-sized shapes', { skip }, () => {
  // q, k: [B, T, H, K]; v: [B, T, H, V]. T spans several 64-row chunks with a short last one.
  const shapes = [
    { B: 1, T: 200, H: 2, K: 32, V: 48, C: 64, scale: 0.3 },
    { B: 2, T: 131, H: 3, K: 64, V: 64, C: 32, scale: 2 },
    { B: 1, T: 96, H: 1, K: 128, V: 128, C: 64, scale: 0.5 },
    // Heads past the tiled flash kernels' 128 (the one-warp-per-row kernels), as the 1.3B RetNet's K 256.
    { B: 1, T: 77, H: 2, K: 160, V: 200, C: 32, scale: 0.3 },
  ];
  for (const s of shapes) {
    const label = `B${s.B} T${s.T} H${s.H} K${s.K} V${s.V} C${s.C}`;
    it(`retention forward (parallel, chunkwise) and backward, ${label}`, () => {
      const rng = new Rng(7);
      const [q, qc] = pair(rng, [s.B, s.T, s.H, s.K], s.scale);
      const [k, kc] = pair(rng, [s.B, s.T, s.H, s.K], s.scale);
      const [v, vc] = pair(rng, [s.B, s.T, s.H, s.V], s.scale);
      const [g, gc] = pair(rng, [s.B, s.T, s.H, s.V]);
      const gammas = retentionGammas(s.H);
      for (const [form, normalize] of [
        ['parallel', true],
        ['chunkwise', true],
        ['chunkwise', false],
      ] as const) {
        const run = { chunkSize: s.C, normalize, initialState: null, segments: null, returnFinalState: false };
        const a = R.retentionForward(form, q, k, v, gammas, run);
        const b = G.retentionForward(form, qc, kc, vc, gammas, run);
        assertClose(b.o.data(), a.o.data(), 2e-5, `${form} o`);
        assertClose(b.r.data(), a.r.data(), 2e-5, `${form} r`);
        const da = R.retentionBackward(form, q, k, v, gammas, a.r, g, s.C);
        const db = G.retentionBackward(form, qc, kc, vc, gammas, b.r, gc, s.C);
        for (const x of ['dq', 'dk', 'dv'] as const) assertClose(db[x].data(), da[x].data(), 2e-5, `${form} ${x}`);
      }
    });
    it(`attention forward and backward (naive, flash), ${label}`, () => {
      const rng = new Rng(8);
      const [q, qc] = pair(rng, [s.B, s.T, s.H, s.K]);
      const [k, kc] = pair(rng, [s.B, s.T, s.H, s.K]);
      const [v, vc] = pair(rng, [s.B, s.T, s.H, s.V]);
      const [g, gc] = pair(rng, [s.B, s.T, s.H, s.V]);
      for (const alg of ['naive', 'flash'] as const) {
        const a = R.attentionForward(alg, q, k, v);
        const b = G.attentionForward(alg, qc, kc, vc);
        assertClose(b.o.data(), a.o.data(), 2e-5, `${alg} o`);
        assertClose(b.stats.data(), a.stats.data(), 2e-5, `${alg} stats`);
        const da = R.attentionBackward(alg, q, k, v, a.o, a.stats, g);
        const db = G.attentionBackward(alg, qc, kc, vc, b.o, b.stats, gc);
        for (const x of ['dq', 'dk', 'dv'] as const) assertClose(db[x].data(), da[x].data(), 2e-5, `${alg} ${x}`);
      }
    });
  }

  it('state-carrying retention: initial states, packed segments and final states (both forms and modes)', () => {
    const rng = new Rng(12);
    const [H, K, V, C] = [3, 32, 48, 16];
    const gammas = retentionGammas(H);
    // Segments shorter than, equal to and longer than the chunk, and an empty one; T = 100.
    const lengths = [5, 0, 16, 70, 9];
    const T = lengths.reduce((a, n) => a + n, 0);
    const [q, qc] = pair(rng, [1, T, H, K], 0.5);
    const [k, kc] = pair(rng, [1, T, H, K], 0.5);
    const [v, vc] = pair(rng, [1, T, H, V], 0.5);
    for (const normalize of [true, false])
      for (const form of ['parallel', 'chunkwise'] as const) {
        const label = `${form}, normalize ${normalize}`;
        // The states each segment continues: those after a first packed pass over the same rows.
        const first = { chunkSize: C, normalize, initialState: null, segments: lengths, returnFinalState: true };
        const a0 = R.retentionForward(form, q, k, v, gammas, first);
        const b0 = G.retentionForward(form, qc, kc, vc, gammas, first);
        assertClose(b0.o.data(), a0.o.data(), 2e-5, `${label}: o of segments from empty states`);
        assertClose(b0.r.data(), a0.r.data(), 2e-5, `${label}: r`);
        assertClose(b0.finalState!.state.data(), a0.finalState!.state.data(), 2e-5, `${label}: final states`);
        assertClose(b0.finalState!.scale.data(), a0.finalState!.scale.data(), 2e-6, `${label}: final scales`);
        const next = { ...first, initialState: a0.finalState };
        const a1 = R.retentionForward(form, q, k, v, gammas, next);
        const b1 = G.retentionForward(form, qc, kc, vc, gammas, { ...next, initialState: b0.finalState });
        assertClose(b1.o.data(), a1.o.data(), 2e-5, `${label}: o continuing states`);
        assertClose(b1.r.data(), a1.r.data(), 2e-5, `${label}: r continuing states`);
        assertClose(b1.finalState!.state.data(), a1.finalState!.state.data(), 2e-5, `${label}: states after`);
        assertClose(b1.finalState!.scale.data(), a1.finalState!.scale.data(), 2e-6, `${label}: scales after`);
      }
    // Batch rows continuing states, without segments, chunk longer than the sequence (one chunk, σ from S_0).
    const [B, T2] = [2, 11];
    const [q2, q2c] = pair(rng, [B, T2, H, K]);
    const [k2, k2c] = pair(rng, [B, T2, H, K]);
    const [v2, v2c] = pair(rng, [B, T2, H, V]);
    for (const chunkSize of [4, 64]) {
      const run = { chunkSize, normalize: true, initialState: null, segments: null, returnFinalState: true };
      const a0 = R.retentionForward('chunkwise', q2, k2, v2, gammas, run).finalState!;
      const b0 = G.retentionForward('chunkwise', q2c, k2c, v2c, gammas, run).finalState!;
      const a = R.retentionForward('chunkwise', q2, k2, v2, gammas, { ...run, initialState: a0 });
      const b = G.retentionForward('chunkwise', q2c, k2c, v2c, gammas, { ...run, initialState: b0 });
      assertClose(b.o.data(), a.o.data(), 2e-5, `batch rows continuing states, C ${chunkSize}: o`);
      assertClose(b.finalState!.state.data(), a.finalState!.state.data(), 2e-5, `C ${chunkSize}: states after`);
    }
  });

  it('chunkwise retention on bf16 tensor cores (K = V = 128, C = 64): within bf16 error of the reference', () => {
    const be = cuda!;
    const rng = new Rng(13);
    const [D, C] = [128, 64];
    // ‖a − b‖ / ‖b‖ over the whole tensor: bf16 operands land near 1e-3 (METHOD.md's 1e-3 to 1e-2 band).
    const rel = (a: ArrayLike<number>, b: ArrayLike<number>) => {
      let num = 0;
      let den = 0;
      for (let i = 0; i < b.length; i++) {
        assert.ok(Number.isFinite(a[i]!), `element ${i} is ${a[i]}`);
        num += (a[i]! - b[i]!) ** 2;
        den += b[i]! ** 2;
      }
      return Math.sqrt(num / den);
    };
    // Inputs that bf16 holds exactly, so that the error measured is the kernels' own: the score products are then
    // exact and accumulate in float32, so r (their absolute row sums, and σ from states whose decayed keys are
    // rounded to bf16) lands far under bf16 rounding; o and the gradients carry the bf16 rounding of the scores,
    // scaled rows and states they multiply.
    const bf16Pair = (shape: number[], scale = 1): [Tensor, Tensor] => {
      const d = Float32Array.from(
        randomData(
          rng,
          shape.reduce((a, b) => a * b, 1),
          scale,
        ),
      );
      const bits = new Uint32Array(d.buffer);
      for (let i = 0; i < bits.length; i++) bits[i] = (bits[i]! + 0x7fff + ((bits[i]! >>> 16) & 1)) & 0xffff0000;
      return [ref.fromData(d, shape, 'float32'), be.fromData(d, shape, 'float32')];
    };
    // [B, T, H]: three chunks over 4 heads (state blocks of 16 value columns, the walks split in three parts of one
    // chunk), eight chunks over 4 heads (four parts of two chunks), one chunk, and 32 heads (blocks of 32, unsplit).
    for (const [B, T, H, normalize, scale] of [
      [2, 192, 2, true, 0.4],
      [2, 192, 2, true, 2],
      [2, 192, 2, false, 0.3],
      [1, 512, 4, true, 0.4],
      [1, 512, 4, false, 0.3],
      [3, 64, 1, true, 0.4],
      [1, 128, 32, true, 0.4],
      [1, 128, 32, false, 0.3],
    ] as const) {
      const gammas = retentionGammas(H);
      const [q, qc] = bf16Pair([B, T, H, D], scale);
      const [k, kc] = bf16Pair([B, T, H, D], scale);
      const [v, vc] = bf16Pair([B, T, H, D]);
      const [g, gc] = bf16Pair([B, T, H, D]);
      const run = { chunkSize: C, normalize, initialState: null, segments: null, returnFinalState: true };
      const a = R.retentionForward('chunkwise', q, k, v, gammas, run);
      be.bf16Retention = true;
      try {
        const b = G.retentionForward('chunkwise', qc, kc, vc, gammas, run);
        const label = `B ${B} T ${T} H ${H}, normalize ${normalize}, scale ${scale}`;
        assert.ok(rel(b.o.data(), a.o.data()) < 1e-2, `${label}: o ${rel(b.o.data(), a.o.data())}`);
        assert.ok(rel(b.r.data(), a.r.data()) < 1e-3, `${label}: r ${rel(b.r.data(), a.r.data())}`);
        assertClose(b.finalState!.state.data(), a.finalState!.state.data(), 2e-5, `${label}: final state`);
        if (!normalize) {
          // Unnormalised, the parallel form is the same function and takes the same kernels.
          const p = G.retentionForward('parallel', qc, kc, vc, gammas, run);
          assert.ok(rel(p.o.data(), a.o.data()) < 1e-2, `${label}: parallel o ${rel(p.o.data(), a.o.data())}`);
        }
        const da = R.retentionBackward('chunkwise', q, k, v, gammas, a.r, g, C);
        // The reference r, so that the backward alone is compared.
        const rc = be.fromData(a.r.data(), a.r.shape, 'float32');
        const db = G.retentionBackward('chunkwise', qc, kc, vc, gammas, rc, gc, C);
        for (const x of ['dq', 'dk', 'dv'] as const) {
          const e = rel(db[x].data(), da[x].data());
          assert.ok(e < 1e-2, `${label}: ${x} ${e}`);
        }
      } finally {
        be.bf16Retention = false;
      }
    }
  });

  it('retention step and state; attention decode', () => {
    const rng = new Rng(9);
    const [B, T, H, K, V] = [3, 37, 4, 64, 96];
    const gammas = retentionGammas(H);
    const [k, kc] = pair(rng, [B, T, H, K], 0.5);
    const [v, vc] = pair(rng, [B, T, H, V], 0.5);
    for (const normalize of [true, false]) {
      // The state after T positions, as the forward kernel returns it.
      const run = { chunkSize: 8, normalize, initialState: null, segments: null, returnFinalState: true };
      const a = R.retentionForward('chunkwise', k, k, v, gammas, run).finalState!;
      const b = G.retentionForward('chunkwise', kc, kc, vc, gammas, run).finalState!;
      assertClose(b.state.data(), a.state.data(), 2e-5, `state (normalize ${normalize})`);
      assertClose(b.scale.data(), a.scale.data(), 2e-6, 'scale');
      for (let step = 0; step < 3; step++) {
        const [q1, q1c] = pair(rng, [B, H, K]);
        const [k1, k1c] = pair(rng, [B, H, K]);
        const [v1, v1c] = pair(rng, [B, H, V]);
        const oa = R.retentionStep(q1, k1, v1, a.state, a.scale, gammas, normalize);
        const ob = G.retentionStep(q1c, k1c, v1c, b.state, b.scale, gammas, normalize);
        assertClose(ob.data(), oa.data(), 2e-5, `step ${step} o`);
        assertClose(b.state.data(), a.state.data(), 2e-5, `step ${step} state`);
      }
    }
    const C = 300;
    const [q, qc] = pair(rng, [B, H, K]);
    const [kk, kkc] = pair(rng, [B, H, C, K]);
    const [vv, vvc] = pair(rng, [B, H, C, V]);
    const lengths = [1, 157, 300];
    assertClose(G.attentionDecode(qc, kkc, vvc, lengths).data(), R.attentionDecode(q, kk, vv, lengths).data(),
      2e-5, 'decode'); // prettier-ignore
    // Lengths at and around the 256-key split of the device kernel, head dims of the 6.7B model's Transformer.
    const [q2, q2c] = pair(rng, [3, 2, 256]);
    const [k2, k2c] = pair(rng, [3, 2, 1030, 256], 0.2);
    const [v2, v2c] = pair(rng, [3, 2, 1030, 128]);
    const lengths2 = [256, 257, 1030];
    assertClose(G.attentionDecode(q2c, k2c, v2c, lengths2).data(), R.attentionDecode(q2, k2, v2, lengths2).data(),
      2e-5, 'decode at the splits'); // prettier-ignore
  });

  it('retention step at wide heads: value-column tiles, K rows past the unrolled loop, batch rows, float16 states', () => {
    const rng = new Rng(19);
    // 6.7B's head (K 256, V 432: 13.5 tiles of 32 columns, 6.75 of a float16 state's 64) and a K that leaves a
    // remainder after the 64-row steps; odd V (float16: one column a thread) and V 2 (one pair, K rows only in the
    // remainder loop).
    // A float16 state is stored rounded: a sum that the two devices' float32 arithmetic puts on either side of a
    // float16 tie lands one unit (2^-10 of its scale) apart, and o then within 1e-4.
    for (const [B, H, K, V] of [
      [2, 3, 256, 432],
      [3, 2, 100, 33],
      [1, 1, 8, 2],
    ] as const)
      for (const stateDType of ['float32', 'float16'] as const)
        for (const normalize of [true, false]) {
          const gammas = retentionGammas(H);
          const init = randomData(rng, B * H * K * V, 0.1);
          const [s, sc] = [
            ref.fromData(init, [B, H, K, V], stateDType),
            cuda!.fromData(init, [B, H, K, V], stateDType),
          ];
          const sums = Array.from({ length: B * H }, (_, i) => 1 + 3 * i);
          const [z, zc] = [ref.fromData(sums, [B, H], 'float32'), cuda!.fromData(sums, [B, H], 'float32')];
          const [tolO, tolS] = stateDType === 'float16' ? [1e-4, 2 ** -10] : [2e-5, 2e-5];
          for (let step = 0; step < 3; step++) {
            const [q1, q1c] = pair(rng, [B, H, K]);
            const [k1, k1c] = pair(rng, [B, H, K]);
            const [v1, v1c] = pair(rng, [B, H, V]);
            const what = `B ${B} H ${H} K ${K} V ${V} ${stateDType} state, normalize ${normalize} step ${step}`;
            const oa = R.retentionStep(q1, k1, v1, s, z, gammas, normalize);
            const ob = G.retentionStep(q1c, k1c, v1c, sc, zc, gammas, normalize);
            assertClose(ob.data(), oa.data(), tolO, `${what} o`);
            assertClose(sc.data(), s.data(), tolS, `${what} state`);
            assert.equal(sc.dtype, stateDType);
            assertClose(zc.data(), z.data(), 2e-6, `${what} scale`);
          }
        }
  });

  it('RMSNorm and the gated norm at wide rows: the register kernel (cols % 4 == 0) and the loop kernel', () => {
    const rng = new Rng(23);
    for (const [rows, cols] of [
      [3, 4096],
      [5, 432],
      [2, 16384],
      [2, 16388], // past the register kernel's 16384: the loop kernel
      [4, 4098],
    ] as const) {
      const [x, xc] = pair(rng, [rows, cols]);
      const [z, zc] = pair(rng, [rows, cols]);
      const [w, wc] = pair(rng, [cols], 0.5);
      for (const weight of [true, false]) {
        const what = `${rows}x${cols} weight ${weight}`;
        const a = R.rmsNorm(x, weight ? w : null, 1e-6);
        const b = G.rmsNorm(xc, weight ? wc : null, 1e-6);
        assertClose(b.y.data(), a.y.data(), 2e-6, `${what} rmsNorm y`);
        assertClose(b.rstd.data(), a.rstd.data(), 2e-6, `${what} rmsNorm rstd`);
        const ga = R.gatedRmsNorm(x, z, weight ? w : null, 1e-6);
        const gb = G.gatedRmsNorm(xc, zc, weight ? wc : null, 1e-6);
        assertClose(gb.y.data(), ga.y.data(), 2e-6, `${what} gatedRmsNorm y`);
      }
    }
  });

  it('rotary in halves (the fla variant) and interleaved pairs', () => {
    const rng = new Rng(11);
    const [x, xc] = pair(rng, [2, 9, 3, 8]);
    const [c, cc] = pair(rng, [9, 8]);
    const [sn, snc] = pair(rng, [9, 8]);
    for (const pairs of ['halves', 'interleaved'] as const)
      for (const inverse of [false, true])
        assertClose(G.rotary(xc, cc, snc, pairs, inverse).data(), R.rotary(x, c, sn, pairs, inverse).data(), 2e-6,
          `rotary ${pairs} ${inverse}`); // prettier-ignore
  });

  it('GEMM shapes: batched, shared right operand, transposes, K = 0', () => {
    const rng = new Rng(10);
    for (const [ta, tb, batch, M, N, K, shared] of [
      [false, false, 3, 33, 17, 65, false],
      [true, false, 2, 8, 129, 31, false],
      [false, true, 4, 5, 6, 7, true],
      [true, true, 1, 64, 64, 64, false],
      [false, false, 2, 3, 4, 0, false],
    ] as const) {
      const [a, ac] = pair(rng, [batch, ta ? K : M, ta ? M : K]);
      const bShape = tb ? [N, K] : [K, N];
      const [b, bc] = pair(rng, shared ? bShape : [batch, ...bShape]);
      assertClose(G.matmul(ac, bc, ta, tb).data(), R.matmul(a, b, ta, tb).data(), 2e-5,
        `matmul ${ta} ${tb} ${batch}x${M}x${N}x${K}`); // prettier-ignore
    }
  });
});

describe('cuda 16-bit storage and tensor-core products', { skip }, () => {
  const DT16 = ['bfloat16', 'float16'] as const;

  it('stores bfloat16 and float16 as the host rounds them; device casts round alike', async () => {
    const be = cuda!;
    const rng = new Rng(11);
    for (const dt of DT16) {
      const d = randomData(rng, 1001, 3);
      const host = ref.fromData(d, [7, 11, 13], dt);
      const t = be.fromData(d, [7, 11, 13], dt);
      assert.equal(t.storage.byteLength, 2002);
      assert.deepEqual(Array.from(be.readStorage(t)), Array.from(ref.readStorage(host)), `${dt} bits`);
      assert.deepEqual(Array.from(t.data()), Array.from(host.data()), `${dt} values`);
      assert.deepEqual(Array.from(await be.readAsync(t)), Array.from(host.data()), `${dt} async`);
      // float32 -> 16 bits on the device: the same bits as the host's rounding; and back, exactly.
      const f = be.fromData(d, [7, 11, 13], 'float32');
      const c = kernels(be, 'float32').cast(f, dt);
      assert.deepEqual(Array.from(be.readStorage(c)), Array.from(ref.readStorage(host)), `${dt} device cast`);
      assert.deepEqual(Array.from(kernels(be, dt).cast(c, 'float32').data()), Array.from(host.data()));
      const z = be.zeros([3], dt); // odd size: filled by words
      assert.deepEqual(Array.from(z.data()), [0, 0, 0]);
      // A kernel without a 16-bit implementation runs as float32 on device casts and rounds back.
      const sum = kernels(be, dt).binary('add', t, t);
      assert.equal(sum.dtype, dt);
      assert.deepEqual(Array.from(sum.data()), Array.from(kernels(ref, dt).binary('add', host, host).data()));
      for (const x of [host, t, f, c, z, sum]) x.dispose();
    }
  });

  it('16-bit products: weight products (float32 x 16-bit) and 16-bit pairs against the reference', () => {
    const be = cuda!;
    const rng = new Rng(12);
    for (const dt of DT16)
      for (const [ta, tb, batch, M, N, K, shared] of [
        [false, true, 1, 1, 300, 257, true], // a decode step's product: one row, weight [N, K] (K odd: cuBLAS)
        [false, true, 1, 1, 300, 264, true], // the same with K a multiple of 8: the gemv16 kernel
        [false, true, 2, 4, 77, 1032, true], // 8 rows (gemv16's most), N not a multiple of its 4 rows a warp
        [false, true, 3, 1, 5, 8, true], // 3 rows, one 16-byte chunk of each weight row
        [false, true, 1, 6, 77, 1024, true], // 5-8 rows, K a multiple of 32 (bfloat16: gemvMma), N not a multiple of 16
        [false, true, 2, 4, 40, 256, true], // 8 rows, one 32-wide K block for each of gemvMma's 8 warps
        [false, true, 1, 5, 17, 32, true], // one K block: seven of gemvMma's warps have none
        [false, true, 3, 5, 64, 96, true],
        [false, false, 2, 33, 17, 65, false],
        [true, false, 2, 8, 129, 31, false],
        [false, false, 2, 3, 4, 0, false],
      ] as const) {
        const what = `${dt} ${ta} ${tb} ${batch}x${M}x${N}x${K}`;
        const aShape: number[] = [batch, ta ? K : M, ta ? M : K];
        const bShape: number[] = shared ? (tb ? [N, K] : [K, N]) : [batch, ...(tb ? [N, K] : [K, N])];
        const ad = randomData(rng, shapeSize(aShape));
        const bd = randomData(rng, shapeSize(bShape), 0.1);
        const b16 = ref.fromData(bd, bShape, dt);
        const bc = be.fromData(bd, bShape, dt);
        // x already 16-bit exact: the tensor cores' rounding of x changes nothing, so only the summation order
        // differs from the reference's float32 product.
        const aExact = ref.fromData(ref.fromData(ad, aShape, dt).data(), aShape, 'float32');
        const aExactC = be.fromData(aExact.data(), aShape, 'float32');
        const y = kernels(be, dt).matmul(aExactC, bc, ta, tb);
        assert.equal(y.dtype, 'float32');
        assertClose(y.data(), kernels(ref, dt).matmul(aExact, b16, ta, tb).data(), 2e-5, `${what} exact x`);
        const a = ref.fromData(ad, aShape, 'float32');
        const ac = be.fromData(ad, aShape, 'float32');
        // Any float32 x keeps its precision, as in the reference (which widens the weight): gemv16 (at most 8 rows,
        // K a multiple of 8), x as two 16-bit parts (x's error 2^-17 relative in bfloat16), or the weight widened.
        const expected = kernels(ref, dt).matmul(a, b16, ta, tb).data();
        assertClose(kernels(be, dt).matmul(ac, bc, ta, tb).data(), expected, 5e-5, `${what} float32 x`);
        // roundActivations: x rounded to the weight's dtype first (bfloat16 2^-9 relative per element) where more
        // than gemv16's rows or another K; the rounding must show (so the parts above are not rounded ones).
        const gemv = !ta && tb && shared && batch * M <= 8 && K % 8 === 0;
        be.roundActivations = true;
        const rounded = kernels(be, dt).matmul(ac, bc, ta, tb).data();
        be.roundActivations = false;
        assertClose(rounded, expected, gemv ? 5e-5 : dt === 'bfloat16' ? 1e-2 : 2e-3, `${what} rounded x`);
        if (!gemv && K > 0 && !ta && shared)
          assert.ok(
            rounded.some((v, i) => Math.abs(v - expected[i]!) > 1e-4),
            `${what}: rounding x changed nothing`,
          );
        // Two 16-bit operands: the result rounded to their dtype.
        const a16 = ref.fromData(ad, aShape, dt);
        const y16 = kernels(be, dt).matmul(be.fromData(ad, aShape, dt), bc, ta, tb);
        assert.equal(y16.dtype, dt);
        assertClose(y16.data(), kernels(ref, dt).matmul(a16, b16, ta, tb).data(), 8e-3, `${what} 16-bit pair`);
      }
  });
});

describe('cuda device memory and errors', { skip }, () => {
  it('accounts every live tensor exactly and returns its block to the cache', () => {
    const be = cuda!;
    const before = be.memory.current;
    const t = be.zeros([1000, 3], 'float32');
    assert.equal(be.memory.current - before, 12000);
    const live = be.deviceMemory().liveBytes;
    t.dispose();
    assert.equal(be.memory.current, before);
    assert.equal(live - be.deviceMemory().liveBytes, 12288); // 12000 rounded up to the 512-byte granule
  });

  it('reads asynchronously', async () => {
    const be = cuda!;
    const t = be.fromData([1, 2, 3.5], [3], 'float32');
    assert.deepEqual(Array.from(await be.readAsync(t)), [1, 2, 3.5]);
    t.dispose();
  });

  it('rejects out-of-range ids with the position', () => {
    const be = cuda!;
    const table = be.zeros([4, 2], 'float32');
    const ids = be.fromData([0, 3, 4], [3], 'int32');
    assert.throws(() => G.embedding(table, ids), /token id 4 at position 2 is outside the vocabulary \[0, 4\)/);
  });

  it('rejects a kernel call whose buffer is too small', () => {
    const be = cuda!;
    const x = be.zeros([1000], 'float32');
    const out = be.zeros([10], 'float32'); // one 512-byte block
    assert.throws(
      () => be.addon.scale(be.ptr(x), be.ptr(out), 2, 1000),
      /out: the device buffer holds 512 bytes from there, 4000 needed/,
    );
  });
});

describe('cuda graphs: a decode step replayed as one launch', { skip }, () => {
  it('replays what was captured on the inputs written since, and holds its intermediates exactly', () => {
    const be = cuda!;
    const x = be.fromData([1, 2, 3], [3], 'float32');
    const before = be.deviceMemory();
    const live = be.memory.current;
    const { graph, outputs } = be.capture(() => [tidy(() => add(scale(x, 2), x))]); // 3x; 2x is freed inside
    const y = outputs[0]!;
    assert.equal(graph.bytes, 512); // 2x's block: the graph's now
    assert.equal(be.deviceMemory().graphBytes - before.graphBytes, 512);
    assert.equal(be.memory.current - live, 12 + 512); // y, and the block the graph holds
    for (const v of [
      [1, 2, 3],
      [-4, 0.5, 10],
    ]) {
      be.write(x, v);
      graph.launch();
      assert.deepEqual(
        Array.from(y.data()),
        v.map((e) => 3 * e),
      );
    }
    graph.dispose();
    assert.equal(be.deviceMemory().graphBytes, before.graphBytes);
    assert.equal(be.memory.current - live, 12);
    assert.throws(() => graph.launch(), /launched after dispose/);
    y.dispose();
    x.dispose();
  });

  it('refuses host reads and writes while capturing, and leaves the device as it was', () => {
    const be = cuda!;
    const x = be.fromData([1, 2, 3], [3], 'float32');
    const before = be.deviceMemory();
    const live = be.memory.current;
    const readInside = () =>
      tidy(() => {
        scale(x, 2).data();
        return [];
      });
    assert.throws(() => be.capture(readInside), /read: not allowed while a graph is being captured/);
    assert.throws(() => be.capture(() => (be.write(x, [0, 0, 0]), [])), /write: not allowed while a graph/);
    assert.equal(be.deviceMemory().graphBytes, before.graphBytes);
    assert.equal(be.deviceMemory().liveBytes, before.liveBytes);
    assert.equal(be.memory.current, live);
    assert.deepEqual(Array.from(tidy(() => scale(x, 2).data())), [2, 4, 6]); // the stream still works
    x.dispose();
  });

  const config = validateRetNetConfig({
    ...RETNET_DEFAULTS,
    vocabSize: 37,
    embedDim: 32,
    valueDim: 48,
    heads: 2,
    ffnDim: 40,
    layers: 2,
  });

  /** Logits of every step of a decode with rows masked, selected and appended on the way. */
  function decode(model: RetNetModel, graphs: boolean): { logits: Float32Array[]; graphBytes: number[] } {
    const be = cuda!;
    model.stepGraphs = graphs;
    const { logits: first, state } = model.prefill([
      [1, 2, 3],
      [4, 5],
    ]);
    first.dispose();
    const out: Float32Array[] = [];
    const graphBytes: number[] = [];
    for (let i = 0; i < 12; i++) {
      if (i === 6) state.select([1, 0]);
      if (i === 8) {
        const more = model.prefill([[7, 8, 9, 10]]).state;
        state.append!(more);
      }
      const tokens = Array.from({ length: state.batch }, (_, b) => (5 * i + 3 * b + 1) % 37);
      const mask = i === 4 ? tokens.map((_, b) => (b === 0 ? 0 : 1)) : undefined;
      const l = model.step(tokens, state, mask);
      out.push(l.data() as Float32Array);
      l.dispose();
      graphBytes.push(be.deviceMemory().graphBytes);
    }
    state.dispose();
    return { logits: out, graphBytes };
  }

  for (const stateDType of ['float32', 'float16'] as const)
    it(`RetNet decode through graphs equals it kernel by kernel, step for step (${stateDType} state)`, () => {
      const be = cuda!;
      const base = be.deviceMemory().graphBytes;
      const model = new RetNetModel(config, { backend: be, seed: 5 });
      model.stateDType = stateDType;
      const eager = decode(model, false);
      const graphed = decode(model, true);
      graphed.logits.forEach((l, i) => assert.deepEqual(l, eager.logits[i], `step ${i}`));
      // Step 0 runs kernel by kernel, step 1 captures; the masked step 4 and the first steps after select (6) and
      // append (8) run kernel by kernel, and the graph is captured again on the step after each.
      const used = graphed.graphBytes.map((b) => b > base);
      assert.deepEqual(used, [false, true, true, true, true, true, false, true, false, true, true, true]);
      assert.ok(eager.graphBytes.every((b) => b === base));
      model.dispose();
      assert.equal(be.deviceMemory().graphBytes, base);
    });

  it("states stepped in turns each keep their graph; a disposed state's graph goes at the next step", () => {
    const be = cuda!;
    const base = be.deviceMemory().graphBytes;
    const model = new RetNetModel(config, { backend: be, seed: 6 });
    const run = (graphs: boolean) => {
      model.stepGraphs = graphs;
      const start = (prompts: number[][]) => {
        const { logits, state } = model.prefill(prompts);
        logits.dispose();
        return state;
      };
      const [a, b] = [start([[1, 2]]), start([[3], [4, 5]])];
      const out: Float32Array[] = [];
      const step = (s: typeof a, i: number) => {
        const l = model.step(
          Array.from({ length: s.batch }, (_, r) => (7 * i + r) % 37),
          s,
        );
        out.push(l.data() as Float32Array);
        l.dispose();
      };
      for (let i = 0; i < 4; i++) for (const s of [a, b]) step(s, i);
      const both = be.deviceMemory().graphBytes - base;
      a.dispose();
      step(b, 4);
      const one = be.deviceMemory().graphBytes - base;
      b.dispose();
      return { out, both, one };
    };
    const eager = run(false);
    const graphed = run(true);
    graphed.out.forEach((l, i) => assert.deepEqual(l, eager.out[i], `step ${i}`));
    assert.ok(graphed.one > 0 && graphed.both > graphed.one, `graph bytes ${graphed.both} then ${graphed.one}`);
    assert.equal(eager.both, 0);
    model.dispose();
    assert.equal(be.deviceMemory().graphBytes, base);
  });

  it('a step with a token outside the vocabulary is an error naming it', () => {
    const model = new RetNetModel(config, { backend: cuda!, seed: 5 });
    const { logits, state } = model.prefill([[1], [2]]);
    logits.dispose();
    for (let i = 0; i < 2; i++) model.step([3, 4], state).dispose(); // a graph is in use from the second step
    assert.throws(() => model.step([3, 37], state), /token 37 of row 1 is outside the vocabulary \[0, 37\)/);
    state.dispose();
    model.dispose();
  });
});
