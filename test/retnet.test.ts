// RetNet model: the three forms against each other, chunkwise gradients against parallel ones and finite
// differences, prefill then recurrent continuation, flat decode memory, serialisable state, config validation and
// parameter counts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { Device } from '../src/backend/device.js';
import { backward, noGrad } from '../src/autograd/tape.js';
import { ConfigError } from '../src/errors.js';
import { crossEntropy } from '../src/ops/nn.js';
import { sum } from '../src/ops/math.js';
import { retention } from '../src/ops/retention.js';
import {
  RETNET_DEFAULTS,
  type RetNetConfig,
  retnetConfigFromJSON,
  retnetConfigToJSON,
  retnetParameterCount,
  retnetPreset,
  validateRetNetConfig,
} from '../src/models/retnet/config.js';
import { RetNetModel } from '../src/models/retnet/model.js';
import type { DType } from '../src/tensor/dtype.js';
import { Rng } from '../src/tensor/random.js';
import { tidy } from '../src/tensor/scope.js';
import { assertClose, checkGradients, nat, ref } from './helpers.js';

function config(overrides: Partial<RetNetConfig> = {}): RetNetConfig {
  return validateRetNetConfig({
    ...RETNET_DEFAULTS,
    vocabSize: 37,
    embedDim: 24,
    valueDim: 36,
    heads: 3,
    ffnDim: 40,
    layers: 2,
    ...overrides,
  });
}

function randomTokens(rng: Rng, n: number, vocab: number): number[] {
  return Array.from({ length: n }, () => rng.int(vocab));
}

/** Scales the weights up so that the score normalisers of every form are active (rows with Σ|A| > 1). */
function makeModel(c: RetNetConfig, be: Device, dtype: DType, seed: number): RetNetModel {
  const model = new RetNetModel(c, { backend: be, dtype, seed });
  const rng = new Rng(seed + 1);
  for (const [name, t] of model.namedParameters())
    if (/(q|k|v)_proj/.test(name))
      t.device.write(
        t,
        Array.from(t.data(), (x) => x * (3 + rng.uniform())),
      );
  return model;
}

function logits(model: RetNetModel, tokens: number[], opts: Parameters<RetNetModel['forward']>[1]): Float64Array {
  return Float64Array.from(
    noGrad(() => tidy(() => model.forward(model.backend.fromData(tokens, [1, tokens.length], 'int32'), opts).data())),
  );
}

function recurrent(model: RetNetModel, tokens: number[]): Float64Array {
  const state = model.emptyState(1);
  const out = new Float64Array(tokens.length * model.vocabSize);
  tokens.forEach((t, i) => {
    const l = model.step([t], state);
    out.set(l.data(), i * model.vocabSize);
    l.dispose();
  });
  state.dispose();
  return out;
}

describe('the three forms agree', () => {
  // With the per-head norm's eps ~0 the forms are equal (spec §5d): 1e-10 in float64. In float32 with the default
  // eps they differ by eps effects plus rounding: 2e-4 relative to max(1, max|logit|).
  const cases = [
    { be: () => ref, dtype: 'float64' as DType, eps: 1e-14, tol: 1e-10 },
    { be: () => nat(), dtype: 'float32' as DType, eps: 1e-6, tol: 2e-4 },
  ];
  for (const { be, dtype, eps, tol } of cases)
    it(`${dtype}, eps ${eps}: parallel = chunkwise (C = 1, 4, 5, T, T+3) = recurrent`, () => {
      const rng = new Rng(5);
      for (const [T, heads, glu] of [
        [13, 3, true],
        [1, 2, false],
        [20, 1, true],
      ] as const) {
        const c = config({ normEps: eps, heads, embedDim: 8 * heads, valueDim: 10 * heads, glu });
        const model = makeModel(c, be(), dtype, T);
        const tokens = randomTokens(rng, T, c.vocabSize);
        const parallel = logits(model, tokens, { form: 'parallel' });
        for (const C of [1, 4, 5, T, T + 3])
          assertClose(logits(model, tokens, { form: 'chunkwise', chunkSize: C }), parallel, tol, `T=${T} chunk ${C}`);
        assertClose(recurrent(model, tokens), parallel, tol, `T=${T} recurrent`);
        model.dispose();
      }
    });
});

function gradients(model: RetNetModel, tokens: number[], targets: number[], form: 'parallel' | 'chunkwise', C: number) {
  model.zeroGrad();
  tidy(() => {
    const be = model.backend;
    const ids = be.fromData(tokens, [1, tokens.length], 'int32');
    const tg = be.fromData(targets, [1, targets.length], 'int32');
    backward(crossEntropy(model.forward(ids, { form, chunkSize: C }), tg));
  });
  return model.namedParameters().map(([n, t]) => [n, t.grad!.data()] as const);
}

describe('chunkwise gradients equal parallel gradients', () => {
  it('float64, eps ~0, active normalisers: every parameter to 1e-8', () => {
    const c = config({ normEps: 1e-14 });
    const model = makeModel(c, ref, 'float64', 3);
    const rng = new Rng(9);
    const tokens = randomTokens(rng, 11, c.vocabSize);
    const targets = randomTokens(rng, 11, c.vocabSize);
    const p = gradients(model, tokens, targets, 'parallel', 0);
    for (const C of [3, 4, 11]) {
      const ch = gradients(model, tokens, targets, 'chunkwise', C);
      p.forEach(([n, g], i) => assertClose(ch[i]![1], g, 1e-8, `chunk ${C} ${n}`));
    }
    model.dispose();
  });

  it('float32 native, default eps: every parameter to 2e-3 (eps effects and rounding)', () => {
    const c = config();
    const model = makeModel(c, nat(), 'float32', 4);
    const rng = new Rng(10);
    const tokens = randomTokens(rng, 19, c.vocabSize);
    const targets = randomTokens(rng, 19, c.vocabSize);
    const p = gradients(model, tokens, targets, 'parallel', 0);
    const ch = gradients(model, tokens, targets, 'chunkwise', 6);
    p.forEach(([n, g], i) => assertClose(ch[i]![1], g, 2e-3, n));
    model.dispose();
  });
});

describe('gradients against finite differences', () => {
  it('chunkwise, with the key and gate projections recomputed in backward: the mixer weights (float64)', () => {
    const c = config({ vocabSize: 7, embedDim: 8, valueDim: 12, heads: 2, ffnDim: 6, layers: 1 });
    const model = makeModel(c, ref, 'float64', 13);
    assert.ok(model.layers[0]!.mixer.kProj.recompute && model.layers[0]!.mixer.gProj!.recompute);
    const ids = ref.fromData([3, 1, 4, 1, 5, 6, 2], [1, 7], 'int32');
    const params = new Map(model.namedParameters());
    const checked = ['q_proj', 'k_proj', 'v_proj', 'g_proj', 'out_proj'].map((n) =>
      params.get(`layers.0.retention.${n}.weight`)!,
    );
    checkGradients(() => model.forward(ids, { form: 'chunkwise', chunkSize: 3 }), checked, 'chunkwise model');
    ids.dispose();
    model.dispose();
  });
});

describe('prefill then recurrent decoding', () => {
  it('chunkwise prefill + recurrent continuation equals the full parallel pass (float64, eps ~0)', () => {
    const c = config({ normEps: 1e-14 });
    const model = makeModel(c, ref, 'float64', 7);
    const rng = new Rng(11);
    const prompts = [randomTokens(rng, 9, c.vocabSize), randomTokens(rng, 4, c.vocabSize)];
    const continuations = [randomTokens(rng, 5, c.vocabSize), randomTokens(rng, 5, c.vocabSize)];
    const V = c.vocabSize;
    const { logits: first, state } = model.prefill(prompts, { form: 'chunkwise', chunkSize: 4 });
    const rows: Float64Array[][] = prompts.map(() => []);
    const firstData = first.data();
    prompts.forEach((_, b) => rows[b]!.push(Float64Array.from(firstData.slice(b * V, (b + 1) * V))));
    first.dispose();
    for (let s = 0; s < 5; s++) {
      const l = model.step(
        continuations.map((cont) => cont[s]!),
        state,
      );
      const d = l.data();
      prompts.forEach((_, b) => rows[b]!.push(Float64Array.from(d.slice(b * V, (b + 1) * V))));
      l.dispose();
    }
    assert.deepEqual(state.positions, [14, 9]);
    prompts.forEach((p, b) => {
      const full = [...p, ...continuations[b]!];
      const reference = logits(model, full, { form: 'parallel' });
      const expected = reference.slice((p.length - 1) * V, full.length * V);
      const got = new Float64Array(rows[b]!.length * V);
      rows[b]!.forEach((r, i) => got.set(r, i * V));
      assertClose(got, expected, 1e-10, `row ${b}`);
    });
    state.dispose();
    model.dispose();
  });

  it('decode memory stays flat with position; the state size depends only on the config', () => {
    const c = config();
    const model = new RetNetModel(c, { backend: nat(), seed: 1 });
    const be = nat();
    const { logits: l0, state } = model.prefill([[1, 2, 3]]);
    l0.dispose();
    const { K, V } = { K: c.embedDim / c.heads, V: c.valueDim / c.heads };
    assert.equal(state.bytes(), c.layers * c.heads * (K * V + 1) * 4);
    let heldAt10 = 0;
    for (let i = 0; i < 300; i++) {
      model.step([i % c.vocabSize], state).dispose();
      if (i === 10) heldAt10 = be.memory.current;
    }
    assert.equal(be.memory.current, heldAt10, 'tensor bytes held after 300 steps equal those after 10');
    assert.equal(state.bytes(), c.layers * c.heads * (K * V + 1) * 4);
    state.dispose();
    model.dispose();
  });

  it('the state round-trips through its tensors (serialisable) and decoding continues identically', () => {
    const c = config();
    const model = new RetNetModel(c, { backend: nat(), seed: 2 });
    const { logits: l0, state } = model.prefill([[4, 5, 6, 7]]);
    l0.dispose();
    const copy = model.stateFromTensors(state.toTensors(), state.positions);
    const a = model.step([9], state);
    const b = model.step([9], copy);
    assertClose(b.data(), a.data(), 0, 'continued logits');
    a.dispose();
    b.dispose();
    state.dispose();
    copy.dispose();
    model.dispose();
  });

  it('select keeps the chosen rows', () => {
    const c = config();
    const model = new RetNetModel(c, { backend: nat(), seed: 3 });
    const prompts = [[1, 2], [3], [4, 5, 6]];
    const { logits: l0, state } = model.prefill(prompts);
    l0.dispose();
    const { logits: l1, state: single } = model.prefill([prompts[2]!]);
    l1.dispose();
    state.select([2]);
    assert.deepEqual(state.positions, [3]);
    const a = model.step([7], state);
    const b = model.step([7], single);
    assertClose(a.data(), b.data(), 1e-6, 'selected row');
    for (const t of [a, b]) t.dispose();
    state.dispose();
    single.dispose();
    model.dispose();
  });
});

describe('a float16 decode state (RetNetModel.stateDType)', () => {
  // The same decode with the model's float32 state and with a float16 one: prefill, steps, select, append, a padded
  // step (keepRows), the state's tensors round trip, and a second prefill continuing the state; the logits within
  // float16's rounding of the states (measured: 1.2e-4 and 1.4e-4 of the logits' scale), the states half the bytes.
  for (const normalize of ['torchscale', 'fla'] as const)
    it(`decodes as the float32 state does, within float16 rounding (${normalize} retention)`, () => {
      const c = config(normalize === 'fla' ? { retentionNorm: 'none' } : {});
      const run = (stateDType: DType) => {
        const model = new RetNetModel(c, { backend: nat(), seed: 5 });
        model.stateDType = stateDType;
        const out: number[] = [];
        const take = (t: { data(): ArrayLike<number>; dispose(): void }) => {
          out.push(...Array.from(t.data()));
          t.dispose();
        };
        const { logits, state } = model.prefill([
          [1, 2, 3],
          [4, 5],
          [6, 7, 8, 9],
        ]);
        take(logits);
        assert.equal(state.states[0]!.dtype, stateDType);
        for (let s = 0; s < 4; s++) take(model.step([s, s + 1, s + 2], state));
        state.select([2, 0]);
        const other = model.prefill([[10, 11]]);
        take(other.logits);
        state.append(other.state);
        take(model.step([3, 4, 5], state, [1, 0, 1])); // row 1 padded: its state kept
        const copy = model.stateFromTensors(state.toTensors(), state.positions);
        state.dispose();
        take(model.prefill([[12, 13], [14], [15, 16, 17]], { state: copy }).logits);
        for (let s = 0; s < 3; s++) take(model.step([s, 1, 2], copy));
        const bytes = copy.bytes();
        assert.equal(copy.states[0]!.dtype, stateDType);
        copy.dispose();
        model.dispose();
        return { out, bytes };
      };
      const wide = run('float32');
      const half = run('float16');
      assertClose(half.out, wide.out, 1e-3, 'logits with a float16 state');
      const { K, V } = { K: c.embedDim / c.heads, V: c.valueDim / c.heads };
      assert.equal(wide.bytes, 3 * c.layers * c.heads * (K * V + 1) * 4);
      assert.equal(half.bytes, 3 * c.layers * c.heads * (K * V * 2 + 4));
    });

  it("rejects a state dtype other than the model's or float16", () => {
    const model = new RetNetModel(config(), { backend: nat(), seed: 1 });
    assert.throws(() => (model.stateDType = 'bfloat16'), /RetNet.stateDType: .* float32 .* or float16, got bfloat16/);
    model.dispose();
  });
});

describe('RetNetConfig', () => {
  it('counts parameters exactly', () => {
    for (const overrides of [
      {},
      { tiedEmbeddings: true },
      { layernormEmbedding: true },
      { glu: false },
      { normalizeBefore: false },
    ]) {
      const c = config(overrides);
      const model = new RetNetModel(c, { backend: nat() });
      assert.equal(model.parameterCount(), retnetParameterCount(c), JSON.stringify(overrides));
      model.dispose();
    }
    // The paper's sizes: about 12·d²·L non-embedding parameters (spec §12), within 2%.
    for (const name of ['1.3B', '2.7B', '6.7B']) {
      const c = retnetPreset(name, { vocabSize: 1 });
      const nonEmbedding = retnetParameterCount(c) - 2 * c.embedDim - c.embedDim * (2 * c.layers + 1);
      const paper = 12 * c.embedDim ** 2 * c.layers;
      assert.ok(Math.abs(nonEmbedding / paper - 1) < 0.02, `${name}: ${nonEmbedding} vs 12·d²·L = ${paper}`);
    }
  });

  it('rejects bad fields with a message naming them', () => {
    const bad: [Partial<RetNetConfig>, RegExp][] = [
      [{ heads: 5 }, /embedDim 24 must be divisible by heads 5/],
      [{ valueDim: 35 }, /valueDim 35 must be divisible by heads 3/],
      [{ layers: 0 }, /layers must be a positive integer/],
      [{ dropout: 1.5 }, /dropout must be a number in \[0, 1\)/],
      [{ activation: 'tanh' as never }, /activation must be gelu, swish or relu/],
      [{ embedDim: 18, heads: 6, valueDim: 36 }, /key head dim .* must be even/],
    ];
    for (const [o, re] of bad)
      assert.throws(
        () => config(o),
        (e: Error) => e instanceof ConfigError && re.test(e.message),
      );
    assert.throws(() => retnetPreset('huge', { vocabSize: 10 }), /unknown RetNet preset 'huge'/);
  });

  it('reads torchscale config keys and round-trips its own JSON', () => {
    const c = config({ activation: 'swish', tiedEmbeddings: true, scaleEmbedding: true, deepnorm: true });
    assert.deepEqual(retnetConfigFromJSON(retnetConfigToJSON(c), 'x'), c);
    assert.throws(
      () => retnetConfigFromJSON({ ...retnetConfigToJSON(c), decoder_layerz: 3 }, 'cfg.json'),
      /cfg.json: unknown RetNet config key 'decoder_layerz'/,
    );
    assert.throws(
      () => retnetConfigFromJSON({ ...retnetConfigToJSON(c), moe_expert_count: 4 }, 'cfg.json'),
      /moe_expert_count.*not supported/,
    );
    assert.throws(
      () => retnetConfigFromJSON({ ...retnetConfigToJSON(c), decoder_layers: '2' }, 'cfg.json'),
      /cfg.json: layers must be a positive integer, got "2"/,
    );
    assert.throws(() => retnetConfigFromJSON([], 'cfg.json'), /expected a JSON object/);
  });
});

describe('retention memory (engine accounting, workspace included)', () => {
  function peakBytes(form: 'parallel' | 'chunkwise', T: number): number {
    const be = nat();
    const rng = new Rng(T);
    const make = (width: number) => {
      const t = be.fromData(
        Array.from({ length: 2 * T * width }, () => 0.1 * rng.normal()),
        [1, T, 2, width],
        'float32',
      );
      t.requiresGrad = true;
      return t;
    };
    const [q, k, v] = [make(8), make(8), make(8)];
    const base = be.memory.current;
    be.memory.resetPeak();
    tidy(() => {
      const o = retention(q, k, v, [0.9, 0.99], { form, chunkSize: 64 });
      backward(sum(o));
    });
    const peak = be.memory.peak - base;
    for (const t of [q, k, v]) t.dispose();
    return peak;
  }

  it('chunkwise grows linearly with T, parallel quadratically', () => {
    const ratio = (form: 'parallel' | 'chunkwise') => peakBytes(form, 2048) / peakBytes(form, 1024);
    const chunk = ratio('chunkwise');
    const par = ratio('parallel');
    assert.ok(chunk > 1.8 && chunk < 2.2, `chunkwise peak ratio for 2x length: ${chunk}`);
    assert.ok(par > 3.5, `parallel peak ratio for 2x length: ${par}`);
  });
});

describe('dropout randomness', () => {
  it('the model RNG state restores the same dropout masks (for exact resume)', () => {
    const c = config({ dropout: 0.3, dropPathRate: 0.2 });
    const model = new RetNetModel(c, { backend: nat(), seed: 4 }).setTraining(true);
    const tokens = [1, 2, 3, 4, 5, 6];
    const run = () => Float64Array.from(logits(model, tokens, { form: 'parallel' }));
    const saved = model.rngState();
    const a = run();
    const b = run();
    assert.ok(
      a.some((x, i) => x !== b[i]),
      'fresh masks differ',
    );
    model.setRngState(saved);
    assertClose(run(), a, 0, 'restored masks');
    model.dispose();
  });
});
