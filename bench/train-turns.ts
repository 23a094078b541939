// `node --import tsx bench/train-turns.ts --against <checkout> [--preset P] [--length T] [--layers L] [--steps N]
// [--rounds R] [--trainer] [--accum A]`: the training step time of this checkout against another one (e.g. a built copy of an older commit),
// RetNet chunkwise (chunk 64), batch 1, vocabulary 4096, as `bench train` runs it (preset `base`; its --quick run
// uses `small`, 2 layers, T 256 and 512); with `--trainer`, the trainer's whole step instead (src/train/trainer.ts:
// forward and backward over A micro-batches of batch 1 (accumulateGradients), the global gradient norm and the AdamW
// update, where issue 11 removed the host round trips). The two checkouts take turns, one process each per round (each builds its
// model, warms up with one step, then times N steps), so load from other processes falls on both alike; the table
// gives per checkout the median and best step over all rounds, tokens/s from each, and the other processes' load
// while its steps ran (bench/lib.ts otherLoad, measured in each child over its timed steps; the mean over the
// rounds). Each child loads its own checkout's sources and native addon; only the measurement code is this file.

import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { cpuCounters, median, otherLoad, printTable } from './lib.js';

const { values } = parseArgs({
  options: {
    against: { type: 'string' },
    child: { type: 'string' },
    preset: { type: 'string', default: 'base' },
    length: { type: 'string', default: '2048' },
    layers: { type: 'string', default: '12' },
    steps: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' },
    trainer: { type: 'boolean', default: false },
    accum: { type: 'string', default: '1' },
  },
});
const int = (name: 'length' | 'layers' | 'steps' | 'rounds' | 'accum') => {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < 1)
    throw new Error(`train-turns: --${name} must be a positive integer, got ${values[name]}`);
  return n;
};

/** In a child: N timed steps of the checkout at `root`; prints the step times (ms) and the other load as JSON. */
async function child(root: string): Promise<void> {
  const from = (path: string) => import(pathToFileURL(resolve(root, path)).href);
  const { createModel } = await from('src/models/registry.ts');
  const { backward } = await from('src/autograd/tape.ts');
  const { crossEntropy } = await from('src/ops/nn.ts');
  const { tidy } = await from('src/tensor/scope.ts');
  const { getBackend } = await from('src/backend/index.ts');
  const { accumulateGradients } = await from('src/train/trainer.ts');
  const { AdamW } = await from('src/train/optimizer.ts');
  const T = int('length');
  const vocab = 4096;
  const be = getBackend();
  const data = Array.from({ length: T }, (_, i) => (i * 7919) % vocab);
  const ids = be.fromData(data, [1, T], 'int32');
  const targets = be.fromData(
    data.map((x) => (x + 1) % vocab),
    [1, T],
    'int32',
  );
  const model = createModel('retnet', values.preset, { vocabSize: vocab, layers: int('layers') }, { seed: 1 });
  const forward = (x: unknown) => model.forward(x, { form: 'chunkwise', chunkSize: 64 });
  // The trainer's step: micro-batches as the data pipeline gives them (src/train/data.ts Batch), clipping at 1.
  const batches = Array.from({ length: int('accum') }, () => ({
    rows: 1,
    inputs: Int32Array.from(data),
    targets: Int32Array.from(data, (x) => (x + 1) % vocab),
  }));
  const optimizer = values.trainer ? new AdamW(model.namedParameters()) : null;
  const step = () => {
    const t0 = performance.now();
    if (optimizer) {
      accumulateGradients(model, forward, batches, T);
      const norm = optimizer.gradNorm();
      optimizer.update(1e-4, norm > 1 ? 1 / (norm + 1e-6) : 1);
    } else tidy(() => backward(crossEntropy(forward(ids), targets)));
    model.zeroGrad();
    return performance.now() - t0;
  };
  step(); // warm-up
  const before = cpuCounters();
  const ms = Array.from({ length: int('steps') }, step);
  process.stdout.write(`${JSON.stringify({ ms, load: otherLoad(before, cpuCounters()) })}\n`);
}

function parent(against: string): void {
  const here = resolve(fileURLToPath(new URL('..', import.meta.url)));
  const roots = [resolve(against), here];
  const names = ['against', 'this'];
  const ms: number[][] = [[], []];
  const loads: number[][] = [[], []];
  for (let r = 0; r < int('rounds'); r++)
    roots.forEach((root, i) => {
      const args = ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', root];
      for (const k of ['preset', 'length', 'layers', 'steps', 'accum'] as const) args.push(`--${k}`, String(values[k]));
      if (values.trainer) args.push('--trainer');
      const run = spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8', env: process.env });
      if (run.status !== 0) throw new Error(`train-turns: the step in ${root} failed:\n${run.stderr}`);
      const out = JSON.parse(run.stdout.trim().split('\n').pop()!) as { ms: number[]; load: number | null };
      ms[i]!.push(...out.ms);
      if (out.load !== null) loads[i]!.push(out.load);
      const times = out.ms.map((t) => t.toFixed(0)).join(', ');
      process.stderr.write(
        `train-turns: round ${r + 1} ${names[i]}: ${times} ms, other load ${out.load?.toFixed(2)}\n`,
      );
    });
  const T = int('length');
  const tokens = T * (values.trainer ? int('accum') : 1); // per step
  const mean = (xs: number[]) => (xs.length > 0 ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
  printTable(
    `RetNet chunkwise ${values.trainer ? `trainer step (${int('accum')} micro-batches, AdamW)` : 'training step'}, ${values.preset} preset, ${values.layers} layers, T = ${T}, batch 1, in turns`,
    roots.map((root, i) => ({
      checkout: `${names[i]} (${root})`,
      steps: ms[i]!.length,
      ms_median: median(ms[i]!),
      ms_best: Math.min(...ms[i]!),
      tokens_per_s: (tokens * 1000) / median(ms[i]!),
      tokens_per_s_best: (tokens * 1000) / Math.min(...ms[i]!),
      other_load: mean(loads[i]!),
    })),
    [
      { key: 'checkout' },
      { key: 'steps', digits: 0 },
      { key: 'ms_median', header: 'median ms/step', digits: 0 },
      { key: 'ms_best', header: 'best ms/step', digits: 0 },
      { key: 'tokens_per_s', header: 'tokens/s', digits: 1 },
      { key: 'tokens_per_s_best', header: 'best tokens/s', digits: 1 },
      { key: 'other_load', header: 'other load', digits: 2 },
    ],
  );
}

if (values.child) await child(values.child);
else if (values.against) parent(values.against);
else throw new Error('train-turns: pass --against <checkout> (the other tree to time in turns with this one)');
