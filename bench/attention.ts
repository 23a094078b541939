// `npm run bench -- attention [--quick] [--lengths 256,512] [--batch 1] [--heads 8] [--head-dim 64]`
//
// Causal attention kernels, in the manner of llm.c's dev/cuda benchmarks: first validate (native flash against
// native naive and against the reference backend, forward and gradients), then time each algorithm's forward and
// forward + backward at growing lengths T, with the peak tensor bytes of a forward + backward from the engine's memory
// accounting (inputs excluded, workspace included). Then the KV-cache decode kernel: one query per head against
// caches of growing length. Naive and flash take turns in the timing (bench/lib.ts), so load from other processes
// falls on both alike; each row records that load. Prints tables and writes bench/results/attention.json.
//
// FLOP counts are the causal model FLOPs (the FlashAttention paper's convention, halved for the mask): forward
// 2·B·H·T²·K (q kᵀ and P v over the lower triangle), backward 2.5× that.

import type { AttentionAlgorithm, Backend } from '../src/backend/backend.js';
import { getBackend, referenceBackend, threadCount } from '../src/backend/index.js';
import { backward, noGrad } from '../src/autograd/tape.js';
import { intFlag, parseFlags } from '../src/cli/command.js';
import { RetnetError } from '../src/errors.js';
import { attentionDecode, causalAttention } from '../src/ops/attention.js';
import { Rng } from '../src/tensor/random.js';
import { tidy } from '../src/tensor/scope.js';
import type { Tensor } from '../src/tensor/tensor.js';
import {
  type BenchRecord,
  type TimingOptions,
  batchOf,
  cpuCounters,
  gbPerS,
  measure,
  measureEach,
  otherLoad,
  printTable,
  writeResults,
} from './lib.js';

const ALGORITHMS: AttentionAlgorithm[] = ['naive', 'flash'];

interface Inputs {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  /** The output gradient. */
  g: Tensor;
}

function randomTensor(be: Backend, rng: Rng, shape: number[], requiresGrad = false): Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = rng.normal();
  const t = be.fromData(data, shape, 'float32');
  t.requiresGrad = requiresGrad;
  return t;
}

/** q, k, v, g: [B, T, H, K] of seeded normal values. */
function inputs(be: Backend, B: number, T: number, H: number, K: number, seed: number): Inputs {
  const rng = new Rng(seed);
  const shape = [B, T, H, K];
  const [q, k, v] = [0, 1, 2].map(() => randomTensor(be, rng, shape, true)) as [Tensor, Tensor, Tensor];
  return { q, k, v, g: randomTensor(be, rng, shape) };
}

function dispose(x: Inputs): void {
  for (const t of [x.q, x.k, x.v, x.g]) t.dispose();
}

function forward(x: Inputs, algorithm: AttentionAlgorithm): void {
  noGrad(() => tidy(() => void causalAttention(x.q, x.k, x.v, { algorithm })));
}

/** One forward + backward; the gradients are dropped again. */
function forwardBackward(x: Inputs, algorithm: AttentionAlgorithm): void {
  tidy(() => backward(causalAttention(x.q, x.k, x.v, { algorithm }), x.g));
  for (const t of [x.q, x.k, x.v]) {
    t.grad?.dispose();
    t.grad = null;
  }
}

/** o, dq, dk, dv of one forward + backward. */
function outputs(x: Inputs, algorithm: AttentionAlgorithm): Float32Array[] {
  const o = tidy(() => {
    const out = causalAttention(x.q, x.k, x.v, { algorithm });
    backward(out, x.g);
    return out.data() as Float32Array;
  });
  const grads = [x.q, x.k, x.v].map((t) => {
    const g = t.grad!.data() as Float32Array;
    t.grad!.dispose();
    t.grad = null;
    return g;
  });
  return [o, ...grads];
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

/** Native flash and naive against each other and the reference, on a shape spanning several tiles. */
function validate(): BenchRecord[] {
  const [B, T, H, K] = [2, 150, 3, 64];
  const nat = inputs(getBackend('native'), B, T, H, K, 1);
  const ref = inputs(referenceBackend(), B, T, H, K, 1);
  const native = { naive: outputs(nat, 'naive'), flash: outputs(nat, 'flash') };
  const records: BenchRecord[] = ALGORITHMS.map((algorithm) => ({
    check: `native ${algorithm} vs reference ${algorithm}`,
    max_rel_error: maxRelError(native[algorithm], outputs(ref, algorithm)),
  }));
  records.push({ check: 'native flash vs native naive', max_rel_error: maxRelError(native.flash, native.naive) });
  dispose(nat);
  dispose(ref);
  const bad = records.filter((r) => !((r.max_rel_error as number) <= 1e-5));
  if (bad.length > 0)
    throw new RetnetError(`validation failed: ${bad.map((r) => `${r.check} ${r.max_rel_error}`).join('; ')}`);
  return records;
}

/** Peak tensor bytes of one forward + backward above what the inputs hold. */
function peakBytes(x: Inputs, algorithm: AttentionAlgorithm): number {
  const be = x.q.backend;
  const base = be.memory.current;
  be.memory.resetPeak();
  forwardBackward(x, algorithm);
  return be.memory.peak - base;
}

async function timeSequences(
  B: number,
  T: number,
  H: number,
  K: number,
  timing: Partial<TimingOptions>,
): Promise<BenchRecord[]> {
  const x = inputs(getBackend('native'), B, T, H, K, 2);
  const before = cpuCounters();
  const fwd = await measureEach(
    ALGORITHMS.map((a) => batchOf(() => forward(x, a))),
    timing,
  );
  const fwdBwd = await measureEach(
    ALGORITHMS.map((a) => batchOf(() => forwardBackward(x, a))),
    timing,
  );
  const load = otherLoad(before, cpuCounters());
  const fwdFlops = 2 * B * H * T * T * K;
  const records = ALGORITHMS.map((algorithm, i) => {
    const f = fwd[i]!;
    const fb = fwdBwd[i]!;
    return {
      T,
      algorithm,
      fwd_ms: f.msMin,
      fwd_bwd_ms: fb.msMin,
      fwd_bwd_ms_median: fb.msMedian,
      tokens_per_s: (B * T) / (fb.msMin / 1000),
      fwd_gflops: fwdFlops / (f.msMin * 1e6),
      fwd_bwd_gflops: (3.5 * fwdFlops) / (fb.msMin * 1e6),
      peak_mib: peakBytes(x, algorithm) / 2 ** 20,
      other_load: load,
    };
  });
  dispose(x);
  return records;
}

async function timeDecode(
  B: number,
  C: number,
  H: number,
  K: number,
  timing: Partial<TimingOptions>,
): Promise<BenchRecord> {
  const be = getBackend('native');
  const rng = new Rng(3);
  const q = randomTensor(be, rng, [B, H, K]);
  const [kc, vc] = [0, 1].map(() => randomTensor(be, rng, [B, H, C, K])) as [Tensor, Tensor];
  const lengths = new Array<number>(B).fill(C);
  const before = cpuCounters();
  const t = await measure(() => attentionDecode(q, kc, vc, lengths).dispose(), timing);
  const load = otherLoad(before, cpuCounters());
  for (const x of [q, kc, vc]) x.dispose();
  return {
    cache_length: C,
    us_per_step: t.msMin * 1000,
    us_per_step_median: t.msMedian * 1000,
    // Each step reads the whole key and value cache once.
    cache_read_gb_per_s: gbPerS(2 * B * H * C * K * 4, t.msMin),
    other_load: load,
  };
}

export async function attentionSuite(argv: string[]): Promise<void> {
  const cmd = 'bench attention';
  const { values } = parseFlags(cmd, argv, {
    quick: { type: 'boolean' },
    lengths: { type: 'string' },
    batch: { type: 'string' },
    heads: { type: 'string' },
    'head-dim': { type: 'string' },
  });
  const quick = values.quick === true;
  const B = intFlag(cmd, 'batch', values.batch, 1);
  const H = intFlag(cmd, 'heads', values.heads, 8);
  const K = intFlag(cmd, 'head-dim', values['head-dim'], 64);
  const lengths = values.lengths
    ? values.lengths.split(',').map((s) => intFlag(cmd, 'lengths', s, 0))
    : quick
      ? [256, 512, 1024]
      : [256, 512, 1024, 2048, 4096];
  const timing: Partial<TimingOptions> = quick
    ? { warmup: 1, minTimeMs: 200, minSamples: 3 }
    : { warmup: 1, minTimeMs: 1000, minSamples: 5 };

  const checks = validate();
  printTable('validation (B=2 T=150 H=3 K=64, float32; o, dq, dk, dv)', checks, [
    { key: 'check' },
    { key: 'max_rel_error', digits: 9 },
  ]);

  const sequences: BenchRecord[] = [];
  for (const T of lengths) sequences.push(...(await timeSequences(B, T, H, K, timing)));
  printTable(`causal attention, native, B=${B} H=${H} K=${K}, ${threadCount()} threads (times: minimum)`, sequences, [
    { key: 'T', digits: 0 },
    { key: 'algorithm' },
    { key: 'fwd_ms' },
    { key: 'fwd_bwd_ms' },
    { key: 'fwd_bwd_ms_median', header: 'median' },
    { key: 'tokens_per_s', header: 'tokens/s', digits: 0 },
    { key: 'fwd_gflops', digits: 1 },
    { key: 'fwd_bwd_gflops', digits: 1 },
    { key: 'peak_mib', header: 'peak MiB', digits: 1 },
    { key: 'other_load', digits: 2 },
  ]);

  const decode: BenchRecord[] = [];
  for (const C of lengths) decode.push(await timeDecode(B, C, H, K, timing));
  printTable(`KV-cache decode attention, native, B=${B} H=${H} K=${K}`, decode, [
    { key: 'cache_length', digits: 0 },
    { key: 'us_per_step' },
    { key: 'us_per_step_median', header: 'median' },
    { key: 'cache_read_gb_per_s', digits: 1 },
    { key: 'other_load', digits: 2 },
  ]);

  const shape = { B, H, K, threads: threadCount() };
  const records: BenchRecord[] = [
    ...checks.map((r) => ({ kind: 'validation', ...r })),
    ...sequences.map((r) => ({ kind: 'sequence', ...shape, ...r })),
    ...decode.map((r) => ({ kind: 'decode', ...shape, ...r })),
  ];
  process.stdout.write(`\nwrote ${writeResults('attention', records)}\n`);
}
