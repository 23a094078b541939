// The decoder trunk: what both architectures get from it (activation dropout, the DeepNet init gain, the rotary table
// cache, the arch table).
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
});
