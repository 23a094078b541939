// Transformer baseline: KV-cache decoding (batched prefill of unequal prompts, steps across cache growth, row
// selection) equals the full forward, flash equals naive at model level, gradients equal finite differences and
// training reduces the loss, config validation and JSON, parameter names, counts and the RetNet-matched presets.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import type { Device } from '../src/backend/device.js';
import type { AttentionAlgorithm } from '../src/backend/kernels.js';
import { backward, noGrad } from '../src/autograd/tape.js';
import { ConfigError, ShapeError } from '../src/errors.js';
import { crossEntropy } from '../src/ops/nn.js';
import { RETNET_PRESETS, retnetParameterCount, retnetPreset } from '../src/models/retnet/config.js';
import {
  TRANSFORMER_DEFAULTS,
  type TransformerConfig,
  transformerConfigFromJSON,
  transformerConfigToJSON,
  transformerParameterCount,
  transformerPreset,
  transformerPresetFor,
  validateTransformerConfig,
} from '../src/models/transformer/config.js';
import { TransformerDecodeState, TransformerModel } from '../src/models/transformer/model.js';
import { Rng } from '../src/tensor/random.js';
import { tidy } from '../src/tensor/scope.js';
import { assertClose, checkGradients, nat, ref } from './helpers.js';

function config(overrides: Partial<TransformerConfig> = {}): TransformerConfig {
  return validateTransformerConfig({
    ...TRANSFORMER_DEFAULTS,
    vocabSize: 37,
    embedDim: 24,
    layers: 2,
    heads: 3,
    ffnDim: 40,
    ...overrides,
  });
}

function randomTokens(rng: Rng, n: number, vocab: number): number[] {
  return Array.from({ length: n }, () => rng.int(vocab));
}

/** Full-forward logits of one sequence, [T·V]. */
function logits(model: TransformerModel, tokens: number[], attention?: AttentionAlgorithm): Float64Array {
  const ids = model.backend.fromData(tokens, [1, tokens.length], 'int32');
  const out = noGrad(() => tidy(() => model.forward(ids, { attention }).data()));
  ids.dispose();
  return Float64Array.from(out);
}

/**
 * Prefills `prompts` as one batch, then feeds `steps` more tokens per row (optionally dropping rows on the way), and
 * checks every row's logits after every token against the full forward of that row's sequence so far.
 */
function checkDecoding(
  model: TransformerModel,
  prompts: number[][],
  steps: number,
  tol: number,
  dropAfter?: { step: number; keep: number[] },
): void {
  const V = model.vocabSize;
  const rng = new Rng(11);
  let seqs = prompts.map((p) => [...p]);
  const { logits: first, state } = model.prefill(prompts);
  let out = first;
  for (let s = 0; ; s++) {
    const got = out.data();
    out.dispose();
    seqs.forEach((seq, b) => {
      const full = logits(model, seq);
      assertClose(
        got.subarray(b * V, (b + 1) * V),
        full.subarray(full.length - V),
        tol,
        `row ${b} at length ${seq.length}`,
      );
    });
    if (s === steps) break;
    if (dropAfter && s === dropAfter.step) {
      state.select(dropAfter.keep);
      seqs = dropAfter.keep.map((r) => seqs[r]!);
    }
    const next = seqs.map(() => rng.int(V));
    seqs.forEach((seq, b) => seq.push(next[b]!));
    out = model.step(next, state);
    assert.deepEqual(
      state.positions,
      seqs.map((q) => q.length),
    );
  }
  state.dispose();
}

describe('Transformer decoding with a KV cache', () => {
  it('batched prefill of unequal prompts + steps equals the full forward (reference float64)', () => {
    const model = new TransformerModel(config(), { backend: ref, dtype: 'float64', seed: 1 });
    const rng = new Rng(2);
    checkDecoding(model, [randomTokens(rng, 5, 37), randomTokens(rng, 1, 37), randomTokens(rng, 9, 37)], 4, 1e-12);
    model.dispose();
  });

  it('equals the full forward across cache growth and after dropping rows (native float32)', () => {
    const model = new TransformerModel(config({ embedDim: 32, heads: 2 }), { backend: nat(), seed: 3 });
    const rng = new Rng(4);
    // Prompts of 60 and 3 tokens in a 64-position cache: the steps cross the block boundary and grow it.
    const prompts = [randomTokens(rng, 60, 37), randomTokens(rng, 3, 37), randomTokens(rng, 20, 37)];
    checkDecoding(model, prompts, 8, 1e-5, { step: 2, keep: [2, 0] });
    model.dispose();
  });

  it('holds memory linear in the longest row and rejects bad calls', () => {
    const c = config();
    const model = new TransformerModel(c, { backend: nat(), seed: 5 });
    const { logits: l, state } = model.prefill([[1, 2, 3], [4]]);
    l.dispose();
    assert.ok(state instanceof TransformerDecodeState);
    // Keys and values for 2 layers, batch 2, capacity 64 positions of d floats.
    const perPosition = 2 * c.layers * 2 * c.embedDim * 4;
    assert.equal(state.bytes(), 64 * perPosition);
    for (let i = 0; i < 62; i++) model.step([1, 2], state).dispose();
    assert.equal(state.capacity, 128);
    assert.equal(state.bytes(), 128 * perPosition);
    // Keeping only row 1 (63 positions) halves the batch and shrinks the capacity back to one block.
    state.select([1]);
    assert.deepEqual(state.positions, [63]);
    assert.equal(state.bytes(), (64 * perPosition) / 2);
    assert.throws(() => model.step([1, 2], state), { name: 'ShapeError', message: /2 tokens for a state of 1 rows/ });
    assert.throws(() => state.select([1]), /row 1 is outside the batch of 1/);
    assert.throws(() => model.prefill([[1], []]), /prompt 1 is empty/);
    const other = { batch: 1, positions: [0], bytes: () => 0, select: () => {}, dispose: () => {} };
    assert.throws(() => model.step([1], other), ShapeError);
    state.dispose();
    model.dispose();
  });
});

describe('Transformer forward', () => {
  it('flash and naive attention give the same logits (native float32)', () => {
    for (const seed of [6, 7]) {
      const model = new TransformerModel(config({ embedDim: 64, heads: 4 }), { backend: nat(), seed });
      const tokens = randomTokens(new Rng(seed), 150, 37);
      assertClose(logits(model, tokens, 'flash'), logits(model, tokens, 'naive'), 1e-5, `seed ${seed}`);
      model.dispose();
    }
  });

  it('native equals the reference backend (float32)', () => {
    const c = config();
    const tokens = randomTokens(new Rng(8), 30, 37);
    const r = new TransformerModel(c, { backend: ref, seed: 9 });
    const n = new TransformerModel(c, { backend: nat(), seed: 9 });
    assertClose(logits(n, tokens), logits(r, tokens), 1e-5, 'logits');
    r.dispose();
    n.dispose();
  });

  it('gradients of the parameters match central finite differences (float64)', () => {
    for (const attention of ['naive', 'flash'] as const) {
      const c = config({ vocabSize: 7, embedDim: 8, heads: 2, ffnDim: 6, layers: 1, attention });
      const model = new TransformerModel(c, { backend: ref, dtype: 'float64', seed: 10 });
      const ids = ref.fromData([3, 1, 4, 1, 5, 6], [2, 3], 'int32');
      const params = new Map(model.namedParameters());
      const checked = ['layers.0.self_attn.q_proj.weight', 'layers.0.self_attn.k_proj.weight', 'embed_tokens.weight'];
      checkGradients(
        () => model.forward(ids),
        checked.map((n) => params.get(n)!),
        `${attention} model`,
      );
      ids.dispose();
      model.dispose();
    }
  });

  it('a few training steps on a repeated sequence reduce the loss', () => {
    const c = config({ vocabSize: 11 });
    for (const attention of ['naive', 'flash'] as const) {
      const be: Device = nat();
      const model = new TransformerModel({ ...c, attention }, { backend: be, seed: 12 });
      const seq = Array.from({ length: 33 }, (_, i) => [1, 5, 2, 9, 3][i % 5]!);
      const inputs = be.fromData(seq.slice(0, -1), [1, 32], 'int32');
      const targets = be.fromData(seq.slice(1), [1, 32], 'int32');
      const losses: number[] = [];
      for (let step = 0; step < 15; step++) {
        model.zeroGrad();
        losses.push(
          tidy(() => {
            const loss = crossEntropy(model.forward(inputs), targets);
            backward(loss);
            return loss.item();
          }),
        );
        for (const p of model.parameters()) {
          assert.ok(p.grad, 'every parameter receives a gradient');
          const g = p.grad.data();
          be.write(
            p,
            Array.from(p.data(), (x, i) => x - 0.05 * g[i]!),
          );
        }
      }
      assert.ok(losses[14]! < 0.5 * losses[0]!, `${attention}: loss ${losses[0]} -> ${losses[14]}`);
      for (const t of [inputs, targets]) t.dispose();
      model.dispose();
    }
  });

  it('training memory grows linearly with T under flash attention, faster under naive', () => {
    // Peak tensor bytes of one forward + backward of a 1-layer model, above the parameters.
    const peak = (attention: AttentionAlgorithm, T: number) => {
      const be = nat();
      const model = new TransformerModel(config({ layers: 1, embedDim: 32, heads: 4, attention }), { backend: be });
      const rng = new Rng(13);
      const ids = be.fromData(randomTokens(rng, T, 37), [1, T], 'int32');
      const targets = be.fromData(randomTokens(rng, T, 37), [1, T], 'int32');
      const base = be.memory.current;
      be.memory.resetPeak();
      tidy(() => backward(crossEntropy(model.forward(ids), targets)));
      const bytes = be.memory.peak - base;
      for (const t of [ids, targets]) t.dispose();
      model.dispose();
      return bytes;
    };
    const ratio = (attention: AttentionAlgorithm) => peak(attention, 2048) / peak(attention, 1024);
    const flash = ratio('flash');
    const naive = ratio('naive');
    assert.ok(flash > 1.9 && flash < 2.1, `flash peak ratio for 2x length: ${flash}`);
    assert.ok(naive > 3, `naive peak ratio for 2x length: ${naive}`);
  });

  it('rejects ids that are not int32 [B, T]', () => {
    const model = new TransformerModel(config(), { backend: nat() });
    const bad = nat().fromData([1, 2], [2], 'int32');
    assert.throws(() => model.forward(bad), /token ids must be int32 \[B, T\]/);
    bad.dispose();
    model.dispose();
  });
});

describe('Transformer config', () => {
  it('names parameters PyTorch-style and counts them exactly', () => {
    for (const tiedEmbeddings of [false, true]) {
      const c = config({ tiedEmbeddings });
      const model = new TransformerModel(c, { backend: ref });
      const names = model.namedParameters().map(([n]) => n);
      assert.deepEqual(names.slice(0, 10), [
        'embed_tokens.weight',
        'layers.0.self_attn.q_proj.weight',
        'layers.0.self_attn.k_proj.weight',
        'layers.0.self_attn.v_proj.weight',
        'layers.0.self_attn.out_proj.weight',
        'layers.0.self_attn_layer_norm.weight',
        'layers.0.ffn.fc1.weight',
        'layers.0.ffn.fc2.weight',
        'layers.0.ffn.gate.weight',
        'layers.0.final_layer_norm.weight',
      ]);
      assert.deepEqual(names.slice(-2), ['layer_norm.weight', 'output_projection.weight']);
      assert.equal(model.parameterCount(), transformerParameterCount(c));
      model.dispose();
    }
  });

  it('presets match the RetNet presets in size', () => {
    for (const name of Object.keys(RETNET_PRESETS)) {
      const t = transformerPreset(name, { vocabSize: 1000 });
      const r = retnetPreset(name, { vocabSize: 1000 });
      assert.equal(t.embedDim, r.embedDim);
      assert.equal(t.layers, r.layers);
      assert.equal(t.ffnDim % 8, 0);
      assert.ok(t.embedDim / t.heads <= 128, `${name}: head dim ${t.embedDim / t.heads}`);
      // Rounding f to a multiple of 8 moves each layer by at most 3·d·4 parameters.
      const diff = Math.abs(transformerParameterCount(t) - retnetParameterCount(r));
      assert.ok(diff <= 12 * t.embedDim * t.layers, `${name}: counts differ by ${diff}`);
    }
    assert.deepEqual(transformerPresetFor('tiny'), { embedDim: 128, layers: 2, heads: 2, ffnDim: 424 });
    assert.throws(() => transformerPresetFor('huge'), { name: 'ConfigError', message: /unknown preset 'huge'/ });
  });

  it('validation names the bad field', () => {
    const cases: [Partial<TransformerConfig>, RegExp][] = [
      [{ vocabSize: 0 }, /vocabSize must be a positive integer, got 0/],
      [{ embedDim: 2.5 }, /embedDim must be a positive integer/],
      [{ layers: -1 }, /layers must be a positive integer/],
      [{ heads: 5 }, /embedDim 24 must be divisible by heads 5/],
      [{ heads: 8 }, /head dim embedDim\/heads = 3 must be even/],
      [{ ffnDim: 0 }, /ffnDim must be a positive integer/],
      [{ activation: 'relu' as 'gelu' }, /activation must be gelu or swish, got "relu"/],
      [{ normEps: 0 }, /normEps must be a positive number/],
      [{ tiedEmbeddings: 1 as unknown as boolean }, /tiedEmbeddings must be true or false/],
      [{ attention: 'fast' as AttentionAlgorithm }, /attention must be 'naive' or 'flash', got "fast"/],
      [{ rotaryTheta: -1 }, /rotaryTheta must be a positive number/],
      [{ dropout: 1 }, /dropout must be a number in \[0, 1\)/],
    ];
    for (const [overrides, message] of cases)
      assert.throws(() => config(overrides), { name: 'ConfigError', message }, JSON.stringify(overrides));
  });

  it('round-trips through config.json and rejects bad files clearly', () => {
    const c = config({ activation: 'swish', tiedEmbeddings: true, attention: 'naive', rotaryTheta: 500, dropout: 0.1 });
    const j = transformerConfigToJSON(c);
    assert.equal(j.arch, 'transformer');
    assert.deepEqual(transformerConfigFromJSON(JSON.parse(JSON.stringify(j)), 'config.json'), c);
    const without = (key: string) => Object.fromEntries(Object.entries(j).filter(([k]) => k !== key));
    assert.throws(() => transformerConfigFromJSON(without('decoder_layers'), 'x/config.json'), {
      name: 'ConfigError',
      message: "x/config.json: missing required key 'decoder_layers'",
    });
    assert.deepEqual(transformerConfigFromJSON(without('rotary_theta'), 'c').rotaryTheta, 10000);
    assert.throws(() => transformerConfigFromJSON({ ...j, decoder_retention_heads: 2 }, 'c'), {
      message: "c: unknown Transformer config key 'decoder_retention_heads'",
    });
    assert.throws(() => transformerConfigFromJSON({ ...j, arch: 'retnet' }, 'c'), /arch is "retnet", expected/);
    assert.throws(() => transformerConfigFromJSON({ ...j, decoder_attention_heads: 5 }, 'c'), ConfigError);
    assert.throws(() => transformerConfigFromJSON([1], 'c'), /c: expected a JSON object/);
    assert.equal(transformerConfigFromJSON({ ...j, activation_fn: 'silu' }, 'c').activation, 'swish');
  });
});
