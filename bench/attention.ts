// `node --import tsx bench/attention.ts [--quick] [--lengths 256,512] [--batch 1] [--heads 8] [--head-dim 64]`
//
// Causal attention kernels, in the manner of llm.c's dev/cuda benchmarks: first validate (native flash against
// native naive and against the reference backend, forward and gradients), then time each algorithm's forward and
// forward + backward at growing lengths T, with the peak tensor bytes of a forward + backward from the engine's
// memory accounting (inputs excluded, workspace included). Then the KV-cache decode kernel: one query per head
// against caches of growing length. Prints tables and writes bench/results/attention.json. Times are the minimum
// over the runs (medians are recorded too; see timeMs).
//
// FLOP counts are the causal model FLOPs (FlashAttention paper convention, halved for the mask): forward
// 2·B·H·T²·K (q kᵀ and P v over the lower triangle), backward 2.5× that.

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

import type { AttentionAlgorithm, Backend } from '../src/backend/backend.js';
import { packageRoot } from '../src/backend/addon.js';
import { getBackend, nativeInfo, referenceBackend, threadCount } from '../src/backend/index.js';
import { backward, noGrad } from '../src/autograd/tape.js';
import { intFlag, parseFlags } from '../src/cli/command.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { attentionDecode, causalAttention } from '../src/ops/attention.js';
import { Rng } from '../src/tensor/random.js';
import { tidy } from '../src/tensor/scope.js';
import type { Tensor } from '../src/tensor/tensor.js';

type Row = Record<string, string | number>;

const ALGORITHMS: AttentionAlgorithm[] = ['naive', 'flash'];

function randomTensor(be: Backend, rng: Rng, shape: number[], requiresGrad = false): Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = rng.normal();
  const t = be.fromData(data, shape, 'float32');
  t.requiresGrad = requiresGrad;
  return t;
}

/**
 * Minimum and median ms of fn over at least `minRuns` runs and `minMs` of timing, after one warm-up run. Rates are
 * computed from the minimum: on a shared machine an OpenMP barrier waits whenever another process holds a core, which
 * inflates some runs by whole scheduler slices (milliseconds) but never shortens one.
 */
function timeMs(fn: () => void, minRuns: number, minMs: number): { min: number; median: number } {
  fn();
  const times: number[] = [];
  const start = performance.now();
  while (times.length < minRuns || performance.now() - start < minMs) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { min: times[0]!, median: times[times.length >> 1]! };
}

interface Inputs {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  g: Tensor;
}

function inputs(be: Backend, B: number, T: number, H: number, K: number, seed: number): Inputs {
  const rng = new Rng(seed);
  const shape = [B, T, H, K];
  return {
    q: randomTensor(be, rng, shape, true),
    k: randomTensor(be, rng, shape, true),
    v: randomTensor(be, rng, shape, true),
    g: randomTensor(be, rng, shape),
  };
}

function dispose(x: Inputs): void {
  for (const t of [x.q, x.k, x.v, x.g]) t.dispose();
}

/** o, dq, dk, dv of one forward + backward. */
function outputs(x: Inputs, algorithm: AttentionAlgorithm): Float32Array[] {
  for (const t of [x.q, x.k, x.v]) {
    t.grad?.dispose();
    t.grad = null;
  }
  const o = tidy(() => {
    const out = causalAttention(x.q, x.k, x.v, { algorithm });
    backward(out, x.g);
    return out.data() as Float32Array;
  });
  return [o, ...[x.q, x.k, x.v].map((t) => t.grad!.data() as Float32Array)];
}

/** max |a − b| / max(1, max |b|) over o, dq, dk, dv. */
function maxRelError(a: Float32Array[], b: Float32Array[]): number {
  let worst = 0;
  a.forEach((x, i) => {
    const y = b[i]!;
    let scale = 1;
    for (const e of y) scale = Math.max(scale, Math.abs(e));
    for (let j = 0; j < x.length; j++) worst = Math.max(worst, Math.abs(x[j]! - y[j]!) / scale);
  });
  return worst;
}

function validate(): Row[] {
  const nat = getBackend('native');
  const ref = referenceBackend();
  const [B, T, H, K] = [2, 150, 3, 64];
  const rows: Row[] = [];
  const natIn = inputs(nat, B, T, H, K, 1);
  const refIn = inputs(ref, B, T, H, K, 1);
  const naive = outputs(natIn, 'naive');
  for (const algorithm of ALGORITHMS) {
    const n = outputs(natIn, algorithm);
    const r = outputs(refIn, algorithm);
    rows.push({ check: `native ${algorithm} vs reference ${algorithm}`, max_rel_error: maxRelError(n, r) });
    if (algorithm === 'flash')
      rows.push({ check: 'native flash vs native naive', max_rel_error: maxRelError(n, naive) });
  }
  dispose(natIn);
  dispose(refIn);
  const bad = rows.filter((r) => !((r.max_rel_error as number) <= 1e-5));
  if (bad.length > 0)
    throw new Error(`validation failed: ${bad.map((r) => `${r.check} ${r.max_rel_error}`).join('; ')}`);
  return rows;
}

function timeSequence(B: number, T: number, H: number, K: number, algorithm: AttentionAlgorithm, quick: boolean): Row {
  const be = getBackend('native');
  const x = inputs(be, B, T, H, K, 2);
  const runs = quick ? 3 : 5;
  const minMs = quick ? 200 : 1000;
  const fwdMs = timeMs(() => noGrad(() => tidy(() => void causalAttention(x.q, x.k, x.v, { algorithm }))), runs, minMs);
  const step = () => {
    tidy(() => backward(causalAttention(x.q, x.k, x.v, { algorithm }), x.g));
    for (const t of [x.q, x.k, x.v]) {
      t.grad?.dispose();
      t.grad = null;
    }
  };
  const fwdBwdMs = timeMs(step, runs, minMs);
  const base = be.memory.current;
  be.memory.resetPeak();
  step();
  const peak = be.memory.peak - base;
  dispose(x);
  const fwdFlops = 2 * B * H * T * T * K;
  return {
    T,
    algorithm,
    fwd_ms: fwdMs.min,
    fwd_bwd_ms: fwdBwdMs.min,
    fwd_bwd_ms_median: fwdBwdMs.median,
    tokens_per_s: (B * T) / (fwdBwdMs.min / 1000),
    fwd_gflops: fwdFlops / (fwdMs.min * 1e6),
    fwd_bwd_gflops: (3.5 * fwdFlops) / (fwdBwdMs.min * 1e6),
    peak_mib: peak / 2 ** 20,
    peak_bytes: peak,
  };
}

function timeDecode(B: number, C: number, H: number, K: number, quick: boolean): Row {
  const be = getBackend('native');
  const rng = new Rng(3);
  const q = randomTensor(be, rng, [B, H, K]);
  const kc = randomTensor(be, rng, [B, H, C, K]);
  const vc = randomTensor(be, rng, [B, H, C, K]);
  const lengths = new Array<number>(B).fill(C);
  const ms = timeMs(() => attentionDecode(q, kc, vc, lengths).dispose(), quick ? 5 : 20, quick ? 100 : 500);
  for (const t of [q, kc, vc]) t.dispose();
  // Each call reads the whole K and V cache once.
  const bytes = 2 * B * H * C * K * 4;
  return {
    cache_length: C,
    us_per_step: ms.min * 1000,
    us_per_step_median: ms.median * 1000,
    cache_read_gb_per_s: bytes / (ms.min * 1e6),
  };
}

function table(title: string, rows: Row[], columns: string[]): void {
  const cell = (v: string | number | undefined) =>
    v === undefined ? '-' : typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : v;
  const cells = rows.map((r) => columns.map((c) => cell(r[c])));
  const widths = columns.map((c, j) => Math.max(c.length, ...cells.map((r) => r[j]!.length)));
  const line = (vals: string[]) => vals.map((v, j) => v.padStart(widths[j]!)).join('  ');
  process.stdout.write(`\n${title}\n${line(columns)}\n${line(widths.map((w) => '-'.repeat(w)))}\n`);
  for (const r of cells) process.stdout.write(`${line(r)}\n`);
}

function machine(): Record<string, unknown> {
  let cpu = 'unknown';
  try {
    const line = readFileSync('/proc/cpuinfo', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('model name'));
    if (line) cpu = line.slice(line.indexOf(':') + 1).trim();
  } catch {
    // not Linux
  }
  const info = nativeInfo();
  return {
    cpu,
    cores: availableParallelism(),
    threads: threadCount(),
    node: process.version,
    openblas_coretype: process.env.OPENBLAS_CORETYPE ?? null,
    blas_core: info?.blasCoreType ?? null,
    // Run-queue load of the whole machine when the run ended (1, 5, 15 minutes): above the core count, other
    // processes competed for the cores and medians are inflated.
    loadavg: loadavg(),
  };
}

function gitCommit(): string | null {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: packageRoot(), encoding: 'utf8' }).trim();
  } catch {
    return null;
  }
}

const { values } = parseFlags('bench attention', process.argv.slice(2), {
  quick: { type: 'boolean' },
  lengths: { type: 'string' },
  batch: { type: 'string' },
  heads: { type: 'string' },
  'head-dim': { type: 'string' },
});
const quick = values.quick === true;
const B = intFlag('bench attention', 'batch', values.batch, 1);
const H = intFlag('bench attention', 'heads', values.heads, 8);
const K = intFlag('bench attention', 'head-dim', values['head-dim'], 64);
const lengths = values.lengths
  ? values.lengths.split(',').map((s) => Number(s))
  : quick
    ? [256, 512, 1024]
    : [256, 512, 1024, 2048, 4096];

const checks = validate();
table('validation (B=2 T=150 H=3 K=64, float32, o and gradients)', checks, ['check', 'max_rel_error']);

const sequence: Row[] = [];
for (const T of lengths) for (const algorithm of ALGORITHMS) sequence.push(timeSequence(B, T, H, K, algorithm, quick));
table(`causal attention, native, B=${B} H=${H} K=${K}, ${threadCount()} threads`, sequence, [
  'T',
  'algorithm',
  'fwd_ms',
  'fwd_bwd_ms',
  'tokens_per_s',
  'fwd_gflops',
  'fwd_bwd_gflops',
  'peak_mib',
  'fwd_bwd_ms_median',
]);

const decode = lengths.map((C) => timeDecode(B, C, H, K, quick));
table(`KV-cache decode attention, native, B=${B} H=${H} K=${K}`, decode, [
  'cache_length',
  'us_per_step',
  'cache_read_gb_per_s',
  'us_per_step_median',
]);

const dir = join(packageRoot(), 'bench', 'results');
mkdirSync(dir, { recursive: true });
const path = join(dir, 'attention.json');
const result = {
  suite: 'attention',
  command: `node --import tsx bench/attention.ts ${process.argv.slice(2).join(' ')}`.trim(),
  commit: gitCommit(),
  createdAt: new Date().toISOString(),
  machine: machine(),
  shape: { B, H, K },
  validation: checks,
  sequence,
  decode,
};
writeFileAtomic(path, `${JSON.stringify(result, null, 2)}\n`);
process.stdout.write(`\nwrote ${path}\n`);
