// `npm run bench -- gemm [--quick] [--sizes 256,1024]`: the engine against OpenBLAS called directly.
//
// - GEMM GFLOP/s for square n x n x n products through our `matmul` op (in noGrad) and through the bare addon call
//   into a preallocated output, against cblas_sgemm called from C (bench/gemm_direct.c: same threads, same inputs).
//   The C harness runs as a child process that takes its batches in turn with ours (bench/lib.ts `measureEach`), so
//   load from other processes falls on both sides alike. The ratio of interest is op / direct.
// - Per-call overhead of tiny ops in µs, output allocation and dispose included, and of the bare addon calls.
// - Memory bandwidth of a 256 MiB copy through our kernels against memcpy in C, in GB/s counting bytes read plus
//   bytes written.
// Every figure comes with `other_load`, the share of the machine's CPU that other processes used meanwhile.
// When OPENBLAS_CORETYPE is set, a second pass runs in a child process with it unset (OpenBLAS then picks its kernels
// for the actual CPU); both passes are reported, labelled.

import { type ChildProcessByStdio, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';

import { noGrad } from '../src/autograd/tape.js';
import { packageRoot } from '../src/backend/cpu/load.js';
import { getBackend } from '../src/backend/index.js';
import type { CpuDevice } from '../src/backend/cpu/device.js';
import { BINARY_OP } from '../src/backend/cpu/addon.js';
import { kernels } from '../src/backend/kernels.js';
import { add, matmul, scale, tensor } from '../src/ops/index.js';
import type { Tensor } from '../src/tensor/tensor.js';
import {
  type Batch,
  type BenchRecord,
  type Timing,
  type TimingOptions,
  batchOf,
  childPass,
  cpuCounters,
  describeMachine,
  gbPerS,
  gemmGflops,
  measureEach,
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
/** Above this share of the CPU used by other processes, the report says the machine was busy. */
const BUSY_LOAD = 0.1;

interface Settings {
  sizes: number[];
  /** For GEMMs and copies, where variants run in two processes (minTimeMs covers all variants together). */
  gemmTiming: Partial<TimingOptions>;
  /** For the tiny ops. */
  smallTiming: Partial<TimingOptions>;
}

function settings(quick: boolean, sizes: number[] | null): Settings {
  return {
    sizes: sizes ?? (quick ? QUICK_SIZES : ALL_SIZES),
    gemmTiming: quick
      ? { warmup: 1, minTimeMs: 400, minSamples: 4, sampleTargetMs: 20, turnMs: 40, settleMs: 100 }
      : { warmup: 1, minTimeMs: 1500, minSamples: 5, sampleTargetMs: 50, turnMs: 200, settleMs: 100 },
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

async function nextLine(child: ChildProcessByStdio<Writable, Readable, null>, lines: AsyncIterator<string>) {
  const r = await lines.next();
  if (r.done) throw new Error(`gemm: the C harness exited (code ${child.exitCode})`);
  return r.value as string;
}

/** The running C harness: one command line in, one JSON line out. */
class DirectHarness {
  private constructor(
    private readonly child: ChildProcessByStdio<Writable, Readable, null>,
    private readonly lines: AsyncIterator<string>,
    /** The kernel set OpenBLAS chose in the harness (it should match the addon's). */
    readonly blasCore: string,
  ) {}

  static async start(bin: string, threads: number): Promise<DirectHarness> {
    const child = spawn(bin, [String(threads)], { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const info = JSON.parse(await nextLine(child, lines)) as { blas_core: string };
    return new DirectHarness(child, lines, info.blas_core);
  }

  get pid(): number {
    return this.child.pid!;
  }

  private async ask(command: string): Promise<number> {
    this.child.stdin.write(`${command}\n`);
    return (JSON.parse(await nextLine(this.child, this.lines)) as { ms: number }).ms;
  }

  gemm(n: number): Batch {
    return (calls) => this.ask(`gemm ${n} ${calls}`);
  }

  memcpy(bytes: number, chunks: number): Batch {
    return (calls) => this.ask(`memcpy ${bytes} ${chunks} ${calls}`);
  }

  async close(): Promise<void> {
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.stdin.end();
    await exited;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Measurements

const f32 = (be: CpuDevice, t: Tensor) => be.float(t) as Float32Array;

/** The inputs gemm_direct.c uses: small exact values, no denormals. */
function filled(be: CpuDevice, shape: number[]): Tensor {
  const t = be.zeros(shape, 'float32');
  const d = f32(be, t);
  for (let i = 0; i < d.length; i++) d[i] = ((i % 17) - 8) * 0.125;
  return t;
}

function progress(msg: string): void {
  process.stderr.write(`gemm: ${msg}\n`);
}

interface Context {
  be: CpuDevice;
  direct: DirectHarness;
  threads: number;
  pass: string;
  s: Settings;
}

/** Runs measureEach and the machine-load reading around it. */
async function measured(c: Context, batches: Batch[], timing: Partial<TimingOptions>) {
  const before = cpuCounters([c.direct.pid]);
  const timings = await measureEach(batches, timing);
  return { timings, otherLoad: otherLoad(before, cpuCounters([c.direct.pid])) };
}

async function measureGemm(c: Context): Promise<BenchRecord[]> {
  const { be, s } = c;
  const records: BenchRecord[] = [];
  for (const n of s.sizes) {
    progress(`n=${n} (${c.pass})`);
    const a = filled(be, [n, n]);
    const b = filled(be, [n, n]);
    const out = be.zeros([n, n], 'float32');
    const [da, db, dout] = [f32(be, a), f32(be, b), f32(be, out)];
    // direct: cblas_sgemm from C; op: our matmul op (output allocated, validated, disposed); addon: the bare addon
    // call into a preallocated output (what the op costs beyond it is allocation and bookkeeping).
    const { timings, otherLoad } = await measured(
      c,
      [
        c.direct.gemm(n),
        batchOf(() => noGrad(() => matmul(a, b)).dispose()),
        batchOf(() => be.addon.sgemm(false, false, n, n, n, 1, da, 0, n, n * n, db, 0, n, 0, 0, dout, 0, n, n * n, 1)),
      ],
      s.gemmTiming,
    );
    for (const t of [a, b, out]) t.dispose();
    const [direct, op, addon] = timings as [Timing, Timing, Timing];
    const gf = (ms: number) => gemmGflops(n, ms);
    records.push({
      kind: 'gemm',
      pass: c.pass,
      n,
      threads: c.threads,
      direct_gflops: gf(direct.msMedian),
      op_gflops: gf(op.msMedian),
      addon_gflops: gf(addon.msMedian),
      op_ratio: direct.msMedian / op.msMedian,
      addon_ratio: direct.msMedian / addon.msMedian,
      op_ratio_best: direct.msMin / op.msMin,
      direct_gflops_best: gf(direct.msMin),
      op_gflops_best: gf(op.msMin),
      addon_gflops_best: gf(addon.msMin),
      direct_ms_median: direct.msMedian,
      op_ms_median: op.msMedian,
      addon_ms_median: addon.msMedian,
      samples: op.samples,
      other_load: otherLoad,
    });
  }
  return records;
}

async function measureOverhead(c: Context): Promise<BenchRecord[]> {
  const { be } = c;
  const x = tensor([1.5], [1], { backend: be });
  const y = tensor([2.5], [1], { backend: be });
  const m = tensor([1.5], [1, 1], { backend: be });
  const [dx, dy, dout] = [f32(be, x), f32(be, y), new Float32Array(1)];
  const cases: [string, () => void][] = [
    ['tensor([v], [1]) + dispose', () => tensor([1], [1], { backend: be }).dispose()],
    ['add op [1] + [1] (alloc + dispose)', () => add(x, y).dispose()],
    ['scale op [1] (alloc + dispose)', () => scale(x, 2).dispose()],
    ['matmul op [1,1] x [1,1] (alloc + dispose)', () => matmul(m, m).dispose()],
    ['kernel table binary add [1] (alloc + dispose)', () => kernels(be, 'float32').binary('add', x, y).dispose()],
    ['addon.binary add, preallocated (bare call)', () => be.addon.binary(BINARY_OP.add, dx, dy, dout, 1, 1)],
    ['addon.scale, preallocated (bare call)', () => be.addon.scale(dx, dout, 2, 1)],
  ];
  const records: BenchRecord[] = [];
  for (const [what, fn] of cases) {
    const { timings, otherLoad } = await measured(c, [batchOf(() => noGrad(fn))], c.s.smallTiming);
    const t = timings[0]!;
    records.push({
      kind: 'overhead',
      pass: c.pass,
      what,
      us_per_call: t.msMedian * 1e3,
      us_per_call_min: t.msMin * 1e3,
      other_load: otherLoad,
    });
  }
  for (const t of [x, y, m]) t.dispose();
  return records;
}

async function measureBandwidth(c: Context): Promise<BenchRecord[]> {
  const { be, threads } = c;
  progress(`copy ${COPY_MIB} MiB (${c.pass})`);
  const bytes = COPY_MIB * 2 ** 20;
  const len = bytes / 4;
  const blocks = 64;
  const block = len / blocks;
  const src = filled(be, [len]);
  const dst = be.zeros([len], 'float32');
  const cases: [string, Batch][] = [
    [
      `copyBlocks, ${blocks} blocks (${threads} threads)`,
      batchOf(() => kernels(be, 'float32').copyBlocks(src, 0, block, dst, 0, block, blocks, block)),
    ],
    [
      'copyBlocks, 1 block (1 thread)',
      batchOf(() => kernels(be, 'float32').copyBlocks(src, 0, len, dst, 0, len, 1, len)),
    ],
    ['addon.scale, preallocated', batchOf(() => be.addon.scale(f32(be, src), f32(be, dst), 1.5, len))],
    ['scale op (output from the pool)', batchOf(() => noGrad(() => scale(src, 1.5)).dispose())],
    ['C memcpy (1 thread)', c.direct.memcpy(bytes, 1)],
    [`C memcpy, ${blocks} chunks (${threads} threads)`, c.direct.memcpy(bytes, blocks)],
  ];
  const { timings, otherLoad } = await measured(
    c,
    cases.map(([, b]) => b),
    c.s.gemmTiming,
  );
  src.dispose();
  dst.dispose();
  // Every figure counts the bytes read plus the bytes written.
  return cases.map(([what], i) => ({
    kind: 'bandwidth',
    pass: c.pass,
    what,
    mib: COPY_MIB,
    gb_per_s: gbPerS(2 * bytes, timings[i]!.msMedian),
    gb_per_s_best: gbPerS(2 * bytes, timings[i]!.msMin),
    other_load: otherLoad,
  }));
}

async function measurePass(s: Settings): Promise<BenchRecord[]> {
  const be = getBackend('cpu') as CpuDevice;
  const threads = describeMachine().threads;
  const direct = await DirectHarness.start(buildDirect(), threads);
  const c: Context = { be, direct, threads, pass: passLabel(), s };
  try {
    const records = [...(await measureGemm(c)), ...(await measureOverhead(c)), ...(await measureBandwidth(c))];
    const core = be.addon.info().blasCoreType;
    return records.map((r) => ({ ...r, blas_core: core, direct_blas_core: direct.blasCore }));
  } finally {
    await direct.close();
  }
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
      { key: 'addon_gflops', header: 'bare addon' },
      { key: 'direct_gflops', header: 'direct C' },
      { key: 'op_ratio', header: 'op/direct', digits: 3 },
      { key: 'addon_ratio', header: 'addon/direct', digits: 3 },
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
    const loads = records.filter((r) => r.pass === pass && typeof r.other_load === 'number');
    const maxLoad = Math.max(0, ...loads.map((r) => r.other_load as number));
    if (maxLoad > BUSY_LOAD)
      process.stdout.write(
        `note: other processes used up to ${(maxLoad * 100).toFixed(0)}% of the machine's CPU during this pass; ` +
          'absolute figures are below what an idle machine gives\n',
      );
    const addOp = of('overhead').find((r) => (r.what as string).startsWith('add op'));
    if (addOp) {
      const us = addOp.us_per_call as number;
      process.stdout.write(
        `goal add op overhead < ${GOAL_OVERHEAD_US} µs: ${us < GOAL_OVERHEAD_US ? 'met' : 'NOT met'}, ${us.toFixed(3)} µs\n`,
      );
    }
  }
}

export async function gemmSuite(values: {
  quick: boolean;
  sizes: number[] | undefined;
  child: boolean;
}): Promise<void> {
  const s = settings(values.quick, values.sizes ?? null);
  if (values.child) {
    process.stdout.write(`${JSON.stringify(await measurePass(s))}\n`);
    return;
  }
  const records = await measurePass(s);
  if (process.env.OPENBLAS_CORETYPE !== undefined) {
    progress('second pass with OPENBLAS_CORETYPE unset (child process)');
    const args = [...(values.quick ? ['--quick'] : []), ...(values.sizes ? ['--sizes', values.sizes.join(',')] : [])];
    records.push(...childPass('gemm', [...args, '--child'], { OPENBLAS_CORETYPE: undefined }));
  }
  report(records);
  const { path } = writeResults('gemm', records);
  process.stdout.write(`\nwrote ${path}\n`);
}
