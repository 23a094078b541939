// `RETNET_THREADS=N node --import tsx bench/step-turns.ts [--rounds R]`: the cpu device's recurrent step kernel
// (retentionStep) at the budget model's heads (bench/budget.ts: 4 heads, K 256, V 512, 24 layers), batch 1 and 8,
// float32 and float16 states: first validated against the reference backend on an odd shape (each state dtype), then
// timed, one call stepping all 24 layers' states (as a decode step does: the states do not fit a cache), in turns with
// a streaming read of as many bytes as the states read and write (bench/lib.ts readProbe). Prints ms and GB/s of
// state read + written. To compare two builds, run it in alternating processes with RETNET_ADDON naming each build's
// retnet_cpu.node (its avx2/ build beside it): two builds loaded into one process spin their worker pools against
// each other (issue 13, stop 30), so their figures there are not the kernels'.

import { parseArgs } from 'node:util';

import { cpuBackend, referenceBackend, threadCount } from '../src/backend/index.js';
import { kernels } from '../src/backend/kernels.js';
import { retentionGammas } from '../src/backend/reference/retention-math.js';
import { encoded } from '../src/tensor/dtype.js';
import { Rng } from '../src/tensor/random.js';
import { type Batch, cpuCounters, describeMachine, measureEach, otherLoad, printTable, readProbe } from './lib.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
  },
});
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1)
  throw new Error(`step-turns: --rounds takes a whole number, got ${values.rounds}`);
const threads = threadCount();
const be = cpuBackend();
if (!be) throw new Error('step-turns: the cpu device did not load');

type StepFn = (...args: unknown[]) => void;
const retentionStep = (be.addon as unknown as { retentionStep: StepFn }).retentionStep;

// ---- validation: the native kernel against the reference, one odd shape per state dtype ----
{
  const ref = referenceBackend();
  const rng = new Rng(3);
  const [B, H, K, V] = [3, 2, 37, 45];
  const draw = (n: number) => Array.from({ length: n }, () => rng.normal() * 0.3);
  for (const dtype of ['float32', 'float16'] as const) {
    const init = draw(B * H * K * V);
    const [q, k, v] = [draw(B * H * K), draw(B * H * K), draw(B * H * V)];
    const outs = [ref, be].map((d) => {
      const s = d.fromData(init, [B, H, K, V], dtype);
      const z = d.fromData(new Array<number>(B * H).fill(2), [B, H], 'float32');
      const t = (x: number[], n: number) => d.fromData(x, [B, H, n], 'float32');
      const o = kernels(d, 'float32').retentionStep(t(q, K), t(k, K), t(v, V), s, z, retentionGammas(H), true);
      return { o: Float32Array.from(o.data()), s: Float32Array.from(s.data()) };
    });
    const worst = (a: Float32Array, b: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);
    const [eo, es] = [worst(outs[0]!.o, outs[1]!.o), worst(outs[0]!.s, outs[1]!.s)];
    // A float16 state: one unit (2^-10 of an element's scale, here < 2) where the two sums round apart.
    const tol = dtype === 'float16' ? 2 ** -9 : 1e-5;
    if (!(eo < 1e-4 * 4 && es < tol)) throw new Error(`step-turns: ${dtype} state off the reference: o ${eo}, S ${es}`);
    process.stdout.write(
      `validated (${dtype} state, B ${B} H ${H} K ${K} V ${V}): o within ${eo.toExponential(1)}, S ${es.toExponential(1)}\n`,
    );
  }
}

// ---- timing ----
const [H, K, V, L] = [4, 256, 512, 24];
const gammas = Float64Array.from(retentionGammas(H));
const rows: Record<string, unknown>[] = [];
for (const dtype of ['float32', 'float16'] as const)
  for (const B of [1, 8]) {
    const n = B * H * K * V;
    const rng = new Rng(B);
    const fill = (a: Float32Array, s: number) => a.forEach((_, i) => (a[i] = rng.normal() * s));
    const states = Array.from({ length: L }, () => {
      const w = new Float32Array(n);
      fill(w, K ** -0.5);
      return dtype === 'float32' ? w : encoded('float16', w, [n]);
    });
    const scales = Array.from({ length: L }, () => new Float32Array(B * H).fill(100));
    const [q, k] = [new Float32Array(B * H * K), new Float32Array(B * H * K)].map((a) => (fill(a, 1), a));
    const v = new Float32Array(B * H * V);
    fill(v, 1);
    const o = new Float32Array(B * H * V);
    const step =
      (fn: StepFn): Batch =>
      (calls) => {
        const t0 = performance.now();
        for (let c = 0; c < calls; c++)
          for (let l = 0; l < L; l++) fn(q, k, v, gammas, states[l], scales[l], o, B, H, K, V, true);
        return performance.now() - t0;
      };
    const stateBytes = L * n * (dtype === 'float32' ? 4 : 2);
    const probe = readProbe(2 * stateBytes, 'step-turns');
    const variants: [string, Batch][] = [
      ['step', step(retentionStep)],
      ['read', probe.batch(threads)],
    ];
    for (let r = 0; r < rounds; r++) {
      const before = cpuCounters();
      const order = variants.map((_, i) => variants[(i + r) % variants.length]!);
      const t = await measureEach(
        order.map(([, b]) => b),
        { warmup: 1, minTimeMs: 1500, minSamples: 5, sampleTargetMs: 50 },
      );
      const load = otherLoad(before, cpuCounters());
      order.forEach(([name], i) =>
        rows.push({
          state: dtype,
          batch: B,
          round: r,
          variant: name,
          ms: t[i]!.msMedian,
          ms_best: t[i]!.msMin,
          gb_per_s: (2 * stateBytes) / t[i]!.msMin / 1e6,
          other_load: load,
        }),
      );
    }
  }
printTable(
  `retentionStep over ${L} layers' states (H ${H}, K ${K}, V ${V}), ${threads} threads; GB/s of state read + written from best times; ${describeMachine().cpu}`,
  rows,
  [
    { key: 'state' },
    { key: 'batch', digits: 0 },
    { key: 'round', digits: 0 },
    { key: 'variant' },
    { key: 'ms', digits: 3 },
    { key: 'ms_best', digits: 3 },
    { key: 'gb_per_s', digits: 1 },
    { key: 'other_load', digits: 2 },
  ],
);
