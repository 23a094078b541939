// `node --import tsx bench/suite-turns.ts --against <checkout> --suite SUITE [--rounds R] [--metric F1,F2,...]
// [--key F1,F2,...] [--full]`: a suite's `--quick` run (with `--full`, its full run: issue 11 compares the full
// `bench gemm`) from this checkout and from another one (e.g. a built copy of an older commit), in turns, R rounds
// (the order of the two alternates from round to round, so a load that drifts falls on both alike). Each run is a
// child process in its own checkout (its sources, its native addon, its suite code) writing into a scratch folder;
// the records of every round are matched by their `--key` fields and the table gives, per metric, point and
// checkout, the median and best of the metric over the rounds, their ratio (this / against; for a time, above 1 is
// slower), and the other processes' load (the records' other_load, mean over the rounds). This is the before/after
// measurement of a change that touches the engine under every suite ("no figure worse than noise");
// bench/train-turns.ts is the finer one for a single training step.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { type BenchRecord, median, printTable } from './lib.js';

const { values } = parseArgs({
  options: {
    against: { type: 'string' },
    suite: { type: 'string' },
    rounds: { type: 'string', default: '3' },
    metric: { type: 'string', default: 'tokens_per_s' },
    key: { type: 'string', default: 'variant,arch,length,batch,n' },
    full: { type: 'boolean', default: false },
  },
});
const usage = 'suite-turns: --against <checkout> --suite SUITE [--rounds R] [--metric F1,F2] [--key F1,F2] [--full]';
if (!values.against || !values.suite) throw new Error(usage);
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1)
  throw new Error(`suite-turns: --rounds must be a positive integer, got ${values.rounds}`);
const suite = values.suite;
const metrics = values.metric!.split(',').filter((m) => m !== '');
const keys = values.key!.split(',').filter((k) => k !== '');

const here = resolve(fileURLToPath(new URL('..', import.meta.url)));
const roots = [resolve(values.against), here];
const names = ['against', 'this'];
const scratch = mkdtempSync(join(tmpdir(), 'retnet-suite-turns-'));

/** One `--quick` (or full) run of the suite in `root`, writing into `out`; its records. Checkouts older than the `--out` flag read RETNET_BENCH_ROOT. */
function runOnce(root: string, out: string): BenchRecord[] {
  const hasOut = readFileSync(join(root, 'bench', 'suites.ts'), 'utf8').includes('--out');
  const args = ['--import', 'tsx', 'bench/run.ts', suite, ...(values.full ? [] : ['--quick'])];
  if (hasOut) args.push('--out', out);
  const env = hasOut ? process.env : { ...process.env, RETNET_BENCH_ROOT: out };
  const run = spawnSync(process.execPath, args, { cwd: root, encoding: 'utf8', env });
  const file = join(out, 'bench', 'results', `${suite}.json`);
  if (run.status !== 0 || !existsSync(file))
    throw new Error(
      `suite-turns: ${suite} ${values.full ? '(full)' : '--quick'} in ${root} failed (status ${run.status}):\n${run.stderr}`,
    );
  return (JSON.parse(readFileSync(file, 'utf8')) as { records: BenchRecord[] }).records;
}

const keyOf = (r: BenchRecord) =>
  keys
    .filter((k) => r[k] !== undefined)
    .map((k) => `${k}=${String(r[k])}`)
    .join(' ');
// per metric and point key, per checkout: the metric and the load of each round
const points = new Map<string, { metric: string; value: number[]; load: number[] }[]>();
try {
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? [0, 1] : [1, 0];
    for (const i of order) {
      const records = runOnce(roots[i]!, join(scratch, `${names[i]}-${round}`));
      for (const r of records)
        for (const metric of metrics) {
          if (typeof r[metric] !== 'number') continue;
          const k = `${metric} ${keyOf(r)}`;
          if (!points.has(k))
            points.set(
              k,
              [0, 1].map(() => ({ metric, value: [], load: [] })),
            );
          const p = points.get(k)![i]!;
          p.value.push(r[metric]);
          if (typeof r.other_load === 'number') p.load.push(r.other_load);
        }
      process.stderr.write(`suite-turns: round ${round + 1} ${names[i]} (${roots[i]}): ${records.length} records\n`);
    }
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

const mean = (xs: number[]) => (xs.length > 0 ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
const rows: BenchRecord[] = [];
for (const [k, [a, b]] of points) {
  const metric = a!.metric;
  if (a!.value.length === 0 || b!.value.length === 0) continue;
  const [ma, mb] = [median(a!.value), median(b!.value)];
  const [ba, bb] = [Math.max(...a!.value), Math.max(...b!.value)];
  const [wa, wb] = [Math.min(...a!.value), Math.min(...b!.value)];
  // "best" is the larger value for a rate and the smaller for a time
  const higherIsBetter = !/(^|_)(ms|us)($|_)|bytes|mib/.test(metric);
  rows.push({
    metric,
    point: k.slice(metric.length + 1),
    against_median: ma,
    this_median: mb,
    ratio_median: mb / ma,
    against_best: higherIsBetter ? ba : wa,
    this_best: higherIsBetter ? bb : wb,
    ratio_best: (higherIsBetter ? bb : wb) / (higherIsBetter ? ba : wa),
    rounds: Math.min(a!.value.length, b!.value.length),
    other_load: mean([...a!.load, ...b!.load]),
  });
}
printTable(
  `${suite} ${values.full ? '(full run)' : '--quick'}, ${metrics.join(', ')}: this (${here}) against ${roots[0]}, ${rounds} rounds in turns`,
  rows,
  [
    { key: 'metric' },
    { key: 'point' },
    { key: 'against_median', header: 'against (median)', digits: 2 },
    { key: 'this_median', header: 'this (median)', digits: 2 },
    { key: 'ratio_median', header: 'this / against', digits: 3 },
    { key: 'against_best', header: 'against (best)', digits: 2 },
    { key: 'this_best', header: 'this (best)', digits: 2 },
    { key: 'ratio_best', header: 'this / against (best)', digits: 3 },
    { key: 'rounds', digits: 0 },
    { key: 'other_load', header: 'other load', digits: 2 },
  ],
);
