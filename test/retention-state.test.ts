// State-carrying retention: packed segments equal each sequence alone, a sequence split into pieces that continue a
// state equals one pass, the final state equals the recurrent form's, in both modes (torchscale's normalised and
// fla's un-normalised); and the model API on top: chunked prefill in pieces == one prefill == the parallel forward.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { Device } from '../src/backend/device.js';
import type { RetentionForm } from '../src/backend/kernels.js';
import { retentionGammas } from '../src/backend/reference/retention-math.js';
import { noGrad } from '../src/autograd/tape.js';
import { RetnetError, ShapeError } from '../src/errors.js';
import { RETNET_DEFAULTS, validateRetNetConfig } from '../src/models/retnet/config.js';
import { RetNetModel } from '../src/models/retnet/model.js';
import { type RetentionState, retentionForward, retentionStep } from '../src/ops/retention.js';
import { concat, reshape, slice } from '../src/ops/shape.js';
import { Rng } from '../src/tensor/random.js';
import { tidy } from '../src/tensor/scope.js';
import type { DType } from '../src/tensor/dtype.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { assertClose, nat, randomTensor, ref } from './helpers.js';

const H = 2;
const K = 4;
const V = 3;
const gammas = retentionGammas(H);

function qkv(be: Device, rng: Rng, T: number, scale = 1): Tensor[] {
  return [
    randomTensor(be, rng, [1, T, H, K], { dtype: 'float64', scale }),
    randomTensor(be, rng, [1, T, H, K], { dtype: 'float64', scale }),
    randomTensor(be, rng, [1, T, H, V], { dtype: 'float64', scale }),
  ];
}

const rows = (t: Tensor, a: number, b: number) => slice(t, 1, a, b);

/** Runs [a, b) of q, k, v continuing `state`. */
function piece(
  form: RetentionForm,
  [q, k, v]: Tensor[],
  a: number,
  b: number,
  state: RetentionState | null,
  normalize: boolean,
  chunkSize = 4,
) {
  return retentionForward(form, rows(q!, a, b), rows(k!, a, b), rows(v!, a, b), gammas, {
    chunkSize,
    normalize,
    initialState: state,
    returnFinalState: true,
  });
}

describe('state-carrying retention (reference, float64)', () => {
  for (const normalize of [true, false])
    for (const form of ['parallel', 'chunkwise'] as const)
      it(`${form}, ${normalize ? 'normalised' : 'un-normalised'}: packed segments equal each sequence alone`, () =>
        tidy(() => {
          const rng = new Rng(1);
          const lengths = [5, 1, 0, 9];
          const x = qkv(ref, rng, 15, 0.7);
          const packed = retentionForward(form, x[0]!, x[1]!, x[2]!, gammas, {
            chunkSize: 4,
            normalize,
            segments: lengths,
            returnFinalState: true,
          });
          let start = 0;
          lengths.forEach((n, i) => {
            const alone = piece(form, x, start, start + n, null, normalize);
            assertClose(rows(packed.o, start, start + n).data(), alone.o.data(), 1e-14, `o of segment ${i}`);
            assertClose(
              slice(packed.finalState!.state, 0, i, i + 1).data(),
              alone.finalState!.state.data(),
              1e-14,
              `state ${i}`,
            );
            assertClose(
              slice(packed.finalState!.scale, 0, i, i + 1).data(),
              alone.finalState!.scale.data(),
              1e-14,
              `scale ${i}`,
            );
            start += n;
          });
        }));

  for (const normalize of [true, false])
    it(`${normalize ? 'normalised' : 'un-normalised'}: the final state is the recurrent form's, whatever the form`, () =>
      tidy(() => {
        const rng = new Rng(2);
        const T = 11;
        const x = qkv(ref, rng, T);
        const state = ref.zeros([1, H, K, V], 'float64');
        const scale = ref.zeros([1, H], 'float64');
        const head = (t: Tensor, n: number) => reshape(rows(t, n, n + 1), [1, H, t.shape[3]!]);
        for (let n = 0; n < T; n++)
          retentionStep(head(x[0]!, n), head(x[1]!, n), head(x[2]!, n), state, scale, gammas, normalize);
        for (const form of ['parallel', 'chunkwise'] as const) {
          const { finalState } = piece(form, x, 0, T, null, normalize, 3);
          assertClose(finalState!.state.data(), state.data(), 1e-12, `${form} state`);
          assertClose(finalState!.scale.data(), scale.data(), 1e-12, `${form} scale`);
        }
      }));

  it('pieces continuing a state equal one pass: any split un-normalised, chunk-aligned splits normalised', () =>
    tidy(() => {
      const rng = new Rng(3);
      const T = 13;
      const x = qkv(ref, rng, T, 1.5);
      const cases: { form: RetentionForm; normalize: boolean; cuts: number[] }[] = [
        { form: 'parallel', normalize: false, cuts: [3, 4, 11] },
        { form: 'chunkwise', normalize: false, cuts: [1, 6, 7] },
        { form: 'chunkwise', normalize: true, cuts: [4, 8, 12] }, // multiples of C = 4
      ];
      for (const { form, normalize, cuts } of cases) {
        const whole = piece(form, x, 0, T, null, normalize);
        let state: RetentionState | null = null;
        const outs: Tensor[] = [];
        [0, ...cuts].forEach((a, i) => {
          const r = piece(form, x, a, [...cuts, T][i]!, state, normalize);
          outs.push(r.o);
          state = r.finalState;
        });
        const what = `${form} ${normalize ? 'normalised' : 'un-normalised'}`;
        assertClose(concat(outs, 1).data(), whole.o.data(), 1e-12, `${what} outputs`);
        assertClose(state!.state.data(), whole.finalState!.state.data(), 1e-12, `${what} state`);
        assertClose(state!.scale.data(), whole.finalState!.scale.data(), 1e-12, `${what} scale`);
      }
    }));

  it('rejects bad segments and states, and training through them, naming the problem', () =>
    tidy(() => {
      const rng = new Rng(4);
      const [q, k, v] = qkv(ref, rng, 5);
      const run = (opts: Parameters<typeof retentionForward>[5]) =>
        retentionForward('parallel', q!, k!, v!, gammas, opts);
      assert.throws(() => run({ segments: [2, 2] }), /segment lengths sum to 4, but T is 5/);
      assert.throws(() => run({ segments: [2, -1, 4] }), ShapeError);
      const s = ref.zeros([2, H, K, V], 'float64');
      const sc = ref.zeros([2, H], 'float64');
      assert.throws(() => run({ initialState: { state: s, scale: sc } }), /initialState.state/);
      q!.requiresGrad = true;
      assert.throws(
        () => run({ segments: [5] }),
        (e: Error) => e instanceof RetnetError && /training through packed segments is not supported/.test(e.message),
      );
    }));
});

describe('state-carrying retention: native against the reference (float32)', () => {
  it('segments, initial and final states in both forms and modes', () =>
    tidy(() => {
      for (const normalize of [true, false])
        for (const form of ['parallel', 'chunkwise'] as const) {
          const run = (be: Device) => {
            const rng = new Rng(5);
            const to32 = (t: Tensor) => be.fromData(t.data(), t.shape, 'float32');
            const [q, k, v] = qkv(ref, rng, 12).map(to32);
            const state = to32(randomTensor(ref, rng, [3, H, K, V], { dtype: 'float64' }));
            const scale = be.fromData([2, 0, 5.5, 1, 3, 0.25], [3, H], 'float32');
            const r = retentionForward(form, q!, k!, v!, gammas, {
              chunkSize: 5,
              normalize,
              initialState: { state, scale },
              returnFinalState: true,
              segments: [7, 0, 5],
            });
            return [r.o.data(), r.finalState!.state.data(), r.finalState!.scale.data()];
          };
          const want = run(ref);
          run(nat()).forEach((got, i) => assertClose(got, want[i]!, 1e-5, `${form} ${normalize} output ${i}`));
        }
    }));
});

describe('recurrent retention steps: native against the reference (float32)', () => {
  // [B, H, K, V]: size 1, odd sizes, and two above the native kernel's parallel grain (B·H·K·V > 2¹⁵: its rows of
  // (batch, head) then run on the worker pool), with empty (scale 0) and carried states side by side.
  const shapes: [number, number, number, number][] = [
    [1, 1, 1, 1],
    [2, 3, 5, 7],
    [3, 5, 37, 211],
    [1, 8, 64, 129],
  ];
  // Four steps from a random state of stateDType on device be: each step's o, then the state and scale after.
  const steps = (be: Device, shape: [number, number, number, number], normalize: boolean, stateDType: DType) => {
    const [B, Hs, Ks, Vs] = shape;
    const g = retentionGammas(Hs);
    const rng = new Rng(B * 1000 + Ks);
    const to32 = (t: Tensor) => be.fromData(t.data(), t.shape, 'float32');
    const state = be.fromData(randomTensor(ref, rng, shape, { dtype: 'float64' }).data(), shape, stateDType);
    const scale = be.fromData(
      Array.from({ length: B * Hs }, (_, i) => (i % 3 === 0 ? 0 : 1 + i / 4)),
      [B, Hs],
      'float32',
    );
    const outs: Float32Array[] = [];
    for (let t = 0; t < 4; t++) {
      const [q, k] = [0, 1].map(() => to32(randomTensor(ref, rng, [B, Hs, Ks], { dtype: 'float64' })));
      const v = to32(randomTensor(ref, rng, [B, Hs, Vs], { dtype: 'float64' }));
      outs.push(retentionStep(q!, k!, v, state, scale, g, normalize).data() as Float32Array);
    }
    assert.equal(state.dtype, stateDType);
    return { outs, state: state.data(), scale: scale.data() };
  };

  for (const normalize of [true, false])
    it(`${normalize ? 'normalised' : 'un-normalised'}: four steps on odd shapes update state and scale alike`, () =>
      tidy(() => {
        for (const shape of shapes) {
          const want = steps(ref, shape, normalize, 'float32');
          const got = steps(nat(), shape, normalize, 'float32');
          [...got.outs, got.state, got.scale].forEach((x, i) =>
            assertClose(x, [...want.outs, want.state, want.scale][i]!, 1e-5, `[${shape.join(', ')}] result ${i}`),
          );
        }
      }));

  // A float16 state: native against reference, both against the float32 state. The two devices may round a sum that
  // their float32 arithmetic (FMA or not) puts on either side of a float16 tie one step apart: 2^-10 of a value (1e-3
  // of the state's scale); o within 1e-4. Against the float32 state: float16's rounding, carried over four steps.
  for (const normalize of [true, false])
    it(`${normalize ? 'normalised' : 'un-normalised'}: a float16 state, four steps on odd shapes`, () =>
      tidy(() => {
        for (const shape of shapes) {
          const label = `[${shape.join(', ')}]`;
          const want = steps(ref, shape, normalize, 'float16');
          const got = steps(nat(), shape, normalize, 'float16');
          got.outs.forEach((o, i) => assertClose(o, want.outs[i]!, 1e-4, `${label} o ${i}, native vs reference`));
          assertClose(got.state, want.state, 2 ** -10, `${label} state, native vs reference`);
          assertClose(got.scale, want.scale, 1e-6, `${label} scale`);
          const wide = steps(ref, shape, normalize, 'float32');
          want.outs.forEach((o, i) => assertClose(o, wide.outs[i]!, 4e-3, `${label} o ${i}, float16 vs float32 state`));
          assertClose(want.state, wide.state, 4e-3, `${label} state, float16 vs float32`);
        }
      }));

  it('rejects a state of another dtype, naming it', () => {
    const x = ref.fromData([1, 2], [1, 1, 2], 'float32');
    const state = ref.zeros([1, 1, 2, 2], 'bfloat16');
    const scale = ref.zeros([1, 1], 'float32');
    assert.throws(
      () => retentionStep(x, x, x, state, scale, [0.9], true),
      /retentionStep: state must be float32 \(as q\) or float16, got bfloat16/,
    );
  });
});

describe('RetNet prefill with state', () => {
  // normEps ~0: the forms differ only where the per-head norm's eps meets their row scales, so all agree to rounding.
  const config = validateRetNetConfig({
    ...RETNET_DEFAULTS,
    vocabSize: 31,
    embedDim: 16,
    valueDim: 24,
    heads: 2,
    ffnDim: 20,
    layers: 2,
    chunkSize: 4,
    normEps: 1e-300,
  });
  const model = new RetNetModel(config, { backend: ref, dtype: 'float64', seed: 7 });
  const rng = new Rng(8);
  const tokens = Array.from({ length: 17 }, () => rng.int(31));
  const parallelLogits = noGrad(() =>
    tidy(() => model.forward(ref.fromData(tokens, [1, tokens.length], 'int32'), { form: 'parallel' }).data()),
  );
  const lastOf = (logits: Tensor, row = 0) => logits.data().slice(row * 31, (row + 1) * 31);
  const atPosition = (n: number) => parallelLogits.slice(n * 31, (n + 1) * 31);

  for (const form of ['chunkwise', 'parallel'] as const)
    it(`${form}: prefill in pieces == one prefill == the parallel forward, then steps continue`, () => {
      const one = model.prefill([tokens], { form });
      const cuts = [0, 5, 6, 13, 17];
      let state = model.emptyState(1);
      for (let i = 0; i + 1 < cuts.length; i++) {
        const r = model.prefill([tokens.slice(cuts[i], cuts[i + 1])], { form, state });
        assert.equal(r.state, state, 'the given state is advanced in place');
        assertClose(lastOf(r.logits), atPosition(cuts[i + 1]! - 1), 1e-9, `piece ${i} last logits`);
        r.logits.dispose();
        state = r.state;
      }
      assertClose(lastOf(one.logits), atPosition(16), 1e-9, 'one prefill');
      assert.deepEqual(state.positions, [17]);
      state.states.forEach((s, l) => assertClose(s.data(), one.state.states[l]!.data(), 1e-9, `layer ${l} state`));
      state.scales.forEach((s, l) => assertClose(s.data(), one.state.scales[l]!.data(), 1e-12, `layer ${l} scale`));
      one.logits.dispose();
      one.state.dispose();
      state.dispose();
    });

  it('a batch of prompts of different lengths equals each prompt alone, and each row continues its own state', () => {
    const prompts = [tokens.slice(0, 9), tokens.slice(3, 4), tokens.slice(2, 17)];
    const together = model.prefill(prompts);
    assert.deepEqual(together.state.positions, [9, 1, 15]);
    prompts.forEach((p, b) => {
      const alone = model.prefill([p]);
      assertClose(lastOf(together.logits, b), lastOf(alone.logits), 1e-9, `prompt ${b}`);
      together.state.states.forEach((s, l) =>
        assertClose(slice(s, 0, b, b + 1).data(), alone.state.states[l]!.data(), 1e-12, `prompt ${b} layer ${l}`),
      );
      alone.logits.dispose();
      alone.state.dispose();
    });
    // Each row continues its own state: a second piece per row after a packed first prefill.
    const next = model.prefill([[1, 2], [3], [4, 5, 6]], { state: together.state });
    assert.deepEqual(next.state.positions, [11, 2, 18]);
    const again = model.prefill([[...prompts[2]!, 4, 5, 6]]);
    assertClose(lastOf(next.logits, 2), lastOf(again.logits), 1e-9, 'row 2 after two pieces');
    for (const t of [together.logits, next.logits, again.logits]) t.dispose();
    together.state.dispose();
    again.state.dispose();
  });

  it('rejects a state of another batch size or model', () => {
    const state = model.emptyState(2);
    assert.throws(() => model.prefill([[1]], { state }), /prefill: 1 prompts for a state of 2 rows/);
    state.dispose();
  });

  it('rejects a step token outside the vocabulary, naming it and its row, and leaves the state as it was', () => {
    const { logits, state } = model.prefill([[1], [2]]);
    logits.dispose();
    const before = state.positions.slice();
    const V = model.vocabSize;
    for (const bad of [V, -1, 1.5])
      assert.throws(
        () => model.step([3, bad], state),
        new RegExp(`retnet.step: token ${bad} of row 1 is outside the vocabulary \\[0, ${V}\\)`),
      );
    assert.deepEqual(state.positions, before);
    state.dispose();
  });
});
