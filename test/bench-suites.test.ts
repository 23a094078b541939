// The benchmark suites' own logic, on the smallest configurations so that they cannot rot: FLOP counting against the
// exact parameter counts, the memory prediction that skips lengths, synthetic decode contexts, one decode point and
// a tiny training sweep end to end (record shapes), chart specs rendered by Vega, BENCHMARKS.md section replacement,
// the PyTorch peer's arguments and its missing-torch error, and the `retnet bench` command.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { DECODE_VOCAB, FORM, decodeModels, disposeModels, flatness, measureDecodePoints } from '../bench/decode.js';
import { BenchFailure, checkRecords, commandLine, failOnFailedRecords } from '../bench/lib.js';
import { checkTorch, peerArgs } from '../bench/peer.js';
import { budgetSettings, largestBatch, measureBudget, stepWork } from '../bench/budget.js';
import { MEM_VARIANTS, measureTrainMem } from '../bench/trainmem.js';
import { markdownTable, panelsSpec, replaceSection } from '../bench/report.js';
import {
  VARIANTS,
  matmulParameters,
  measureTrain,
  mixerFlopsPerToken,
  predictPeak,
  trainFlopsPerToken,
} from '../bench/train.js';
import { getBackend } from '../src/backend/index.js';
import { renderSpec } from '../src/cli/plot.js';
import { createModel } from '../src/models/registry.js';
import { retnetParameterCount, retnetPreset } from '../src/models/retnet/config.js';
import { RetNetModel } from '../src/models/retnet/model.js';
import { TransformerModel } from '../src/models/transformer/model.js';
import { matchRetNetShape, transformerParameterCount, transformerPreset } from '../src/models/transformer/config.js';
import { Rng, tiledNormal } from '../src/tensor/random.js';

const ROOT = join(import.meta.dirname, '..');

describe('bench train: FLOP counting and memory prediction', () => {
  const r = retnetPreset('small', { vocabSize: 300 });
  const t = transformerPreset('small', { vocabSize: 300 });

  it('matmul parameters are the parameter count less the embedding table and the norm gains', () => {
    const d = r.embedDim;
    assert.equal(matmulParameters('retnet', r), retnetParameterCount(r) - 300 * d - r.layers * 2 * d - d);
    assert.equal(matmulParameters('transformer', t), transformerParameterCount(t) - 300 * d - t.layers * 2 * d - d);
  });

  it('mixer FLOPs: parallel T(d+dv), chunkwise C(d+dv) + 4·d·dv/H, attention 2Td; training 6N + 3L·mixer', () => {
    // small: d 256, dv 512, 4 heads, 4 layers.
    assert.equal(mixerFlopsPerToken('retnet-parallel', r, 1000), 1000 * 768);
    assert.equal(mixerFlopsPerToken('retnet-chunkwise', r, 1000, 64), 64 * 768 + (4 * 256 * 512) / 4);
    // A chunk longer than the sequence is the sequence.
    assert.equal(mixerFlopsPerToken('retnet-chunkwise', r, 32, 64), 32 * 768 + (4 * 256 * 512) / 4);
    assert.equal(mixerFlopsPerToken('transformer-naive', t, 1000), 1000 * 512);
    assert.equal(mixerFlopsPerToken('transformer-flash', t, 1000), 1000 * 512);
    assert.equal(
      trainFlopsPerToken('retnet-chunkwise', r, 2048, 64),
      6 * matmulParameters('retnet', r) + 3 * 4 * (64 * 768 + 131072),
    );
  });

  it('predictPeak recovers a·T + b·T² from two lengths and needs two', () => {
    const peak = (T: number) => 1000 * T + 3 * T * T;
    assert.equal(predictPeak([{ length: 512, peak: peak(512) }], 1024), null);
    const p = predictPeak(
      [
        { length: 256, peak: 1 },
        { length: 512, peak: peak(512) },
        { length: 1024, peak: peak(1024) },
      ],
      4096,
    );
    assert.ok(Math.abs(p! / peak(4096) - 1) < 1e-12);
    // Growth slower than a·T + b·T² with b ≥ 0 allows extrapolates along the line through the two points.
    const line = [
      { length: 100, peak: 100 },
      { length: 200, peak: 150 },
    ];
    assert.equal(predictPeak(line, 400), 250);
  });

  it('a tiny sweep measures all four variants, records their figures, and skips on predicted memory', async () => {
    const records = await measureTrain({
      preset: 'tiny',
      layers: 1,
      vocab: 64,
      chunkSize: 8,
      lengths: [16, 32, 64],
      batch: 1,
      gemmN: 32,
      samples: 1,
      memoryLimit: 1, // one byte: every variant is predicted past it at the third length
    });
    checkRecords('train', records);
    assert.equal(records.length, 12);
    for (const rec of records.slice(0, 8)) {
      assert.equal(rec.status, 'ok', JSON.stringify(rec));
      for (const k of ['tokens_per_s', 'peak_bytes', 'mfu', 'gemm_ceiling_gflops', 'train_flops_per_token'])
        assert.ok((rec[k] as number) > 0, `${rec.variant} ${k}`);
    }
    assert.deepEqual(
      records.slice(8).map((x) => [x.variant, x.length, x.status]),
      VARIANTS.map((v) => [v, 64, 'skipped']),
    );
    assert.match(records[8]!.reason as string, /predicted step memory/);
    // The parallel form at 32 holds more than at 16 (the peaks are real measurements).
    const par = records.filter((x) => x.variant === 'retnet-parallel' && x.status === 'ok');
    assert.ok((par[1]!.peak_bytes as number) > (par[0]!.peak_bytes as number));
  });
});

describe('bench trainmem and budget', () => {
  it('trainmem attributes the live memory after the forward pass to ops and reports the step peak', async () => {
    const records = await measureTrainMem({ preset: 'tiny', layers: 1, vocab: 64, chunkSize: 8, length: 24, steps: 1 });
    checkRecords('trainmem', records);
    for (const variant of MEM_VARIANTS) {
      const ops = records.filter((r) => r.variant === variant && r.kind === 'op');
      const step = records.find((r) => r.variant === variant && r.kind === 'step')!;
      // The groups (op outputs and the statistics beside them) add up to what is live after the forward pass.
      const sum = ops.reduce((n, r) => n + (r.bytes as number), 0);
      assert.equal(sum, step.bytes, variant);
      assert.ok(
        ops.some((r) => (r.group as string).startsWith('linear → 64')),
        `${variant}: the logits are live`,
      );
      assert.ok((step.peak_bytes as number) > (step.weight_bytes as number) + (step.bytes as number) / 2);
      assert.ok((step.tokens_per_s as number) > 0);
    }
  });

  it('largestBatch fits weights + state + workspace linear in the batch under the budget', () => {
    const one = { state: 100, workspace: 10 };
    const two = { state: 200, workspace: 12 };
    // B rows: 1000 + 100·B + 10 + 2·(B − 1) ≤ 2000 → B ≤ 9.
    assert.deepEqual(largestBatch(1000, one, two, 2000, 64), { batch: 9, predicted: 1000 + 900 + 10 + 16 });
    assert.equal(largestBatch(1000, one, two, 2000, 4).batch, 4);
    assert.equal(largestBatch(1000, one, two, 1000, 64).batch, 0);
  });

  it('a tiny budget run picks each largest batch within the budget and sweeps the batch', async () => {
    const records = await measureBudget({
      ...budgetSettings(true, 1 / 1024, 'f32'),
      shape: { embedDim: 32, layers: 2, heads: 2, valueDim: 64, ffnDim: 64 },
      vocab: 64,
      lengths: [32, 128],
      batches: [1, 2],
      batchLength: 128,
      maxBatch: 16,
      samples: 1,
    });
    checkRecords('budget', records);
    for (const r of records) {
      // The bound is the larger of the compute and memory times, from the ceilings measured with the point.
      const [c, m] = [r.compute_bound_ms as number, r.memory_bound_ms as number];
      assert.ok(c > 0 && m > 0 && (r.sgemm_gflops as number) > 0 && (r.read_gbps as number) > 0, JSON.stringify(r));
      assert.equal(r.bound_ms_per_token, Math.max(c, m));
      assert.ok(Math.abs(c - ((r.step_gflop as number) / (r.sgemm_gflops as number)) * 1e3) < 1e-9 * c);
      assert.ok(Math.abs(m - (r.step_bytes as number) / (r.read_gbps as number) / 1e6) < 1e-9 * m);
    }
    const largest = records.filter((r) => r.sweep === 'largest batch');
    assert.equal(largest.length, 4);
    for (const r of largest) {
      assert.equal(r.status, 'ok', JSON.stringify(r));
      assert.ok((r.decode_memory_bytes as number) <= 2 ** 20);
    }
    // A KV cache grows with the context, so the Transformer fits fewer rows at 128 than at 32; RetNet's state does not.
    const batchOf = (arch: string, length: number) =>
      largest.find((r) => r.arch === arch && r.length === length)!.batch;
    assert.ok((batchOf('transformer', 128) as number) < (batchOf('transformer', 32) as number));
    assert.equal(batchOf('retnet', 128), batchOf('retnet', 32));
    // RetNet's lengths share one state and take turns; each Transformer cache fills the budget alone; both batch
    // sweeps fit side by side.
    const turns = (arch: string, sweep: string) =>
      records.filter((r) => r.arch === arch && r.sweep === sweep).map((r) => r.timed_in_turns);
    const b = batchOf('retnet', 32);
    assert.deepEqual(turns('retnet', 'largest batch'), [`${b}@32 ${b}@128`, `${b}@32 ${b}@128`]);
    assert.deepEqual(turns('transformer', 'largest batch'), [
      `${batchOf('transformer', 32)}@32`,
      `${batchOf('transformer', 128)}@128`,
    ]);
    assert.deepEqual(turns('retnet', 'batch'), ['1@128 2@128', '1@128 2@128']);
    assert.deepEqual(turns('transformer', 'batch'), ['1@128 2@128', '1@128 2@128']);
    assert.deepEqual(
      records.filter((r) => r.sweep === 'batch').map((r) => [r.arch, r.batch]),
      [
        ['retnet', 1],
        ['retnet', 2],
        ['transformer', 1],
        ['transformer', 2],
      ],
    );
  });
});

describe('bench budget: the work of a decode step', () => {
  it("counts 2·B FLOPs per product weight plus the mixer's, and the bytes each architecture must move", () => {
    const shape = { embedDim: 16, layers: 2, heads: 2, valueDim: 32, ffnDim: 24 };
    const r = createModel('retnet', 'base', { vocabSize: 40, ...shape }, { seed: 1 }) as RetNetModel;
    const t = createModel('transformer', 'base', { vocabSize: 40, ...matchRetNetShape(shape) }) as TransformerModel;
    try {
      // Independent of stepWork's walk over the Linear modules: the products' weights from the config.
      const rp = matmulParameters('retnet', r.config);
      const tp = matmulParameters('transformer', t.config);
      const state = 7 * 1024;
      const rw = stepWork(r, 3, 100, state);
      assert.equal(rw.flops, 3 * (2 * rp + 2 * ((4 * 16 * 32) / 2)));
      assert.equal(rw.bytes, 4 * rp + 2 * state);
      const tw = stepWork(t, 3, 100, state);
      assert.equal(tw.flops, 3 * (2 * tp + 2 * 4 * 100 * 16));
      assert.equal(tw.bytes, 4 * tp + state);
    } finally {
      r.dispose();
      t.dispose();
    }
  });
});

describe('bench decode: synthetic contexts and one measured point', () => {
  it('tiledNormal fills n values from a repeated block', () => {
    const a = tiledNormal(new Rng(1), 200000, 2);
    assert.equal(a.length, 200000);
    assert.equal(a[65536], a[0]);
    assert.equal(a[199999], a[199999 - 3 * 65536]);
    assert.notEqual(a[1], a[0]);
  });

  it('synthetic states have the shapes, positions and scales of a real context', () => {
    const m = decodeModels('tiny', 50);
    try {
      const s = m.retnet.syntheticState(3, 100, new Rng(2));
      const empty = m.retnet.emptyState(3);
      assert.equal(s.bytes(), empty.bytes());
      assert.deepEqual(s.positions, [100, 100, 100]);
      const g = m.retnet.layers[0]!.mixer.gammas;
      const scale = s.scales[0]!.data();
      g.forEach((gamma, h) => assert.ok(Math.abs(scale[h]! - (1 - gamma ** 100) / (1 - gamma)) < 1e-3));
      m.retnet.step([1, 2, 3], s).dispose();
      assert.deepEqual(s.positions, [101, 101, 101]);
      s.dispose();
      empty.dispose();

      const kv = m.transformer.syntheticState(2, 128, new Rng(3));
      const { heads: H, embedDim: d, layers: L } = m.transformer.config;
      assert.equal(kv.capacity, 192); // room for position 128, in blocks of 64
      assert.equal(kv.bytes(), 2 * L * 2 * H * 192 * (d / H) * 4);
      m.transformer.step([4, 5], kv).dispose();
      assert.equal(kv.capacity, 192, 'the step found room without growing the cache');
      kv.dispose();
    } finally {
      disposeModels(m);
    }
  });

  it('measureDecodePoints gives one record per architecture and point with figures, units and ratios', async () => {
    const live = getBackend().memory.current;
    const m = decodeModels('tiny', DECODE_VOCAB);
    try {
      const timing = { warmup: 1, minTimeMs: 0, minSamples: 2, sampleTargetMs: 0 };
      const records = await measureDecodePoints(m, 'tiny', [{ length: 96, batch: 2 }], timing);
      checkRecords('decode', records);
      const [r, t] = records as [Record<string, unknown>, Record<string, unknown>];
      assert.deepEqual([r.arch, r.form, t.arch, t.form], ['retnet', FORM.retnet, 'transformer', FORM.transformer]);
      for (const rec of records) {
        assert.equal(rec.status, 'ok');
        assert.equal(rec.length, 96);
        assert.equal(rec.batch, 2);
        assert.ok((rec.ms_per_token as number) > 0 && (rec.tokens_per_s as number) > 0);
        assert.equal(
          rec.decode_memory_bytes,
          (rec.state_bytes as number) + (rec.step_workspace_bytes as number) + (rec.weight_bytes as number),
        );
      }
      assert.equal(t.memory_vs_retnet, (t.decode_memory_bytes as number) / (r.decode_memory_bytes as number));
    } finally {
      disposeModels(m);
    }
    assert.equal(getBackend().memory.current, live, 'the states and models were freed');
  });

  it('flatness is the largest deviation of RetNet latency from its mean', () => {
    const rec = (ms: number) => ({
      arch: 'retnet',
      batch: 1,
      status: 'ok',
      ms_per_token: ms,
      ms_per_token_min: ms / 2,
    });
    assert.ok(Math.abs(flatness([rec(9), rec(10), rec(11)], 1)! - 0.1) < 1e-12);
    assert.ok(Math.abs(flatness([rec(8), rec(12)], 1, 'ms_per_token_min')! - 0.2) < 1e-12);
    assert.equal(flatness([rec(9)], 1), null);
  });
});

describe('bench reports', () => {
  it('replaceSection appends, replaces between markers, keeps the rest, and refuses broken markers', () => {
    const a = replaceSection('# Benchmarks\n\nintro\n', 'decode', 'first');
    assert.equal(a, '# Benchmarks\n\nintro\n\n<!-- bench:decode:start -->\nfirst\n<!-- bench:decode:end -->\n');
    const b = replaceSection(replaceSection(a, 'train', 'T'), 'decode', 'second\n');
    assert.match(
      b,
      /intro\n\n<!-- bench:decode:start -->\nsecond\n<!-- bench:decode:end -->\n\n<!-- bench:train:start -->\nT\n/,
    );
    assert.doesNotMatch(b, /first/);
    assert.throws(
      () => replaceSection('<!-- bench:decode:end --> <!-- bench:decode:start -->', 'decode', 'x'),
      /markers/,
    );
    assert.throws(() => replaceSection('<!-- bench:decode:start -->', 'decode', 'x'), /markers/);
  });

  it('markdownTable aligns numbers right and escapes pipes', () => {
    const md = markdownTable(
      [
        { a: 'x|y', n: 1.234 },
        { a: 'z', n: null },
      ],
      [{ key: 'a' }, { key: 'n', header: 'N', digits: 1 }],
    );
    assert.equal(md, '| a | N |\n| --- | --: |\n| x\\|y | 1.2 |\n| z | - |');
  });

  it('panelsSpec renders lines and bars through Vega', async () => {
    const records = [
      { length: 512, ms: 2, arch: 'retnet', what: 'train' },
      { length: 1024, ms: 2.1, arch: 'retnet', what: 'train' },
      { length: 512, ms: 3, arch: 'transformer', what: 'train' },
    ];
    const spec = panelsSpec('t', [
      {
        title: 'lines',
        records,
        x: { field: 'length', title: 'T', log: true },
        y: { field: 'ms', title: 'ms' },
        series: (r) => r.arch as string,
      },
      {
        title: 'bars',
        bars: true,
        records,
        x: { field: 'what', title: '' },
        y: { field: 'ms', title: 'ms' },
        series: (r) => r.arch as string,
      },
    ]);
    const { svg, png } = await renderSpec(spec);
    assert.match(svg, /^<svg/);
    assert.match(svg, /transformer/);
    assert.ok(png.length > 1000);
  });

  it('the command line shows the settings taken from the environment', () => {
    const argv = ['/usr/bin/node', join(ROOT, 'bench', 'run.ts'), 'decode', '--quick'];
    assert.equal(
      commandLine(argv, ['--import', 'tsx'], { RETNET_THREADS: '1', HOME: '/root' }),
      'RETNET_THREADS=1 node --import tsx bench/run.ts decode --quick',
    );
    // npx runs the bin through a link in its cache: the line names the file the link leads to.
    const dir = mkdtempSync(join(tmpdir(), 'retnet-cmd-'));
    try {
      symlinkSync(join(ROOT, 'bin', 'retnet.js'), join(dir, 'retnet'));
      assert.equal(
        commandLine(['/usr/bin/node', join(dir, 'retnet'), 'bench', 'budget', '--save'], [], {}),
        'node bin/retnet.js bench budget --save',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('failed records make the suite fail after writing', () => {
    assert.doesNotThrow(() => failOnFailedRecords('x', [{ status: 'ok' }, { status: 'skipped' }]));
    assert.throws(
      () => failOnFailedRecords('x', [{ status: 'failed', error: 'boom' }]),
      (e) => e instanceof BenchFailure && /boom/.test(e.message),
    );
  });
});

describe('bench peer and the CLI', () => {
  it('peerArgs passes the RetNet shape to peer_torch.py', () => {
    const c = retnetPreset('small', { vocabSize: 4096 });
    const shape = { preset: 'small', vocab: 4096, seq: 128, batch: 2, steps: 2, decode: 16 };
    assert.deepEqual(peerArgs(c, shape, 2), [
      '--vocab', '4096', '--d', '256', '--dv', '512', '--heads', '4', '--ffn', '512', '--layers', '4',
      '--seq', '128', '--batch', '2', '--steps', '2', '--decode', '16', '--threads', '2',
    ]); // prettier-ignore
  });

  it('a python without torch is a clear failure naming the apt package', () => {
    assert.throws(
      () => checkTorch('/nonexistent/python3'),
      (e) => e instanceof BenchFailure && /apt-get install python3-torch/.test(e.message),
    );
  });

  it('retnet bench lists the suites, rejects unknown ones and --quick --save', () => {
    const cli = (args: string[]) =>
      spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'run.ts'), 'bench', ...args], {
        encoding: 'utf8',
      });
    const list = cli(['--help']);
    assert.equal(list.status, 0, list.stderr);
    for (const s of [
      'decode',
      'batch',
      'train',
      'quality',
      'peer',
      'gemm',
      'attention',
      'generate',
      'data',
      'budget',
      'trainmem',
    ])
      assert.match(list.stdout, new RegExp(`\\n  ${s} `));
    const bad = cli(['nope']);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /unknown command 'nope'/);
    // Committed results change only when asked, and never from a --quick run.
    const quickSave = cli(['train', '--quick', '--save']);
    assert.equal(quickSave.status, 2);
    assert.match(quickSave.stderr, /--save keeps full runs only; leave out --quick/);
  });
});
