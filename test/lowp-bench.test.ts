// bench lowp's accounting (bench/lowp.ts): the bytes a decode step moves, the merging of separately run parts, and the
// decode products' shared scratch buffer (src/backend/cpu/lowp.ts) against the reference.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { mergeParts, stepBytes } from '../bench/lowp.js';
import type { BenchRecord } from '../bench/lib.js';
import { noGrad } from '../src/autograd/tape.js';
import type { CpuDevice } from '../src/backend/cpu/device.js';
import { lowpProduct } from '../src/backend/cpu/lowp.js';
import { createModel } from '../src/models/registry.js';
import type { RetNetModel } from '../src/models/retnet/model.js';
import { WEIGHT_DTYPES } from '../src/quant/formats.js';
import { quantizeModel } from '../src/quant/model.js';
import { Rng } from '../src/tensor/random.js';
import { assertClose, nat, randomData, ref } from './helpers.js';

describe('bench lowp: the bytes of a decode step', () => {
  const be = nat();
  for (const tied of [false, true])
    for (const format of ['f32', 'q4'] as const)
      it(`${tied ? 'tied' : 'untied'} head, ${format}: weights less the table, plus B rows and the state twice`, () => {
        const V = 300;
        const model = createModel(
          'retnet',
          'tiny',
          { vocabSize: V, tiedEmbeddings: tied },
          { seed: 1, backend: be },
        ) as RetNetModel;
        quantizeModel(model, format);
        const D = model.config.embedDim;
        // every parameter tensor once, in its stored bytes
        const seen = new Set<unknown>();
        let all = 0;
        for (const [, t] of model.namedParameters())
          if (!seen.has(t)) {
            seen.add(t);
            all += t.storage.byteLength;
          }
        const B = 3;
        const state = model.emptyState(B);
        const stateBytes = state.bytes();
        state.dispose();
        assert.ok(stateBytes > 0);
        const got = stepBytes(model, B, stateBytes);
        // A tied f32 head reads the table whole (it is the head's weight); otherwise the table is a lookup of B rows.
        const readsTable = tied && format === 'f32';
        const weights = readsTable ? all : all - V * D * 4 + B * D * 4;
        assert.equal(got.weights, weights);
        assert.equal(got.embeddingRows, readsTable ? 0 : B * D * 4);
        assert.equal(got.state, 2 * stateBytes);
        assert.equal(got.total, weights + 2 * stateBytes);
        model.dispose();
      });
});

describe('bench lowp: merging parts', () => {
  const decode = (model: string, format: string, batch: number, ms: number): BenchRecord => ({
    model,
    format,
    batch,
    threads: 2,
    ms_per_token: ms,
    peer_tokens_per_s_float32: null,
    peer_tokens_per_s_bfloat16: null,
  });
  const peer = (model: string, dtype: string, batch: number, tps: number): BenchRecord => ({
    model,
    what: 'peer',
    dtype,
    batch,
    tokens_per_s: tps,
  });
  it("replaces a part's records of the same model (and format), keeps the rest, and fills in the peer", () => {
    const saved = [
      decode('1.3B', 'q4', 1, 90),
      decode('1.3B', 'int8', 1, 120),
      decode('base', 'q4', 1, 9),
      peer('1.3B', 'float32', 1, 3),
      { model: 'tiny (Brown)', format: 'q4', what: 'quality', val_ppl: 5 },
    ];
    const fresh = [decode('1.3B', 'q4', 8, 200), decode('1.3B', 'q4', 1, 70), peer('1.3B', 'bfloat16', 1, 0.5)];
    const out = mergeParts(saved, fresh);
    // 1.3B q4 replaced (both batches new), int8 and base kept; the peer of 1.3B replaced whole; quality kept
    assert.deepEqual(
      out.map((r) => [r.what ?? 'decode', r.model, r.format ?? r.dtype, r.batch ?? null, r.ms_per_token ?? null]),
      [
        ['decode', 'base', 'q4', 1, 9],
        ['decode', '1.3B', 'int8', 1, 120],
        ['decode', '1.3B', 'q4', 1, 70],
        ['decode', '1.3B', 'q4', 8, 200],
        ['peer', '1.3B', 'bfloat16', 1, null],
        ['quality', 'tiny (Brown)', 'q4', null, null],
      ],
    );
    const q4 = out.find((r) => r.model === '1.3B' && r.format === 'q4' && r.batch === 1)!;
    assert.equal(q4.peer_tokens_per_s_bfloat16, 0.5);
    assert.equal(q4.peer_tokens_per_s_float32, null); // the float32 peer record was replaced by this run's peer
    assert.equal(out.find((r) => r.model === 'base')!.peer_tokens_per_s_bfloat16, null);
    assert.equal(out.find((r) => r.batch === 8)!.peer_tokens_per_s_bfloat16, null); // no peer at batch 8
    // the inputs are not changed
    assert.equal(saved[0]!.ms_per_token, 90);
    assert.equal(fresh[1]!.peer_tokens_per_s_bfloat16, null);
  });
});

describe('decode products share one scratch buffer', () => {
  it('a small odd product after a large one, and the large one again, match the reference', () => {
    const be = nat() as CpuDevice;
    const rng = new Rng(5);
    // large K first (the buffer grows), then a small odd K (stale bytes beyond its end), per format with scratch
    for (const format of ['bf16', 'int8', 'q4'] as const)
      for (const [N, K, R] of [
        [40, 1000, 9],
        [13, 37, 3],
        [40, 1000, 9],
      ] as const) {
        const w = randomData(rng, N * K);
        const x = randomData(rng, R * K);
        const got = noGrad(() => {
          const wt = be.fromData(w, [N, K], WEIGHT_DTYPES[format]);
          const xt = be.fromData(x, [R, K], 'float32');
          const y = lowpProduct(be, be.addon, xt, wt);
          const v = y.data() as Float32Array;
          for (const t of [wt, xt, y]) t.dispose();
          return v;
        });
        const wr = ref.fromData(w, [N, K], WEIGHT_DTYPES[format]);
        const want = Float32Array.from(wr.data() as Float32Array);
        wr.dispose();
        // the reference product of the stored (quantised) weights, in float64
        const exp = new Float32Array(R * N);
        for (let b = 0; b < R; b++)
          for (let n = 0; n < N; n++) {
            let s = 0;
            for (let k = 0; k < K; k++) s += x[b * K + k]! * want[n * K + k]!;
            exp[b * N + n] = s;
          }
        assertClose(got, exp, 1e-2, `${format} [${N}, ${K}] x ${R}`);
      }
  });
});
