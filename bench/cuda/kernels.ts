// Timings of the cuda device's kernels (bench/cuda/NOTES.md has the FLOP and byte counts and each version's times):
// GEMM ceilings (float32, TF32, bfloat16), a device copy, chunkwise retention forward + backward, flash attention forward +
// backward and the recurrent step, at the shapes of the peer run (bench/cuda/peer.py). Every figure is the median
// of the repeats after a warm-up; each repeat is synchronised (the kernels are asynchronous).
//   node --import tsx bench/cuda/kernels.ts [--out FILE] [--quick] [--only ceilings,sequence,step,product]
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

import { getBackend } from '../../src/backend/index.js';
import { kernels } from '../../src/backend/kernels.js';
import { retentionGammas } from '../../src/backend/reference/retention-math.js';
import type { CudaDevice } from '../../src/backend/cuda/device.js';
import { Rng } from '../../src/tensor/random.js';
import type { Tensor } from '../../src/tensor/tensor.js';

const args = process.argv.slice(2);
const outPath = args.includes('--out') ? args[args.indexOf('--out') + 1]! : null;
const quick = args.includes('--quick');
// --only: the sections to run (all without it).
const only = args.includes('--only') ? args[args.indexOf('--only') + 1]!.split(',') : null;
const runs = (section: string) => only === null || only.includes(section);
// --tc [N]: of the sequence kernels, only the tensor-core retention ones at shape N (default 0, the first; for ncu:
// scripts/cuda device-run.sh tcprof).
const tcOnly = args.includes('--tc');
const tcShape =
  tcOnly && /^\d+$/.test(args[args.indexOf('--tc') + 1] ?? '') ? Number(args[args.indexOf('--tc') + 1]) : 0;
const be = getBackend('cuda') as CudaDevice;
const kern = kernels(be, 'float32');
const rng = new Rng(1);
const records: Record<string, unknown>[] = [];

function random(shape: number[], scale = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = scale * rng.normal();
  return be.fromData(d, shape, 'float32');
}

/** Median milliseconds of fn, each repeat synchronised; `reps` after `warm` warm-ups. */
function time(fn: () => void, reps = quick ? 3 : 10, warm = 2): number {
  for (let i = 0; i < warm; i++) fn();
  be.addon.synchronize();
  const ms: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    be.addon.synchronize();
    ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  return ms[Math.floor(ms.length / 2)]!;
}

function record(r: Record<string, unknown>): void {
  records.push(r);
  process.stdout.write(`${JSON.stringify(r)}\n`);
}

const info = be.info();
process.stdout.write(`${JSON.stringify(info)}\n`);

// Ceilings.
if (runs('ceilings')) {
  const n = quick ? 2048 : 8192;
  const a = random([n, n]);
  const b = random([n, n]);
  for (const tf32 of [false, true]) {
    be.tf32 = tf32;
    const ms = time(() => kern.matmul(a, b, false, false).dispose());
    record({ what: tf32 ? 'gemm_tf32' : 'gemm_fp32', n, ms_median: ms, tflops: (2 * n ** 3) / ms / 1e9 });
  }
  be.tf32 = false;
  // bfloat16 operands on tensor cores, float32 accumulation (the products of bfloat16 weights).
  const [a16, b16] = [kern.cast(a, 'bfloat16'), kern.cast(b, 'bfloat16')];
  const ms16 = time(() => kernels(be, 'bfloat16').matmul(a16, b16, false, false).dispose());
  record({ what: 'gemm_bf16', n, ms_median: ms16, tflops: (2 * n ** 3) / ms16 / 1e9 });
  for (const t of [a, b, a16, b16]) t.dispose();
  const x = be.empty([2 ** 29], 'float32');
  const y = be.empty([2 ** 29], 'float32');
  const bytes = 2 * 4 * 2 ** 29;
  const ms = time(() => be.addon.copy(be.ptr(y), be.ptr(x), 4 * 2 ** 29));
  record({ what: 'copy', bytes, ms_median: ms, gb_per_s: bytes / ms / 1e6 });
  x.dispose();
  y.dispose();
}

// Sequence kernels at the peer shapes: q, k, v, dO [B, T, H, D].
const shapes = quick
  ? [{ B: 1, H: 4, T: 1024, D: 64 }]
  : [
      { B: 2, H: 16, T: 8192, D: 128 },
      { B: 1, H: 16, T: 16384, D: 128 },
    ];
for (const { B, H, T, D } of runs('sequence') ? (tcOnly ? shapes.slice(tcShape, tcShape + 1) : shapes) : []) {
  const q = random([B, T, H, D], 0.1);
  const k = random([B, T, H, D], 0.1);
  const v = random([B, T, H, D]);
  const g = random([B, T, H, D]);
  const gammas = retentionGammas(H);
  const C = 64;
  // float32 kernels, then the bf16 tensor-core ones (be.bf16Retention), each normalised (torchscale) and not (fla's
  // chunk_retention, the peer); the tensor-core outputs' relative error ‖x − x₃₂‖ / ‖x‖ against the float32 kernels.
  const rel = (a: ArrayLike<number>, b: ArrayLike<number>) => {
    let num = 0;
    let den = 0;
    for (let i = 0; i < b.length; i++) {
      num += (a[i]! - b[i]!) ** 2;
      den += b[i]! ** 2;
    }
    return Math.sqrt(num / den);
  };
  for (const normalize of [true, false]) {
    let base: Record<'o' | 'dq' | 'dv', ArrayLike<number>> | null = null;
    for (const tc of tcOnly ? [true] : [false, true]) {
      be.bf16Retention = tc;
      const run = { chunkSize: C, normalize, initialState: null, segments: null, returnFinalState: false };
      const fwd = time(() => {
        const { o, r } = kern.retentionForward('chunkwise', q, k, v, gammas, run);
        o.dispose();
        r.dispose();
      });
      const { o, r } = kern.retentionForward('chunkwise', q, k, v, gammas, run);
      const bwd = time(() => {
        const d = kern.retentionBackward('chunkwise', q, k, v, gammas, r, g, C);
        d.dq.dispose();
        d.dk.dispose();
        d.dv.dispose();
      });
      const d = kern.retentionBackward('chunkwise', q, k, v, gammas, r, g, C);
      const got = { o: o.data(), dq: d.dq.data(), dv: d.dv.data() };
      for (const t of [o, r, d.dq, d.dk, d.dv]) t.dispose();
      const err = base
        ? { rel_err_o: rel(got.o, base.o), rel_err_dq: rel(got.dq, base.dq), rel_err_dv: rel(got.dv, base.dv) }
        : {};
      base ??= got;
      record({
        what: 'retention_chunkwise',
        dtype: tc ? 'bf16 tensor cores (float32 in/out)' : 'float32',
        normalize,
        B,
        H,
        T,
        D,
        C,
        fwd_ms: fwd,
        bwd_ms: bwd,
        fwd_bwd_ms: fwd + bwd,
        ...err,
      });
    }
  }
  be.bf16Retention = false;
  if (tcOnly) {
    for (const t of [q, k, v, g]) t.dispose();
    continue;
  }
  const afwd = time(
    () => {
      const f = kern.attentionForward('flash', q, k, v);
      f.o.dispose();
      f.stats.dispose();
    },
    quick ? 3 : 3,
    1,
  );
  const f = kern.attentionForward('flash', q, k, v);
  const abwd = time(
    () => {
      const d = kern.attentionBackward('flash', q, k, v, f.o, f.stats, g);
      d.dq.dispose();
      d.dk.dispose();
      d.dv.dispose();
    },
    quick ? 3 : 3,
    1,
  );
  f.o.dispose();
  f.stats.dispose();
  record({
    what: 'attention_flash',
    dtype: 'float32',
    B,
    H,
    T,
    D,
    fwd_ms: afwd,
    bwd_ms: abwd,
    fwd_bwd_ms: afwd + abwd,
  });
  for (const t of [q, k, v, g]) t.dispose();
}

// The recurrent step, batched over rows: bytes = state read + written (the step's floor), B·H·K·V·4·2. K = V = 256,
// and the 6.7B model's heads (K 256, V 432) up to a batch whose state (0.9 GB) is 15x the L2.
for (const [Bd, V] of runs('step')
  ? ([
      [1, 256],
      [8, 256],
      [1, 432],
      [8, 432],
      [64, 432],
    ] as const)
  : []) {
  const [H, K] = [16, 256];
  const state = random([Bd, H, K, V], 0.1);
  const scale = be.zeros([Bd, H], 'float32');
  const q = random([Bd, H, K]);
  const k = random([Bd, H, K]);
  const v = random([Bd, H, V]);
  const gammas = retentionGammas(H);
  const ms = time(() => kern.retentionStep(q, k, v, state, scale, gammas, true).dispose(), quick ? 5 : 50, 5);
  const bytes = Bd * H * K * V * 4 * 2;
  record({ what: 'retention_step', B: Bd, H, K, V, ms_median: ms, gb_per_s: bytes / ms / 1e6 });
}

// A decode step's weight product, x [M, 4096] float32 · W [16384, 4096]ᵀ bf16 (128 MB, twice the L2): the gemv16
// kernel (what linear() takes for M <= 8) against cuBLAS on bf16 x (the cast excluded). bytes = W's.
if (runs('product')) {
  const [N, K] = [16384, 4096];
  const w = kern.cast(random([N, K], 0.02), 'bfloat16');
  const k16 = kernels(be, 'bfloat16');
  for (const M of [1, 2, 4, 5, 8]) {
    const x = random([M, K]);
    const x16 = kern.cast(x, 'bfloat16');
    const bytes = N * K * 2;
    const msGemv = time(() => k16.matmul(x, w, false, true).dispose(), quick ? 5 : 50, 5);
    const msBlas = time(() => k16.matmul(x16, w, false, true).dispose(), quick ? 5 : 50, 5);
    record({ what: 'weight_product', M, N, K, kernel: 'gemv16', ms_median: msGemv, gb_per_s: bytes / msGemv / 1e6 });
    record({ what: 'weight_product', M, N, K, kernel: 'cublas', ms_median: msBlas, gb_per_s: bytes / msBlas / 1e6 });
    x.dispose();
    x16.dispose();
  }
  w.dispose();
}

record({ what: 'device_memory', ...be.deviceMemory() });
if (outPath) writeFileSync(outPath, JSON.stringify({ info, records }, null, 1));
