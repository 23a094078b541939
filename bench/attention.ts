// `retnet bench attention [--quick] [--lengths 256,512] [--batch 1] [--heads 8] [--head-dim 64]`
//
// Causal attention kernels, in the manner of llm.c's dev/cuda benchmarks: first validate (native flash against
// native naive and against the reference backend, forward and gradients), then time each algorithm's forward and
// forward + backward at growing lengths T, with the peak tensor bytes of a forward + backward from the engine's
// memory accounting (inputs excluded, workspace included). Then the KV-cache decode kernel: one query per head
// against caches of growing length. Prints tables and writes bench/results/attention.json. Rates come from the
// minimum time over the samples (medians are recorded too): on a shared machine an OpenMP barrier waits whenever
// another process holds a core, which inflates some runs by whole scheduler slices but never shortens one.
//
// FLOP counts are the causal model FLOPs (FlashAttention paper convention, halved for the mask): forward
// 2·B·H·T²·K (q kᵀ and P v over the lower triangle), backward 2.5× that.

import type { Device } from '../src/backend/device.js';
import type { AttentionAlgorithm } from '../src/backend/kernels.js';
import { getBackend, referenceBackend, threadCount } from '../src/backend/index.js';
import { backward, noGrad } from '../src/autograd/tape.js';
import { attentionDecode, causalAttention } from '../src/ops/attention.js';
import { Rng } from '../src/tensor/random.js';
import { tidy } from '../src/tensor/scope.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { type BenchRecord, BenchFailure, cpuCounters, measure, otherLoad, printTable, writeResults } from './lib.js';

type Row = BenchRecord;

const ALGORITHMS: AttentionAlgorithm[] = ['naive', 'flash'];

function randomTensor(be: Device, rng: Rng, shape: number[], requiresGrad = false): Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = rng.normal();
  const t = be.fromData(data, shape, 'float32');
  t.requiresGrad = requiresGrad;
  return t;
}

/** Minimum and median ms of fn over at least `minRuns` runs and `minMs` of timing, after one warm-up run. */
async function timeMs(fn: () => void, minRuns: number, minMs: number): Promise<{ min: number; median: number }> {
  const t = await measure(fn, { warmup: 1, minTimeMs: minMs, minSamples: minRuns, sampleTargetMs: 0 });
  return { min: t.msMin, median: t.msMedian };
}

interface Inputs {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  g: Tensor;
}

function inputs(be: Device, B: number, T: number, H: number, K: number, seed: number): Inputs {
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
  const nat = getBackend('cpu');
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
    throw new BenchFailure(
      `attention: validation failed: ${bad.map((r) => `${r.check} ${r.max_rel_error}`).join('; ')}`,
    );
  return rows;
}

async function timeSequence(
  B: number,
  T: number,
  H: number,
  K: number,
  algorithm: AttentionAlgorithm,
  quick: boolean,
): Promise<Row> {
  const be = getBackend('cpu');
  const x = inputs(be, B, T, H, K, 2);
  const runs = quick ? 3 : 5;
  const minMs = quick ? 200 : 1000;
  const fwdMs = await timeMs(
    () => noGrad(() => tidy(() => void causalAttention(x.q, x.k, x.v, { algorithm }))),
    runs,
    minMs,
  );
  const step = () => {
    tidy(() => backward(causalAttention(x.q, x.k, x.v, { algorithm }), x.g));
    for (const t of [x.q, x.k, x.v]) {
      t.grad?.dispose();
      t.grad = null;
    }
  };
  const fwdBwdMs = await timeMs(step, runs, minMs);
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

async function timeDecode(B: number, C: number, H: number, K: number, quick: boolean): Promise<Row> {
  const be = getBackend('cpu');
  const rng = new Rng(3);
  const q = randomTensor(be, rng, [B, H, K]);
  const kc = randomTensor(be, rng, [B, H, C, K]);
  const vc = randomTensor(be, rng, [B, H, C, K]);
  const lengths = new Array<number>(B).fill(C);
  const ms = await timeMs(() => attentionDecode(q, kc, vc, lengths).dispose(), quick ? 5 : 20, quick ? 100 : 500);
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

export async function attentionSuite(values: {
  quick: boolean;
  lengths: number[] | undefined;
  batch: number;
  heads: number;
  'head-dim': number;
}): Promise<void> {
  const quick = values.quick;
  const B = values.batch;
  const H = values.heads;
  const K = values['head-dim'];
  const lengths = values.lengths ? values.lengths : quick ? [256, 512, 1024] : [256, 512, 1024, 2048, 4096];

  const checks = validate().map((r) => ({ kind: 'validation', ...r }));
  printTable('validation (B=2 T=150 H=3 K=64, float32, o and gradients)', checks, [
    { key: 'check' },
    { key: 'max_rel_error', digits: 9 },
  ]);

  const before = cpuCounters();
  const sequence: Row[] = [];
  for (const T of lengths)
    for (const algorithm of ALGORITHMS)
      sequence.push({ kind: 'sequence', B, H, K, ...(await timeSequence(B, T, H, K, algorithm, quick)) });
  const decode: Row[] = [];
  for (const C of lengths) decode.push({ kind: 'decode', B, H, K, ...(await timeDecode(B, C, H, K, quick)) });
  const load = otherLoad(before, cpuCounters());
  for (const r of [...sequence, ...decode]) r.other_load = load;

  printTable(`causal attention, native, B=${B} H=${H} K=${K}, ${threadCount()} threads`, sequence, [
    { key: 'T', digits: 0 },
    { key: 'algorithm' },
    { key: 'fwd_ms', digits: 3 },
    { key: 'fwd_bwd_ms', digits: 3 },
    { key: 'tokens_per_s', digits: 0 },
    { key: 'fwd_gflops', digits: 1 },
    { key: 'fwd_bwd_gflops', digits: 1 },
    { key: 'peak_mib', digits: 1 },
    { key: 'fwd_bwd_ms_median', digits: 3 },
  ]);
  printTable(`KV-cache decode attention, native, B=${B} H=${H} K=${K}`, decode, [
    { key: 'cache_length', digits: 0 },
    { key: 'us_per_step', digits: 1 },
    { key: 'cache_read_gb_per_s', digits: 2 },
    { key: 'us_per_step_median', digits: 1 },
  ]);
  const { path } = writeResults('attention', [...checks, ...sequence, ...decode]);
  process.stdout.write(`\nwrote ${path}\n`);
}
