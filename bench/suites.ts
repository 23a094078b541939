// The benchmark suites, one module each, run by `retnet bench SUITE` (src/cli/bench.ts) and `npm run bench -- SUITE`
// (bench/run.ts). Each declares its flags here and prints its tables; it writes SUITE.json (see bench/lib.ts) and, for
// the paper's claims, a chart and its section of BENCHMARKS.md (bench/report.ts) under the output folder: `--out`
// (default runs/bench/), or with `--save` the committed results of the repository. It throws when a point failed.

import { resolve } from 'node:path';

import { packageRoot } from '../src/backend/cpu/load.js';
import {
  type Command,
  DEVICE_FLAG,
  type FlagValues,
  type Flags,
  UsageError,
  bool,
  choice,
  defineCommand,
  int,
  intItem,
  num,
  list,
  text,
  WEIGHTS_FLAG,
} from '../src/cli/command.js';
import { WEIGHT_FORMATS, parseWeightFormat } from '../src/quant/formats.js';
import { setOutputRoot } from './lib.js';

const quick = bool('a smaller configuration, in under two minutes');
const report = bool('redraw the chart and section from the saved JSON, without measuring');

/** Where every suite writes. Committed results change only with --save (and never from a --quick run). */
const OUTPUT_FLAGS = {
  out: text('the folder for SUITE.json, charts and BENCHMARKS.md sections (the repository layout inside)', {
    placeholder: 'dir',
    default: 'runs/bench',
    nonEmpty: true,
  }),
  save: bool("write the repository's committed results (bench/results/, BENCHMARKS.md); full runs only"),
};

function suite<F extends Flags>(
  name: string,
  summary: string,
  flags: F,
  run: (values: FlagValues<F>) => Promise<void>,
): Command {
  const all = { ...flags, ...OUTPUT_FLAGS, ...DEVICE_FLAG };
  return defineCommand({
    name,
    summary,
    flags: all,
    async run({ values, given }) {
      const v = values as unknown as FlagValues<typeof OUTPUT_FLAGS> & { quick?: boolean };
      if (v.save && v.quick) throw new UsageError(`bench ${name}: --save keeps full runs only; leave out --quick`);
      if (v.save && given('out')) throw new UsageError(`bench ${name}: --save and --out name two places; give one`);
      setOutputRoot(v.save ? packageRoot() : resolve(v.out));
      await run(values);
      return 0;
    },
  });
}

// Suites load on demand: a run imports only the one it needs.
export const suites: Command[] = [
  suite(
    'decode',
    'decode latency, tokens/s and memory vs context length: RetNet recurrent vs Transformer KV cache',
    { quick, report },
    async (v) => (await import('./decode.js')).decodeSuite(v),
  ),
  suite(
    'batch',
    'decode latency and tokens/s vs batch size at a fixed context: RetNet vs Transformer',
    { quick, report },
    async (v) => (await import('./batch.js')).batchSuite(v),
  ),
  suite(
    'train',
    'training-step tokens/s, peak memory and MFU vs length: RetNet parallel/chunkwise vs Transformer',
    { quick, report },
    async (v) => (await import('./train.js')).trainSuite(v),
  ),
  suite(
    'budget',
    'decode tokens/s at the largest batch that fits a memory budget (Figure 6): 357M RetNet vs Transformer',
    {
      quick,
      report,
      budget: num('the memory budget in GiB (default 8; --quick 0.09)', { min: 0.01, max: 1024 }),
      weights: choice('weight format', WEIGHT_FORMATS, { default: 'bf16' }),
      state: choice("RetNet's decode state (f16: RetNetModel.stateDType float16)", ['f32', 'f16'], {
        default: 'f32',
      }),
    },
    async (v) => (await import('./budget.js')).budgetSuite(v),
  ),
  suite(
    'trainmem',
    'where a training step keeps its memory: live bytes per op and token, step peak; RetNet chunkwise vs flash',
    {
      quick,
      length: int('sequence length (default 8192; --quick 256)', { min: 1, max: 65536 }),
      layers: int('layers (default 12; --quick 2)', { min: 1, max: 64 }),
      steps: int('steps of each variant to time in turns (0: memory only)', { min: 0, max: 100, default: 0 }),
    },
    async (v) => (await import('./trainmem.js')).trainMemSuite(v),
  ),
  suite(
    'quality',
    'validation perplexity of RetNet vs a parameter-matched Transformer trained alike on Brown, loss curves',
    { quick },
    async (v) => (await import('./quality.js')).qualitySuite(v),
  ),
  suite(
    'peer',
    'our RetNet vs the same RetNet in PyTorch on the CPU: training-step and decode tokens/s',
    { quick },
    async (v) => (await import('./peer.js')).peerSuite(v),
  ),
  suite(
    'lowp',
    'decode with f32/bf16/int8/q4 weights vs the memory bound and PyTorch',
    {
      quick,
      models: list('models to measure (base, 1.3B)', (s) => s, { placeholder: 'names', maxItems: 2 }),
      model: text('a model directory to measure instead (decode and the peer only: no quality run)', {
        placeholder: 'dir',
        nonEmpty: true,
      }),
      formats: list('weight formats to measure (decode only)', (s) => parseWeightFormat(s), {
        placeholder: 'formats',
        maxItems: 5,
      }),
      parts: list(
        'parts to run (decode, peer, quality; default all), merged into the saved results',
        (s) => {
          // bench/lowp.ts LOWP_PARTS (not imported: that module loads the addon)
          if (!['decode', 'peer', 'quality'].includes(s)) throw new Error('expected decode, peer or quality');
          return s as 'decode' | 'peer' | 'quality';
        },
        { placeholder: 'parts', maxItems: 3 },
      ),
    },
    async (v) => (await import('./lowp.js')).lowpSuite(v),
  ),
  suite(
    'web',
    'retnet/web: bundle size; the tiny demo model in headless chromium (webgpu on SwiftShader, host) and in Node',
    { quick },
    async (v) => (await import('./web.js')).webSuite(v),
  ),
  suite('data', 'tokenising Brown into shards (bytes, BPE 4096): cold and reused', { quick }, async (v) =>
    (await import('./data.js')).dataSuite(v),
  ),
  suite(
    'generate',
    'generate() prefill/decode tokens/s by batch; HTTP server tokens/s, time to first token, loop blocking',
    { quick, 'prefill-only': bool('only the prefill-interference measurement') },
    async (v) => (await import('./generate.js')).generateSuite(v),
  ),
  suite(
    'attention',
    'attention kernels: validation, naive vs flash fwd/fwd+bwd by length, KV-cache decode kernel',
    {
      quick,
      lengths: list('sequence and cache lengths', intItem(1, 65536), { placeholder: 'ints', maxItems: 64 }),
      batch: int('batch size', { min: 1, max: 256, default: 1 }),
      heads: int('heads', { min: 1, max: 256, default: 8 }),
      'head-dim': int('head dimension', { min: 1, max: 1024, default: 64 }),
    },
    async (v) => (await import('./attention.js')).attentionSuite(v),
  ),
  suite(
    'pretrained',
    'a pretrained fla RetNet at 1.3B (random-weight stand-in unless --model DIR): load time, peak RSS, decode',
    {
      quick,
      model: text('a model directory to measure instead of the stand-in', { placeholder: 'dir', nonEmpty: true }),
      tokens: int('tokens to decode', { min: 2, max: 100000 }),
      ...WEIGHTS_FLAG,
      keep: bool('keep the written stand-in (its folder is printed)'),
      child: {
        ...text('internal: measure this directory once, record as JSON on stdout', { placeholder: 'dir' }),
        hidden: true,
      },
    },
    async (v) => (await import('./pretrained.js')).pretrainedSuite(v),
  ),
  suite(
    'gemm',
    'GEMM GFLOP/s vs OpenBLAS from C, tiny-op overhead, copy bandwidth',
    {
      quick,
      sizes: list('square GEMM sizes', intItem(1, 16384), { placeholder: 'ints', maxItems: 64 }),
      // Internal: measure one pass and print its records as JSON (the parent's second pass).
      child: { ...bool('internal: one pass, records as JSON on stdout'), hidden: true },
    },
    async (v) => (await import('./gemm.js')).gemmSuite(v),
  ),
];
