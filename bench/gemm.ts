// `npm run bench -- gemm [--quick] [--sizes 256,1024]`: the engine against OpenBLAS called directly.
//
// - GEMM GFLOP/s for square n x n x n products through our `matmul` op (in noGrad), the native backend's matmul
//   kernel, and the bare addon call into a preallocated output, each against cblas_sgemm called from C
//   (bench/gemm_direct.c, same threads, same timing rule, same inputs). The ratio of interest is op / direct.
// - Per-call overhead of tiny ops in µs, output allocation and dispose included, and of the bare addon calls.
// - Memory bandwidth of a 256 MiB copy through our kernels against memcpy in C, in GB/s counting bytes read plus
//   bytes written.
// When OPENBLAS_CORETYPE is set, a second pass runs in a child process with it unset (OpenBLAS then picks its kernels
// for the actual CPU); both passes are reported, labelled.

import { execFileSync } from 'node:child_process';
import { mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

import { intFlag, parseFlags } from '../src/cli/command.js';
import { noGrad } from '../src/autograd/tape.js';
import { packageRoot } from '../src/backend/addon.js';
import { getBackend } from '../src/backend/index.js';
import type { NativeBackend } from '../src/backend/native.js';
import { add, matmul, scale, tensor } from '../src/ops/index.js';
import type { Tensor } from '../src/tensor/tensor.js';
import {
  type BenchRecord,
  type Timing,
  type TimingOptions,
  childPass,
  cpuCounters,
  describeMachine,
  gbPerS,
  gemmGflops,
  measure,
  median,
  otherLoad,
  printTable,
  writeResults,
} from './lib.js';

const ALL_SIZES = [64, 128, 256, 512, 1024, 2048, 4096];
const QUICK_SIZES = [64, 128, 256, 512, 1024];
const COPY_MIB = 256;
/** The goals of issue 2: op GEMM at >= 90% of direct OpenBLAS from n = 256 up; tiny-op overhead under 5 µs. */
const GOAL_RATIO = 0.9;
const GOAL_FROM_N = 256;
const GOAL_OVERHEAD_US = 5;

interface Settings {
  sizes: number[];
  /** GEMM measurements alternate direct and ours this many times. */
  rounds: number;
  gemmTiming: TimingOptions;
  smallTiming: TimingOptions;
}

function settings(quick: boolean, sizes: number[] | null): Settings {
  return {
    sizes: sizes ?? (quick ? QUICK_SIZES : ALL_SIZES),
    rounds: quick ? 2 : 3,
    gemmTiming: quick
      ? { warmup: 1, minTimeMs: 150, minSamples: 3, sampleTargetMs: 10 }
      : { warmup: 1, minTimeMs: 500, minSamples: 3, sampleTargetMs: 20 },
    smallTiming: quick
      ? { warmup: 1000, minTimeMs: 150, minSamples: 5, sampleTargetMs: 10 }
      : { warmup: 10000, minTimeMs: 500, minSamples: 9, sampleTargetMs: 20 },
  };
}

function passLabel(): string {
  const c = process.env.OPENBLAS_CORETYPE;
  return c === undefined ? 'OPENBLAS_CORETYPE unset' : `OPENBLAS_CORETYPE=${c}`;
}

// ---------------------------------------------------------------------------------------------------------------------
// The C harness

/** Compiles bench/gemm_direct.c into build/bench/ (ignored by git) unless the binary is newer than the source. */
function buildDirect(): string {
  const root = packageRoot();
  const src = join(root, 'bench', 'gemm_direct.c');
  const dir = join(root, 'build', 'bench');
  const bin = join(dir, 'gemm_direct');
  let fresh = false;
  try {
    fresh = statSync(bin).mtimeMs > statSync(src).mtimeMs;
  } catch {
    fresh = false;
  }
  if (!fresh) {
    mkdirSync(dir, { recursive: true });
    // The addon finds cblas.h in the same place (binding.gyp).
    const include = '-I/usr/include/x86_64-linux-gnu/openblas-pthread';
    execFileSync('cc', ['-O2', '-fopenmp', include, src, '-o', bin, '-lopenblas'], { stdio: 'inherit' });
  }
  return bin;
}

interface DirectLine {
  kind: 'info' | 'gemm' | 'memcpy';
  blas_core?: string;
  threads?: number;
  n?: number;
  bytes?: number;
  samples?: number;
  ms_median?: number;
  ms_min?: number;
}

function runDirect(bin: string, threads: number, t: TimingOptions, copyMib: number, sizes: number[]): DirectLine[] {
  const args = [threads, t.warmup, t.minTimeMs, t.minSamples, t.sampleTargetMs, copyMib, ...sizes].map(String);
  const out = execFileSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as DirectLine);
}

// ---------------------------------------------------------------------------------------------------------------------
// Measurements through our API

/** The inputs gemm_direct.c uses: small exact values, no denormals. */
function filled(be: NativeBackend, shape: number[]): Tensor {
  const t = be.zeros(shape, 'float32');
  const d = be.f32(t);
  for (let i = 0; i < d.length; i++) d[i] = ((i % 17) - 8) * 0.125;
  return t;
}

function progress(msg: string): void {
  process.stderr.write(`gemm: ${msg}\n`);
}

/** Per-call milliseconds: median and minimum. */
interface Ms {
  median: number;
  min: number;
}

const ms = (t: Timing): Ms => ({ median: t.msMedian, min: t.msMin });

/** One variant over the rounds: the median of the round medians and the overall minimum. */
function combine(rounds: Ms[]): Ms {
  return { median: median(rounds.map((r) => r.median)), min: Math.min(...rounds.map((r) => r.min)) };
}

function measureGemm(be: NativeBackend, bin: string, threads: number, s: Settings, pass: string): BenchRecord[] {
  const records: BenchRecord[] = [];
  for (const n of s.sizes) {
    progress(`n=${n} (${pass})`);
    const a = filled(be, [n, n]);
    const b = filled(be, [n, n]);
    const c = be.zeros([n, n], 'float32');
    const [da, db, dc] = [be.f32(a), be.f32(b), be.f32(c)];
    // direct: cblas_sgemm from C; op: the matmul op; backend: its kernel; addon: the bare call, preallocated output.
    const variants: (() => Ms)[] = [
      () => {
        const l = runDirect(bin, threads, s.gemmTiming, 0, [n]).find((l) => l.kind === 'gemm')!;
        return { median: l.ms_median!, min: l.ms_min! };
      },
      () => ms(noGrad(() => measure(() => matmul(a, b).dispose(), s.gemmTiming))),
      () => ms(measure(() => be.matmul(a, b, false, false).dispose(), s.gemmTiming)),
      () =>
        ms(
          measure(
            () => be.addon.sgemm(false, false, n, n, n, 1, da, 0, n, n * n, db, 0, n, 0, 0, dc, 0, n, n * n, 1),
            s.gemmTiming,
          ),
        ),
    ];
    // Rounds alternate the variants, so that a burst of load from another process does not fall on one side only.
    const rounds: Ms[][] = variants.map(() => []);
    const before = cpuCounters();
    for (let r = 0; r < s.rounds; r++) variants.forEach((run, v) => rounds[v]!.push(run()));
    const load = otherLoad(before, cpuCounters());
    for (const t of [a, b, c]) t.dispose();
    const [direct, op, kernel, addon] = rounds.map(combine) as [Ms, Ms, Ms, Ms];
    const gf = (ms: number) => gemmGflops(n, ms);
    records.push({
      kind: 'gemm',
      pass,
      n,
      threads,
      rounds: s.rounds,
      direct_gflops: gf(direct.median),
      op_gflops: gf(op.median),
      backend_gflops: gf(kernel.median),
      addon_gflops: gf(addon.median),
      op_ratio: direct.median / op.median,
      backend_ratio: direct.median / kernel.median,
      addon_ratio: direct.median / addon.median,
      direct_gflops_best: gf(direct.min),
      op_gflops_best: gf(op.min),
      backend_gflops_best: gf(kernel.min),
      addon_gflops_best: gf(addon.min),
      op_ratio_best: direct.min / op.min,
      direct_ms_median: direct.median,
      op_ms_median: op.median,
      backend_ms_median: kernel.median,
      addon_ms_median: addon.median,
      other_load: load,
    });
  }
  return records;
}

function measureOverhead(be: NativeBackend, s: Settings, pass: string): BenchRecord[] {
  const x = tensor([1.5], [1], { backend: be });
  const y = tensor([2.5], [1], { backend: be });
  const m = tensor([1.5], [1, 1], { backend: be });
  const [dx, dy, dout] = [be.f32(x), be.f32(y), new Float32Array(1)];
  const cases: [string, () => void][] = [
    ['tensor([v], [1]) + dispose', () => tensor([1], [1], { backend: be }).dispose()],
    ['add op [1] + [1] (alloc + dispose)', () => add(x, y).dispose()],
    ['scale op [1] (alloc + dispose)', () => scale(x, 2).dispose()],
    ['matmul op [1,1] x [1,1] (alloc + dispose)', () => matmul(m, m).dispose()],
    ['backend.binary add [1] (alloc + dispose)', () => be.binary('add', x, y).dispose()],
    ['addon.binary add, preallocated (bare call)', () => be.addon.binary(0, dx, dy, dout, 1, 1)],
    ['addon.scale, preallocated (bare call)', () => be.addon.scale(dx, dout, 2, 1)],
  ];
  const records = noGrad(() =>
    cases.map(([what, fn]): BenchRecord => {
      const before = cpuCounters();
      const t = measure(fn, s.smallTiming);
      const load = otherLoad(before, cpuCounters());
      return {
        kind: 'overhead',
        pass,
        what,
        us_per_call: t.msMedian * 1e3,
        us_per_call_min: t.msMin * 1e3,
        other_load: load,
      };
    }),
  );
  for (const t of [x, y, m]) t.dispose();
  return records;
}

function measureBandwidth(be: NativeBackend, bin: string, threads: number, s: Settings, pass: string): BenchRecord[] {
  progress(`copy ${COPY_MIB} MiB (${pass})`);
  const bytes = COPY_MIB * 2 ** 20;
  const len = bytes / 4;
  const blocks = 64;
  const src = filled(be, [len]);
  const dst = be.zeros([len], 'float32');
  // Every figure counts the bytes read plus the bytes written.
  const moved = 2 * bytes;
  const before = cpuCounters();
  const record = (what: string, ms: number, best: number): BenchRecord => ({
    kind: 'bandwidth',
    pass,
    what,
    mib: COPY_MIB,
    gb_per_s: gbPerS(moved, ms),
    gb_per_s_best: gbPerS(moved, best),
  });
  const t = s.gemmTiming;
  const records: BenchRecord[] = [];
  let m = measure(() => be.copyBlocks(src, 0, len / blocks, dst, 0, len / blocks, blocks, len / blocks), t);
  records.push(record(`copyBlocks, ${blocks} blocks (${threads} threads)`, m.msMedian, m.msMin));
  m = measure(() => be.copyBlocks(src, 0, len, dst, 0, len, 1, len), t);
  records.push(record('copyBlocks, 1 block (1 thread)', m.msMedian, m.msMin));
  m = measure(() => be.addon.scale(be.f32(src), be.f32(dst), 1.5, len), t);
  records.push(record('addon.scale, preallocated', m.msMedian, m.msMin));
  m = noGrad(() => measure(() => scale(src, 1.5).dispose(), t));
  records.push(record('scale op (allocates the output)', m.msMedian, m.msMin));
  src.dispose();
  dst.dispose();
  for (const l of runDirect(bin, threads, t, COPY_MIB, []))
    if (l.kind === 'memcpy') {
      const what = l.threads === 1 ? 'C memcpy (1 thread)' : `C memcpy, ${blocks} chunks (${l.threads} threads)`;
      records.push(record(what, l.ms_median!, l.ms_min!));
    }
  const load = otherLoad(before, cpuCounters());
  return records.map((r) => ({ ...r, other_load: load }));
}

function measurePass(s: Settings): BenchRecord[] {
  const be = getBackend('native') as NativeBackend;
  const bin = buildDirect();
  const pass = passLabel();
  const threads = describeMachine().threads;
  const core = be.addon.info().blasCoreType;
  const records = [
    ...measureGemm(be, bin, threads, s, pass),
    ...measureOverhead(be, s, pass),
    ...measureBandwidth(be, bin, threads, s, pass),
  ];
  return records.map((r) => ({ ...r, blas_core: core }));
}

// ---------------------------------------------------------------------------------------------------------------------
// Report

function report(records: BenchRecord[]): void {
  const passes = [...new Set(records.map((r) => r.pass as string))];
  for (const pass of passes) {
    const of = (kind: string) => records.filter((r) => r.pass === pass && r.kind === kind);
    const core = of('gemm')[0]?.blas_core ?? of('overhead')[0]?.blas_core;
    const title = `${pass} (OpenBLAS core ${core})`;
    printTable(`GEMM, square n x n x n, fp32, ${title}; GFLOP/s from the median time`, of('gemm'), [
      { key: 'n', digits: 0 },
      { key: 'op_gflops', header: 'ours op' },
      { key: 'backend_gflops', header: 'backend' },
      { key: 'addon_gflops', header: 'addon' },
      { key: 'direct_gflops', header: 'direct C' },
      { key: 'op_ratio', header: 'op/direct', digits: 3 },
      { key: 'backend_ratio', header: 'backend/direct', digits: 3 },
      { key: 'op_ratio_best', header: 'op/direct (best)', digits: 3 },
      { key: 'other_load', header: 'other load', digits: 2 },
    ]);
    printTable(`Per-call overhead, ${title}`, of('overhead'), [
      { key: 'what' },
      { key: 'us_per_call', header: 'µs (median)', digits: 3 },
      { key: 'us_per_call_min', header: 'µs (min)', digits: 3 },
      { key: 'other_load', header: 'other load', digits: 2 },
    ]);
    printTable(`Bandwidth, ${COPY_MIB} MiB, bytes read + written, ${title}`, of('bandwidth'), [
      { key: 'what' },
      { key: 'gb_per_s', header: 'GB/s (median)' },
      { key: 'gb_per_s_best', header: 'GB/s (best)' },
      { key: 'other_load', header: 'other load', digits: 2 },
    ]);
    const goal = of('gemm').filter((r) => (r.n as number) >= GOAL_FROM_N);
    for (const [key, label] of [
      ['op_ratio', 'median times'],
      ['op_ratio_best', 'best times'],
    ] as const)
      if (goal.length > 0) {
        const worst = goal.reduce((w, r) => ((r[key] as number) < (w[key] as number) ? r : w));
        const ratio = worst[key] as number;
        process.stdout.write(
          `goal op >= ${GOAL_RATIO * 100}% of direct from n=${GOAL_FROM_N} (${label}): ` +
            `${ratio >= GOAL_RATIO ? 'met' : 'NOT met'}, lowest ${ratio.toFixed(3)} at n=${worst.n}\n`,
        );
      }
    const addOp = of('overhead').find((r) => (r.what as string).startsWith('add op'));
    if (addOp) {
      const us = addOp.us_per_call as number;
      process.stdout.write(
        `goal add op overhead < ${GOAL_OVERHEAD_US} µs: ${us < GOAL_OVERHEAD_US ? 'met' : 'NOT met'}, ${us.toFixed(3)} µs\n`,
      );
    }
  }
}

function parseSizes(value: string | undefined): number[] | null {
  if (value === undefined) return null;
  return value.split(',').map((v) => intFlag('gemm', 'sizes', v, 0, 1, 16384));
}

export async function gemmSuite(argv: string[]): Promise<void> {
  const { values } = parseFlags('gemm', argv, {
    quick: { type: 'boolean' },
    sizes: { type: 'string' },
    // Internal: measure one pass and print its records as JSON (the parent's second pass).
    child: { type: 'boolean' },
  });
  const s = settings(values.quick ?? false, parseSizes(values.sizes));
  if (values.child) {
    process.stdout.write(`${JSON.stringify(measurePass(s))}\n`);
    return;
  }
  const records = measurePass(s);
  if (process.env.OPENBLAS_CORETYPE !== undefined) {
    progress('second pass with OPENBLAS_CORETYPE unset (child process)');
    records.push(...childPass('gemm', [...argv, '--child'], { OPENBLAS_CORETYPE: undefined }));
  }
  report(records);
  const path = writeResults('gemm', records);
  process.stdout.write(`\nwrote ${path}\n`);
}
