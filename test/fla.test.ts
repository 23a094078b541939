// fla's RetNet (../shared/fla-vectors, made by fla itself in float64): every protocol of the vectors' README —
// batched left-padded forward with an attention mask, token-by-token decode with the mask, single row with its final
// states, hidden states and loss, every kernel mode on the 100-token sequence, prefill + decode — for each copy of the
// checkpoint, to 1e-10 relative in float64 (reference backend) and 1e-4 in float32 (native backend). Relative error is
// the README's: max |got − expected| / max |expected| over the compared (unpadded) positions.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import type { Device } from '../src/backend/device.js';
import { noGrad } from '../src/autograd/tape.js';
import { ConfigError } from '../src/errors.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { crossEntropy } from '../src/ops/nn.js';
import { slice } from '../src/ops/shape.js';
import { loadModelDir, saveModelDir } from '../src/io/model-dir.js';
import { RETNET_DEFAULTS, retnetParameterCount, validateRetNetConfig } from '../src/models/retnet/config.js';
import {
  flaConfigFromJSON,
  flaConfigToJSON,
  flaIntermediateSize,
  flaParameterShapes,
  splitFusedGateProj,
} from '../src/models/retnet/fla.js';
import { RetNetModel } from '../src/models/retnet/model.js';
import type { DType } from '../src/tensor/dtype.js';
import { Rng } from '../src/tensor/random.js';
import { tidy } from '../src/tensor/scope.js';
import { deviceUnavailableReason } from '../src/backend/index.js';
import { ref, testDevice } from './helpers.js';

const DEV = join(import.meta.dirname, '..', '..', 'shared', 'fla-vectors', 'dev');

interface Tokens {
  input_ids: number[][];
  attention_mask: number[][];
  single_input_ids: number[][];
  long_input_ids: number[][];
  prefill_length: number;
}
const tokens = JSON.parse(readFileSync(join(DEV, 'tokens.json'), 'utf8')) as Tokens;
const expected = readSafetensors(join(DEV, 'expected.safetensors')).tensors;
const config = JSON.parse(readFileSync(join(DEV, 'config.json'), 'utf8')) as Record<string, unknown>;
const L = config.num_hidden_layers as number;
const VOCAB = config.vocab_size as number;

function want(name: string): Float64Array {
  const t = expected.get(name);
  assert.ok(t?.data instanceof Float64Array, `expected.safetensors has no F64 '${name}'`);
  return t.data;
}

/**
 * max |got − exp| / max |exp| over the items whose `keep` is true; items are runs of `width` values (one position's
 * logits or hidden vector), so a mask over positions selects them.
 */
function relErr(got: ArrayLike<number>, exp: ArrayLike<number>, width = 1, keep?: (item: number) => boolean): number {
  assert.equal(got.length, exp.length, `length ${got.length} vs ${exp.length}`);
  let maxExp = 0;
  let maxDiff = 0;
  for (let i = 0; i < exp.length; i++) {
    if (keep && !keep(Math.floor(i / width))) continue;
    maxExp = Math.max(maxExp, Math.abs(exp[i]!));
    maxDiff = Math.max(maxDiff, Math.abs(got[i]! - exp[i]!));
  }
  assert.ok(maxExp > 0, 'nothing compared');
  return maxDiff / maxExp;
}

const data = (t: { data(): ArrayLike<number> }) => Float64Array.from(t.data());

/** Logits of `ids` one token per call from an empty state ([T, V] per row, concatenated), with per-step masks. */
function decodeLogits(model: RetNetModel, ids: number[][], mask?: number[][]) {
  const [B, T, V] = [ids.length, ids[0]!.length, model.vocabSize];
  const state = model.emptyState(B);
  const out = new Float64Array(B * T * V);
  for (let t = 0; t < T; t++) {
    const logits = model.step(
      ids.map((row) => row[t]!),
      state,
      mask?.map((row) => row[t]!),
    );
    const d = logits.data();
    for (let b = 0; b < B; b++) out.set(d.subarray(b * V, (b + 1) * V), (b * T + t) * V);
    logits.dispose();
  }
  return { out, state };
}

function forwardLogits(model: RetNetModel, ids: number[][], opts: Parameters<RetNetModel['forward']>[1] = {}) {
  const t = model.backend.fromData(ids.flat(), [ids.length, ids[0]!.length], 'int32');
  const out = noGrad(() => tidy(() => data(model.forward(t, opts))));
  t.dispose();
  return out;
}

const COPIES = [
  { name: 'F64', dir: DEV },
  { name: 'BF16', dir: join(DEV, 'bf16') },
  { name: 'sharded BF16', dir: join(DEV, 'sharded') },
];

for (const [backendName, dtype, tol] of [
  ['reference', 'float64', 1e-10],
  ['native', 'float32', 1e-4],
  ['cuda', 'float32', 1e-4],
] as const) {
  const be = (): Device => testDevice(backendName);
  // cuda: skipped where no GPU is present (CI); scripts/cuda/device-run.sh runs it on one.
  const skip = backendName === 'cuda' && (deviceUnavailableReason('cuda') ?? false);
  for (const copy of COPIES)
    describe(`fla vectors, ${copy.name} checkpoint, ${backendName} backend, ${dtype} (tol ${tol})`, { skip }, () => {
      const load = () => loadModelDir(copy.dir, { backend: be(), dtype: dtype as DType }).model as RetNetModel;
      const check = (t: { diagnostic(s: string): void }, what: string, err: number) => {
        t.diagnostic(`${what}: ${err.toExponential(2)}`);
        assert.ok(err <= tol, `${what}: relative error ${err} > ${tol}`);
      };

      it('loads as the fla variant with fla names, and bit-identical weights in every copy', () => {
        const model = load();
        assert.equal(model.config.format, 'fla');
        assert.equal(model.parameterCount(), retnetParameterCount(model.config));
        const names = model.namedParameters().map(([n]) => n);
        assert.ok(names.includes('model.layers.1.attn.g_norm_swish_gate.weight'), names.join(', '));
        assert.ok(names.includes('lm_head.weight'));
        const f64 = readSafetensors(join(DEV, 'model.safetensors')).tensors;
        for (const [n, t] of model.namedParameters())
          assert.equal(relErr(t.data(), f64.get(n)!.data), 0, `${n} differs from the F64 copy`);
        model.dispose();
      });

      it('batched left-padded forward with the attention mask; the same batch right-padded', (t) => {
        const model = load();
        const { input_ids: ids, attention_mask: mask } = tokens;
        const T = ids[0]!.length;
        const real = (item: number) => mask[Math.floor(item / T)]![item % T] === 1;
        check(t, 'logits.forward', relErr(forwardLogits(model, ids, { mask }), want('logits.forward'), VOCAB, real));
        // Right padding: each row's real tokens first. Expected values move with them.
        const right = ids.map((row, b) => [
          ...row.filter((_, i) => mask[b]![i]),
          ...row.filter((_, i) => !mask[b]![i]),
        ]);
        const rightMask = mask.map((row) => [...row.filter((m) => m), ...row.filter((m) => !m)]);
        const moved = new Float64Array(want('logits.forward').length);
        mask.forEach((row, b) => {
          let j = 0;
          row.forEach((m, i) => {
            if (m)
              moved.set(
                want('logits.forward').subarray((b * T + i) * VOCAB, (b * T + i + 1) * VOCAB),
                (b * T + j++) * VOCAB,
              );
          });
        });
        const realRight = (item: number) => rightMask[Math.floor(item / T)]![item % T] === 1;
        check(
          t,
          'right-padded forward',
          relErr(forwardLogits(model, right, { mask: rightMask }), moved, VOCAB, realRight),
        );
        model.dispose();
      });

      it('token-by-token decode with the attention mask, and its final states', (t) => {
        const model = load();
        const { input_ids: ids, attention_mask: mask } = tokens;
        const T = ids[0]!.length;
        const { out, state } = decodeLogits(model, ids, mask);
        const real = (item: number) => mask[Math.floor(item / T)]![item % T] === 1;
        check(t, 'logits.decode', relErr(out, want('logits.decode'), VOCAB, real));
        for (let l = 0; l < L; l++)
          check(t, `state.decode.layer${l}`, relErr(data(state.states[l]!), want(`state.decode.layer${l}`)));
        assert.deepEqual(state.positions, [37, 29]);
        state.dispose();
        model.dispose();
      });

      it('single row: logits, final states (prefill), hidden states, loss', (t) => {
        const model = load();
        const single = tokens.single_input_ids;
        check(t, 'logits.single', relErr(forwardLogits(model, single), want('logits.single')));
        const { logits, state } = model.prefill(single);
        const T = single[0]!.length;
        check(t, 'prefill last logits', relErr(data(logits), want('logits.single').subarray((T - 1) * VOCAB)));
        for (let l = 0; l < L; l++)
          check(t, `state.single.layer${l}`, relErr(data(state.states[l]!), want(`state.single.layer${l}`)));
        logits.dispose();
        state.dispose();
        const ids = model.backend.fromData(single.flat(), [1, T], 'int32');
        const hidden = model.hiddenStates(ids);
        for (let l = 0; l < L; l++)
          check(t, `hidden.single.${l}`, relErr(data(hidden.layers[l]!), want(`hidden.single.${l}`)));
        check(
          t,
          'hidden.single.last_layer_output',
          relErr(data(hidden.layers[L]!), want('hidden.single.last_layer_output')),
        );
        check(t, 'hidden.single.final', relErr(data(hidden.final), want('hidden.single.final')));
        for (const h of [...hidden.layers, hidden.final]) h.dispose();
        const loss = noGrad(() =>
          tidy(() => {
            const logitsAll = model.forward(ids);
            const targets = model.backend.fromData(single[0]!.slice(1), [1, T - 1], 'int32');
            return crossEntropy(slice(logitsAll, 1, 0, T - 1), targets).data()[0]!;
          }),
        );
        check(t, 'loss.single', relErr([loss], want('loss.single')));
        ids.dispose();
        model.dispose();
      });

      it('the 100-token sequence in every form: chunkwise (fla chunk / fused_chunk), parallel, recurrent', (t) => {
        const model = load();
        const long = tokens.long_input_ids;
        check(t, 'logits.long.forward (config form)', relErr(forwardLogits(model, long), want('logits.long.forward')));
        const forms = [
          ['logits.long.chunk', { form: 'chunkwise', chunkSize: 64 }],
          ['logits.long.fused_chunk', { form: 'chunkwise', chunkSize: 64 }], // min(64, max(16, next_pow2(100)))
          ['logits.long.parallel', { form: 'parallel' }],
          ['logits.long.chunk', { form: 'chunkwise', chunkSize: 16 }],
          ['logits.long.chunk', { form: 'chunkwise', chunkSize: 7 }],
        ] as const;
        for (const [key, opts] of forms)
          check(t, `${key} (${JSON.stringify(opts)})`, relErr(forwardLogits(model, long, opts), want(key)));
        const { out, state } = decodeLogits(model, long);
        check(t, 'logits.long.fused_recurrent (token by token)', relErr(out, want('logits.long.fused_recurrent')));
        state.dispose();
        model.dispose();
      });

      it('prefill of 70 tokens, then 30 one-token steps, and the state after', (t) => {
        const model = load();
        const long = tokens.long_input_ids[0]!;
        const P = tokens.prefill_length;
        const exp = want('logits.long.prefill_decode');
        const { logits, state } = model.prefill([long.slice(0, P)]);
        check(t, 'prefill last logits', relErr(data(logits), exp.subarray((P - 1) * VOCAB, P * VOCAB)));
        logits.dispose();
        const steps = new Float64Array((long.length - P) * VOCAB);
        for (let i = P; i < long.length; i++) {
          const l = model.step([long[i]!], state);
          steps.set(l.data(), (i - P) * VOCAB);
          l.dispose();
        }
        check(t, 'logits.long.prefill_decode (steps)', relErr(steps, exp.subarray(P * VOCAB)));
        for (let l = 0; l < L; l++)
          check(t, `state.long.layer${l}`, relErr(data(state.states[l]!), want(`state.long.layer${l}`)));
        state.dispose();
        model.dispose();
      });
    });
}

describe('fla config and names', () => {
  it('reads fla-hub/retnet-1.3B-100B settings as the derived sizes of fla-spec §2', () => {
    const c = flaConfigFromJSON({ model_type: 'retnet', attn_mode: 'fused_chunk' }, 'config.json');
    assert.deepEqual(
      [c.vocabSize, c.embedDim, c.layers, c.heads, c.kvHeads, c.keyDim, c.valueDim, c.ffnDim],
      [32000, 2048, 24, 8, 8, 2048, 4096, 2816],
    );
    assert.equal(retnetParameterCount(c), 1_351_727_104);
    assert.equal(flaIntermediateSize(64, 2), 256);
    assert.equal(flaIntermediateSize(64, null), 256);
  });

  it('rejects what fla does not build, naming the key', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ hidden_act: 'gelu' }, /hidden_act/],
      [{ num_kv_heads: 3 }, /num_kv_heads 3/],
      [{ attn: { layers: [0] } }, /'attn'/],
      [{ feature_map: 'elu' }, /feature_map/],
      [{ hidden_size: 64, num_heads: 3 }, /divisible by num_heads 3/],
      [{ attn_mode: 'flash' }, /attn_mode/],
      [{ vocab_size: -1 }, /vocab_size/],
    ];
    for (const [j, re] of bad)
      assert.throws(
        () => flaConfigFromJSON({ model_type: 'retnet', ...j }, 'cfg.json'),
        (e: Error) => {
          assert.ok(e instanceof ConfigError && /cfg\.json/.test(e.message) && re.test(e.message), e.message);
          return true;
        },
      );
    const c = validateRetNetConfig({
      ...RETNET_DEFAULTS,
      ...{ vocabSize: 10, embedDim: 8, valueDim: 8, heads: 2, ffnDim: 8, retentionNorm: 'none' },
    });
    assert.throws(() => flaConfigToJSON(c), /fla's RetNet needs halves\/rope rotary/);
  });

  it('grouped kv heads, feature map, no gate, no group-norm weight, tied head: save and reload in fla names', () => {
    const c = flaConfigFromJSON(
      {
        model_type: 'retnet',
        vocab_size: 29,
        hidden_size: 32,
        num_hidden_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        expand_k: 0.5,
        expand_v: 1,
        intermediate_size: 40,
        feature_map: 'relu',
        use_output_gate: false,
        elementwise_affine: false,
        tie_word_embeddings: true,
      },
      'cfg.json',
    );
    const model = new RetNetModel(c, { backend: ref, dtype: 'float64', seed: 3 });
    const names = model.namedParameters().map(([n]) => n);
    const byName = (xs: [string, readonly number[]][]) => [...xs].map(([n, s]) => [n, [...s]]).sort();
    assert.deepEqual(byName(flaParameterShapes(c)), byName(model.namedParameters().map(([n, t]) => [n, t.shape])));
    assert.ok(!names.includes('lm_head.weight') && !names.some((n) => /g_proj|g_norm/.test(n)), names.join(', '));
    assert.deepEqual(
      model.namedParameters().find(([n]) => n === 'model.layers.0.attn.k_proj.weight')![1].shape,
      [8, 32],
    );
    assert.equal(model.parameterCount(), retnetParameterCount(c));
    const dir = mkdtempSync(join(tmpdir(), 'retnet-fla-'));
    try {
      saveModelDir(dir, model);
      const saved = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
      assert.equal(saved.model_type, 'retnet');
      assert.equal(saved.num_kv_heads, 2);
      assert.equal(saved.feature_map, 'relu');
      const back = loadModelDir(dir, { backend: ref, dtype: 'float64' }).model as RetNetModel;
      const ids = [[3, 1, 4, 1, 5, 9, 2, 6]];
      const a = forwardLogits(model, ids);
      assert.equal(relErr(forwardLogits(back, ids), a), 0);
      // Every form is one function, and decoding continues it.
      assert.ok(relErr(forwardLogits(model, ids, { form: 'chunkwise', chunkSize: 3 }), a) < 1e-13);
      assert.ok(relErr(decodeLogits(model, ids).out, a) < 1e-13);
      back.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    model.dispose();
  });

  it("splits the old fused mlp.gate_proj [2I, D] into fla's gate and up projections", () => {
    const rng = new Rng(5);
    const w = Float64Array.from({ length: 2 * 3 * 4 }, () => rng.normal());
    const split = splitFusedGateProj(
      new Map([['model.layers.0.mlp.gate_proj.weight', { shape: [6, 4], data: w }]]),
      3,
      'x',
    );
    assert.deepEqual(split.get('model.layers.0.mlp.gate_proj.weight')!.shape, [3, 4]);
    assert.deepEqual(Array.from(split.get('model.layers.0.mlp.gate_proj.weight')!.data), Array.from(w.subarray(0, 12)));
    assert.deepEqual(Array.from(split.get('model.layers.0.mlp.up_proj.weight')!.data), Array.from(w.subarray(12)));
  });
});

describe('padding masks (HF attention_mask): each row of a padded batch equals the row alone', () => {
  const variants = {
    torchscale: validateRetNetConfig({
      ...RETNET_DEFAULTS,
      ...{ vocabSize: 31, embedDim: 16, valueDim: 24, heads: 2, ffnDim: 20, layers: 2 },
    }),
    fla: flaConfigFromJSON(
      { model_type: 'retnet', vocab_size: 31, hidden_size: 16, num_hidden_layers: 2, num_heads: 2, num_kv_heads: 1 },
      'cfg.json',
    ),
  };
  for (const [name, c] of Object.entries(variants))
    it(`${name}: left, right and inner padding, every form; masked decode steps keep the state`, () => {
      const model = new RetNetModel(c, { backend: ref, dtype: 'float64', seed: 2 });
      const rows = [
        [5, 3, 8, 1, 9, 2, 7],
        [4, 4, 6, 2],
        [1, 30, 12, 7, 5],
      ];
      // torchscale's forms differ from each other (its normalisers), so each is compared with itself.
      const alone = (opts: Parameters<RetNetModel['forward']>[1]) => rows.map((r) => forwardLogits(model, [r], opts));
      const T = 9;
      // Row 0 left-padded, row 1 right-padded, row 2 with holes.
      const layouts = [
        [0, 0, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 0, 0, 0, 0],
        [0, 1, 1, 0, 1, 0, 0, 1, 1],
      ];
      const ids = layouts.map((m, b) => {
        let j = 0;
        return m.map((x) => (x ? rows[b]![j++]! : 0));
      });
      const V = c.vocabSize;
      for (const opts of [{ form: 'parallel' as const }, { form: 'chunkwise' as const, chunkSize: 2 }]) {
        const got = forwardLogits(model, ids, { ...opts, mask: layouts });
        const want = alone(opts);
        layouts.forEach((m, b) => {
          const picked: number[] = [];
          m.forEach((x, t) => {
            if (x) picked.push(...got.subarray((b * T + t) * V, (b * T + t + 1) * V));
          });
          const err = relErr(picked, want[b]!);
          assert.ok(err < 1e-12, `${name} ${JSON.stringify(opts)} row ${b}: ${err}`);
        });
      }
      // Token by token with the mask: the same logits at real positions; rows end with their own positions.
      const { out, state } = decodeLogits(model, ids, layouts);
      layouts.forEach((m, b) => {
        const picked: number[] = [];
        m.forEach((x, t) => {
          if (x) picked.push(...out.subarray((b * T + t) * V, (b * T + t + 1) * V));
        });
        assert.ok(relErr(picked, decodeLogits(model, [rows[b]!]).out) < 1e-12, `${name} decode row ${b}`);
      });
      assert.deepEqual(state.positions, [7, 4, 5]);
      state.dispose();
      assert.throws(() => forwardLogits(model, ids, { mask: [[1, 1]] }), /mask has 1 rows for a batch of 3/);
      assert.throws(
        () => forwardLogits(model, ids, { mask: layouts.map((m) => m.map((x) => x * 2)) }),
        /mask\[0\]\[2\] is 2, expected 0 or 1/,
      );
      model.dispose();
    });
});
