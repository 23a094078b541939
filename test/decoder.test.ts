// The decoder trunk: what both architectures get from it (activation dropout, the DeepNet init gain, the rotary table
// cache, padding masks and masked steps, hidden states, the arch table).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { noGrad } from '../src/autograd/tape.js';
import { ARCHS, ARCH_TABLE, createModel, modelConfigJSON, modelFromConfig } from '../src/models/registry.js';
import { RETNET_DEFAULTS, type RetNetConfig, validateRetNetConfig } from '../src/models/retnet/config.js';
import { RetNetModel } from '../src/models/retnet/model.js';
import { TransformerModel } from '../src/models/transformer/model.js';
import { tidy } from '../src/tensor/scope.js';
import { ref } from './helpers.js';

function config(overrides: Partial<RetNetConfig> = {}): RetNetConfig {
  return validateRetNetConfig({
    ...RETNET_DEFAULTS,
    vocabSize: 29,
    embedDim: 16,
    valueDim: 24,
    heads: 2,
    ffnDim: 20,
    layers: 2,
    ...overrides,
  });
}

const run = (m: RetNetModel, ids: number[]) =>
  noGrad(() => tidy(() => Array.from(m.forward(m.backend.fromData(ids, [1, ids.length], 'int32')).data())));

describe('decoder trunk', () => {
  it('applies activationDropout in training only', () => {
    const ids = [1, 2, 3, 4, 5, 6];
    const plain = new RetNetModel(config(), { backend: ref, dtype: 'float64', seed: 3 });
    const dropped = new RetNetModel(config({ activationDropout: 0.5 }), { backend: ref, dtype: 'float64', seed: 3 });
    assert.deepEqual(run(dropped, ids), run(plain, ids), 'no dropout in eval mode');
    dropped.setTraining(true);
    plain.setTraining(true);
    const a = run(dropped, ids);
    assert.notDeepEqual(a, run(plain, ids), 'dropout changes the training forward');
    assert.ok(a.every(Number.isFinite));
    plain.dispose();
    dropped.dispose();
  });

  it('applies the DeepNet gain to fc1 and fc2 at initialisation, not to the gate', () => {
    const c = config({ layers: 3 });
    const plain = new RetNetModel(c, { backend: ref, dtype: 'float64', seed: 4 });
    const deep = new RetNetModel({ ...c, deepnorm: true }, { backend: ref, dtype: 'float64', seed: 4 });
    const beta = (8 * 3) ** -0.25;
    const params = new Map(plain.namedParameters());
    for (const [name, t] of deep.namedParameters()) {
      const ratio = /ffn\.fc[12]|v_proj|out_proj/.test(name) ? beta : 1;
      const base = params.get(name)!.data();
      t.data().forEach((x, i) => assert.ok(Math.abs(x - ratio * base[i]!) <= 1e-15, `${name}[${i}]`));
    }
    plain.dispose();
    deep.dispose();
  });

  it('caches the rotary tables of a length and frees them on dispose', () => {
    const before = ref.memory.current;
    const m = createModel(
      'transformer',
      'tiny',
      { vocabSize: 29, embedDim: 16, ffnDim: 32, heads: 2, layers: 1 },
      {
        backend: ref,
        dtype: 'float64',
      },
    );
    const forward = (ids: number[]) =>
      noGrad(() => tidy(() => Array.from(m.forward(ref.fromData(ids, [1, ids.length], 'int32')).data())));
    const params = ref.memory.current;
    const first = forward([1, 2, 3, 4]);
    const cached = ref.memory.current;
    assert.ok(cached > params, 'the tables of T = 4 stay');
    assert.deepEqual(forward([1, 2, 3, 4]), first);
    assert.equal(ref.memory.current, cached, 'the same length reuses them');
    m.dispose();
    assert.equal(ref.memory.current, before, 'dispose frees parameters and tables');
  });

  it('builds, names and round-trips every arch through the arch table', () => {
    for (const arch of ARCHS) {
      const m = createModel(arch, 'tiny', { vocabSize: 40, layers: 1 }, { backend: ref });
      assert.equal(m.arch, arch);
      assert.ok(ARCH_TABLE[arch].presets.includes('tiny'));
      const back = modelFromConfig(modelConfigJSON(m), 'config.json', { backend: ref });
      assert.deepEqual(modelConfigJSON(back), modelConfigJSON(m));
      assert.ok(arch === 'retnet' ? back instanceof RetNetModel : back instanceof TransformerModel);
      m.dispose();
      back.dispose();
    }
    assert.throws(() => modelFromConfig({ arch: 'mamba' }, 'c.json'), /c.json: unknown arch "mamba"/);
  });

  it('gives every arch padding masks, masked steps and hidden states', () => {
    const rows = [
      [5, 3, 8, 1, 9],
      [4, 6],
    ];
    const layouts = [
      [0, 1, 1, 1, 1, 1],
      [1, 0, 1, 0, 0, 0],
    ];
    const ids = layouts.map((m, b) => {
      let j = 0;
      return m.map((x) => (x ? rows[b]![j++]! : 0));
    });
    const V = 40;
    for (const arch of ARCHS) {
      const m = createModel(
        arch,
        'tiny',
        { vocabSize: V, layers: 2, embedDim: 16, heads: 2 },
        {
          backend: ref,
          dtype: 'float64',
          seed: 4,
        },
      ) as RetNetModel | TransformerModel;
      const tensor = (x: number[][]) => m.backend.fromData(x.flat(), [x.length, x[0]!.length], 'int32');
      const forward = (x: number[][], mask?: number[][]) =>
        noGrad(() => tidy(() => Float64Array.from(m.forward(tensor(x), { mask }).data())));
      const got = forward(ids, layouts);
      const alone = rows.map((r) => forward([r]));
      // The masked step: the same logits at real positions; padded steps leave state and position alone.
      const state = m.emptyState(2);
      const stepped: Float64Array[] = [new Float64Array(0), new Float64Array(0)];
      for (let t = 0; t < 6; t++) {
        const mask = layouts.map((l) => l[t]!);
        const d = noGrad(() =>
          tidy(() =>
            Float64Array.from(
              m
                .step(
                  ids.map((r) => r[t]!),
                  state,
                  mask,
                )
                .data(),
            ),
          ),
        );
        mask.forEach((x, b) => {
          if (x) stepped[b] = Float64Array.from([...stepped[b]!, ...d.subarray(b * V, (b + 1) * V)]);
        });
      }
      assert.deepEqual(state.positions, [5, 2]);
      state.dispose();
      layouts.forEach((l, b) => {
        const picked = l.flatMap((x, t) => (x ? [...got.subarray((b * 6 + t) * V, (b * 6 + t + 1) * V)] : []));
        const want = alone[b]!;
        const err = (a: ArrayLike<number>) => Math.max(...Array.from(want, (w, i) => Math.abs(a[i]! - w)));
        assert.ok(err(picked) < 1e-12, `${arch} masked forward, row ${b}: ${err(picked)}`);
        // A step normalises as the recurrent form does: compare with torchscale's forms loosely (eps 1e-6).
        assert.ok(err(stepped[b]!) < 1e-4, `${arch} masked steps, row ${b}: ${err(stepped[b]!)}`);
      });
      const hidden = m.hiddenStates(tensor(ids), { mask: layouts });
      assert.equal(hidden.layers.length, 3, 'the embeddings, the input of layer 1, the output of layer 2');
      for (const h of [...hidden.layers, hidden.final]) {
        assert.deepEqual(h.shape, [2, 6, 16]);
        h.dispose();
      }
      assert.throws(() => forward(ids, [[1]]), /mask has 1 rows for a batch of 2/);
      m.dispose();
    }
  });
});
