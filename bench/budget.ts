// `retnet bench budget [--quick] [--budget GiB] [--weights FORMAT]`: decode throughput at a fixed memory budget, the
// paper's Figure 6 regime (there: 6.7B in fp16 on one 80 GB GPU at 8k, where the KV cache, not the weights, decides
// how many sequences fit). A parameter-matched pair large enough that weights matter (RetNet d = 1024, 24 layers,
// 4 heads, dv = ffn = 2048: 357M parameters; the Transformer matched by matchRetNetShape), weights in `--weights`
// (bf16 by default: src/quant), decode state or KV cache float32.
//
// For each architecture and context length (2k, 8k, 16k), the largest batch whose decode memory fits the budget:
// decode memory = weights + the decode state of B sequences + the step's workspace, all from the engine's accounting
// (the state of one sequence and the workspace at batch 1 and 2, extrapolated linearly in B, pick the batch; the
// chosen batch is then built and its memory measured again). That point is timed: tokens/s = B / step time,
// per-token latency = the step time (every row gets one token per step). Then latency against the batch (1, 2, 4, 8)
// at 8k, each batch that fits the budget. Contexts are synthetic as in `bench decode` (a state or cache of the shape
// a prefill leaves, random values; every step decodes at exactly that length).
//
// Points take turns (measureEach) wherever their states fit the budget together (turnGroups): RetNet's
// largest-batch points share one state (its size does not depend on the length), and its batch sweep's states fit
// beside each other; a Transformer's largest batches fill the budget one at a time, so they run one after another.
// Timing in turns makes the flatness across lengths and the growth across batches ratios of one run, which the
// machine's drift (its sgemm read 85-115 GFLOP/s from point to point at no other load, 2026-12-02) falls on alike.
// Each group records the other processes' load and, in `timed_in_turns`, the points (batch@length) it timed together.
//
// Each point also carries this machine's bound for its step, from two ceilings measured in turns with its steps (a
// 1024³ float32 sgemm through the matmul op, and a streaming read of 256 MiB, both with the step's threads):
// compute = the step's FLOPs (2·B per weight of every product, plus the mixer: RetNet's state update and read-out,
// 4·d·dv/H per row and layer; attention over the cache, 4·T·d) / the sgemm rate; memory = the bytes the step must
// move (the stored weights once; RetNet's state read and written back; the Transformer's cache read) / the read rate.
// The bound is the larger of the two (perfect overlap of arithmetic and reads): no implementation on this machine
// steps faster, so the ratio of two bounds is the most this machine allows of a goal stated as a ratio.

import { noGrad } from '../src/autograd/tape.js';
import { cpuBackend, threadCount } from '../src/backend/index.js';
import type { CausalLM, DecodeState } from '../src/models/lm.js';
import { Linear } from '../src/nn/layers.js';
import { matmul } from '../src/ops/index.js';
import { createModel } from '../src/models/registry.js';
import type { RetNetModel, StateFormat } from '../src/models/retnet/model.js';
import { matchRetNetShape } from '../src/models/transformer/config.js';
import type { WeightFormat } from '../src/quant/formats.js';
import { quantizeModel, weightBytes } from '../src/quant/model.js';
import { Rng } from '../src/tensor/random.js';
import { FORM, stepInPlace, stepWorkspace } from './decode.js';
import {
  type BenchRecord,
  type Column,
  type Timing,
  batchOf,
  cpuCounters,
  failOnFailedRecords,
  gemmGflops,
  measureEach,
  otherLoad,
  printTable,
  readProbe,
  suiteResults,
} from './lib.js';
import { markdownTable, sectionMarkdown, updateBenchmarksMd, writePlot } from './report.js';

const MIB = 2 ** 20;
const GIB = 2 ** 30;

type State = DecodeState & { positions: number[] };
export type Synthetic = CausalLM & {
  syntheticState(batch: number, length: number, rng: Rng): State;
  readonly config: { embedDim: number; layers: number; heads: number; valueDim?: number };
};

export interface BudgetSettings {
  /** RetNet's shape; the Transformer is matched to it. */
  shape: { embedDim: number; layers: number; heads: number; valueDim: number; ffnDim: number };
  vocab: number;
  weights: WeightFormat;
  /** RetNet's decode state: float32, or float16 (RetNetModel.stateDType); the Transformer's KV cache stays float32. */
  state: StateFormat;
  budget: number;
  lengths: number[];
  /** Latency against these batch sizes at `batchLength`. */
  batches: number[];
  batchLength: number;
  /** The largest batch tried (bounds the time of a step on a CPU). */
  maxBatch: number;
  samples: number;
  /** The cpu bound's ceilings: an n³ sgemm and a streaming read of this many bytes (see the file comment); none: no bound. */
  ceilings?: { gemmN: number; readBytes: number };
}

export function budgetSettings(
  quick: boolean,
  budgetGiB: number | undefined,
  weights: WeightFormat,
  state: BudgetSettings['state'] = 'f32',
): BudgetSettings {
  const base = quick
    ? {
        shape: { embedDim: 256, layers: 4, heads: 4, valueDim: 512, ffnDim: 512 },
        lengths: [256, 1024],
        batches: [1, 2, 4],
        batchLength: 1024,
        budget: 96 * MIB,
        maxBatch: 64,
        samples: 2,
        ceilings: { gemmN: 512, readBytes: 64 * MIB },
      }
    : {
        shape: { embedDim: 1024, layers: 24, heads: 4, valueDim: 2048, ffnDim: 2048 },
        lengths: [2048, 8192, 16384],
        batches: [1, 2, 4, 8],
        batchLength: 8192,
        budget: 8 * GIB,
        maxBatch: 512,
        samples: 3,
        ceilings: { gemmN: 1024, readBytes: 256 * MIB },
      };
  return {
    ...base,
    vocab: 4096,
    weights,
    state,
    budget: budgetGiB !== undefined ? budgetGiB * GIB : base.budget,
  };
}

function buildModels(s: BudgetSettings): Synthetic[] {
  const r = createModel('retnet', 'base', { vocabSize: s.vocab, ...s.shape }, { seed: 1 });
  const t = createModel('transformer', 'base', { vocabSize: s.vocab, ...matchRetNetShape(s.shape) }, { seed: 1 });
  const models = [r, t] as Synthetic[];
  if (s.weights !== 'f32') for (const m of models) quantizeModel(m, s.weights);
  (r as RetNetModel).setStateFormat(s.state);
  return models;
}

/** Elements and stored bytes of the weights of every product a step makes (each Linear's weight, the head's too). */
function productWeights(model: Synthetic): { elements: number; bytes: number } {
  let elements = 0;
  let bytes = 0;
  for (const [, m] of model.namedModules())
    if (m instanceof Linear) {
      elements += m.weight.size;
      bytes += m.weight.storage.byteLength;
    }
  return { elements, bytes };
}

/** The step's FLOPs and the bytes it must move, for `batch` rows at `length` with a state of `stateBytes`. */
export function stepWork(
  model: Synthetic,
  batch: number,
  length: number,
  stateBytes: number,
): { flops: number; bytes: number } {
  const w = productWeights(model);
  const c = model.config;
  const mixer = model.arch === 'retnet' ? (4 * c.embedDim * c.valueDim!) / c.heads : 4 * length * c.embedDim; // per row, layer
  const flops = batch * (2 * w.elements + c.layers * mixer);
  // RetNet reads its state and writes it back; the Transformer reads its cache (the one new row it writes is noise).
  const bytes = w.bytes + (model.arch === 'retnet' ? 2 : 1) * stateBytes;
  return { flops, bytes };
}

/** The two ceilings of the bound (see the file comment), as batches for measureEach, with their figures. */
function ceilings(c: { gemmN: number; readBytes: number }): {
  batches: [() => void, (calls: number) => number];
  dispose: () => void;
} {
  const be = cpuBackend();
  if (!be) throw new Error('bench budget: the bound needs the cpu device (its addon did not load)');
  const n = c.gemmN;
  const a = be.zeros([n, n], 'float32');
  const b = be.zeros([n, n], 'float32');
  const read = readProbe(c.readBytes, 'bench budget');
  return {
    batches: [() => noGrad(() => matmul(a, b)).dispose(), read.batch(threadCount())],
    dispose: () => {
      a.dispose();
      b.dispose();
    },
  };
}

/** The bound's fields of a point from the best samples of its ceilings (a ceiling is what the machine can do). */
function cpuBound(
  model: Synthetic,
  batch: number,
  length: number,
  stateBytes: number,
  c: { gemmN: number; readBytes: number },
  gemm: Timing,
  read: Timing,
): BenchRecord {
  const sgemmGflops = gemmGflops(c.gemmN, gemm.msMin);
  const readGbps = c.readBytes / (read.msMin * 1e6);
  const work = stepWork(model, batch, length, stateBytes);
  const computeMs = work.flops / (sgemmGflops * 1e6);
  const memoryMs = work.bytes / (readGbps * 1e6);
  return {
    step_gflop: work.flops / 1e9,
    step_bytes: work.bytes,
    sgemm_gflops: sgemmGflops,
    read_gbps: readGbps,
    compute_bound_ms: computeMs,
    memory_bound_ms: memoryMs,
    bound_ms_per_token: Math.max(computeMs, memoryMs),
    bound_tokens_per_s: (batch * 1000) / Math.max(computeMs, memoryMs),
  };
}

function progress(msg: string): void {
  process.stderr.write(`budget: ${msg}\n`);
}

/** Bytes of a decode state of `batch` sequences at `length`, and the step's workspace on top of it. */
function pointMemory(model: Synthetic, batch: number, length: number): { state: number; workspace: number } {
  const state = noGrad(() => model.syntheticState(batch, length, new Rng(7)));
  try {
    const tokens = Array.from({ length: batch }, (_, i) => (i * 37) % model.vocabSize);
    return { state: state.bytes(), workspace: stepWorkspace(model, state, tokens) };
  } finally {
    state.dispose();
  }
}

/**
 * The largest batch (≤ maxBatch) whose predicted decode memory fits the budget, with that prediction: state and
 * workspace grow linearly in the batch (measured at 1 and 2). 0 when not even one sequence fits.
 */
export function largestBatch(
  weights: number,
  one: { state: number; workspace: number },
  two: { state: number; workspace: number },
  budget: number,
  maxBatch: number,
): { batch: number; predicted: number } {
  const at = (B: number) =>
    weights + one.state + (two.state - one.state) * (B - 1) + one.workspace + (two.workspace - one.workspace) * (B - 1);
  let B = 0;
  while (B < maxBatch && at(B + 1) <= budget) B++;
  return { batch: B, predicted: B > 0 ? at(B) : at(1) };
}

/** A point to time: its batch and length, and the fields of its record known before it is built. */
interface Planned {
  record: BenchRecord;
  batch: number;
  length: number;
  /** The predicted bytes of its state and its step's workspace (linear in the batch: largestBatch). */
  predicted: { state: number; workspace: number };
  /** Step the batch down until the measured memory fits the budget (the largest-batch sweep). */
  shrink: boolean;
}

/**
 * A RetNet state has the same size at every context length (only its positions and its normalisers' values differ,
 * and a step does the same work whatever they hold), so the points of one batch share one state, its positions set
 * to each point's length before each of its steps. A KV cache has a length of its own.
 */
const stateKey = (model: Synthetic, p: Planned) => (model.arch === 'retnet' ? `${p.batch}` : `${p.batch}@${p.length}`);

/**
 * Splits one sweep's points into the groups that take turns: consecutive points join a group while the weights, the
 * group's distinct states and its largest workspace fit the budget together. RetNet's largest-batch points share one
 * state and its batch sweep at 8k (batches 1-8: 720 MiB of states) fits beside its weights, so both take turns; a
 * Transformer's largest-batch caches fill the budget one at a time, so those points run one after another.
 */
function turnGroups(model: Synthetic, weights: number, planned: Planned[], budget: number): Planned[][] {
  const groups: Planned[][] = [];
  for (const p of planned) {
    const group = groups.at(-1);
    const joined = group ? [...group, p] : [p];
    const states = new Map(joined.map((q) => [stateKey(model, q), q.predicted.state]));
    const workspace = Math.max(...joined.map((q) => q.predicted.workspace));
    const memory = weights + [...states.values()].reduce((a, b) => a + b, 0) + workspace;
    if (group && memory <= budget) group.push(p);
    else groups.push([p]);
  }
  return groups;
}

/**
 * Builds the states of a group of points and measures each point's memory (weights + its own state + its step's
 * workspace: what it takes alone). A group with one state and `shrink` steps that state's batch down until the
 * measured memory fits the budget (the prediction is linear, while a KV cache grows in blocks). Then the group's
 * steps take turns with the ceilings of the bound (measureEach), so the machine's drift falls on every point alike.
 */
async function measurePoints(model: Synthetic, s: BudgetSettings, group: Planned[]): Promise<BenchRecord[]> {
  const weights = weightBytes(model);
  const keys = [...new Set(group.map((p) => stateKey(model, p)))];
  const shrink = keys.length === 1 && group.every((p) => p.shrink);
  const tokensOf = (batch: number) => Array.from({ length: batch }, (_, i) => (i * 37) % model.vocabSize);
  const states = new Map<string, State>();
  try {
    let points: { p: Planned; batch: number; state: State; workspace: number }[] = [];
    for (let shift = 0; ; shift++) {
      for (const key of keys) {
        const first = group.find((p) => stateKey(model, p) === key)!;
        states.set(
          key,
          noGrad(() => model.syntheticState(first.batch - shift, first.length, new Rng(7))),
        );
      }
      points = group.map((p) => {
        const batch = p.batch - shift;
        const state = states.get(stateKey(model, p))!;
        state.positions = new Array<number>(batch).fill(p.length);
        return { p, batch, state, workspace: stepWorkspace(model, state, tokensOf(batch)) };
      });
      const over = points.some((x) => weights + x.state.bytes() + x.workspace > s.budget);
      if (!(over && shrink && points[0]!.batch > 1)) break;
      for (const st of states.values()) st.dispose();
      states.clear();
    }
    const steps = points.map(({ p, batch, state }) => {
      const tokens = tokensOf(batch);
      const positions = new Array<number>(batch).fill(p.length);
      return batchOf(() => {
        state.positions = positions;
        stepInPlace(model, state, tokens);
      });
    });
    const ceil = s.ceilings ? ceilings(s.ceilings) : null;
    const before = cpuCounters();
    // One untimed call of each batch first: without it the first point of a run measured 1.21x slower than the
    // same model at the next length (2026-12-02, its sgemm probe 10% slower too), which the flatness goal read.
    const timings = await measureEach(ceil ? [...steps, batchOf(ceil.batches[0]), ceil.batches[1]] : steps, {
      warmup: 1,
      minTimeMs: 0,
      minSamples: s.samples,
      sampleTargetMs: 0,
    }).finally(() => ceil?.dispose());
    const load = otherLoad(before, cpuCounters());
    const [gemm, read] = timings.slice(steps.length);
    const inTurns = points.map((x) => `${x.batch}@${x.p.length}`).join(' ');
    return points.map(({ p, batch, state, workspace }, i) => {
      const t = timings[i]!;
      const memory = weights + state.bytes() + workspace;
      return {
        ...p.record,
        status: memory <= s.budget ? 'ok' : 'over budget',
        batch,
        length: p.length,
        ms_per_token: t.msMedian,
        ms_per_token_min: t.msMin,
        tokens_per_s: (batch * 1000) / t.msMedian,
        tokens_per_s_best: (batch * 1000) / t.msMin,
        weight_bytes: weights,
        state_bytes: state.bytes(),
        step_workspace_bytes: workspace,
        decode_memory_bytes: memory,
        decode_memory_mib: memory / MIB,
        state_mib: state.bytes() / MIB,
        ...(s.ceilings ? cpuBound(model, batch, p.length, state.bytes(), s.ceilings, gemm!, read!) : {}),
        timed_in_turns: inTurns,
        samples: t.samples,
        other_load: load,
      };
    });
  } finally {
    for (const st of states.values()) st.dispose();
  }
}

/**
 * The points of `s` for both models (RetNet first): the pair of `s`, or `given` (bench/cuda/paper.ts's, with states
 * built on the device), which stays the caller's to dispose. Records keep the order of the points (lengths, then
 * batches); a point over the budget is listed, not run.
 */
export async function measureBudget(s: BudgetSettings, given?: Synthetic[]): Promise<BenchRecord[]> {
  const models = given ?? buildModels(s);
  const records: BenchRecord[] = [];
  try {
    for (const model of models) {
      const base: BenchRecord = {
        arch: model.arch,
        form: FORM[model.arch],
        parameters: model.parameterCount(),
        weights: s.weights,
        ...(model.arch === 'retnet' ? { state: s.state } : {}),
        budget_bytes: s.budget,
        context: 'synthetic',
      };
      const weights = weightBytes(model);
      const linear = (one: { state: number; workspace: number }, two: typeof one, B: number) => ({
        state: one.state + (two.state - one.state) * (B - 1),
        workspace: one.workspace + (two.workspace - one.workspace) * (B - 1),
      });
      // The model's points in order (lengths, then batches): a record already (over the budget) or one to time.
      const points: (Planned | BenchRecord)[] = [];
      const largest: Planned[] = [];
      for (const length of s.lengths) {
        const one = pointMemory(model, 1, length);
        const two = pointMemory(model, 2, length);
        const { batch, predicted } = largestBatch(weights, one, two, s.budget, s.maxBatch);
        const record = { ...base, sweep: 'largest batch', predicted_memory_bytes: predicted };
        if (batch === 0) {
          points.push({ ...record, status: 'over budget', batch: 1, length });
          continue;
        }
        largest.push({ record, batch, length, predicted: linear(one, two, batch), shrink: true });
        points.push(largest.at(-1)!);
      }
      const sweep: Planned[] = [];
      const one = pointMemory(model, 1, s.batchLength);
      const two = pointMemory(model, 2, s.batchLength);
      for (const batch of s.batches) {
        const record = { ...base, sweep: 'batch' };
        const predicted = largestBatch(weights, one, two, Infinity, batch).predicted;
        if (predicted > s.budget)
          points.push({
            ...record,
            status: 'over budget',
            batch,
            length: s.batchLength,
            predicted_memory_bytes: predicted,
          });
        else {
          sweep.push({ record, batch, length: s.batchLength, predicted: linear(one, two, batch), shrink: false });
          points.push(sweep.at(-1)!);
        }
      }
      const measured = new Map<Planned, BenchRecord>();
      for (const group of [
        ...turnGroups(model, weights, largest, s.budget),
        ...turnGroups(model, weights, sweep, s.budget),
      ]) {
        progress(`${model.arch}: ${group.map((p) => `batch ${p.batch} at ${p.length}`).join(', ')}, in turns`);
        const rs = await measurePoints(model, s, group);
        group.forEach((p, i) => measured.set(p, rs[i]!));
      }
      for (const p of points) records.push(measured.get(p as Planned) ?? (p as BenchRecord));
    }
  } finally {
    if (!given) for (const m of models) m.dispose();
  }
  return records;
}

// ---------------------------------------------------------------------------------------------------------------------
// Report

const GOAL_THROUGHPUT = 8.4;
const GOAL_MEMORY = 0.3;
const GOAL_FLAT = 0.1;
const GOAL_LATENCY_GROWTH = 1.5;

const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');

/** "; this machine's bound: X× (...)": the ratio a/b of two points' bounds, what sets each, and a's share of its bound. */
function boundNote(a: BenchRecord, b: BenchRecord, of: 'tokens_per_s' | 'ms_per_token'): string {
  if (typeof a.bound_ms_per_token !== 'number' || typeof b.bound_ms_per_token !== 'number') return '';
  const key = of === 'tokens_per_s' ? 'bound_tokens_per_s' : 'bound_ms_per_token';
  const ratio = (a[key] as number) / (b[key] as number);
  const sets = (r: BenchRecord) =>
    `${r.arch} batch ${r.batch}: ${(r.compute_bound_ms as number) >= (r.memory_bound_ms as number) ? 'arithmetic' : 'memory'}`;
  return (
    `; this machine's bound: ${ratio.toFixed(2)}× (${sets(a)}, ${sets(b)}; measured ` +
    `${((a.bound_ms_per_token as number) / (a.ms_per_token as number)).toFixed(2)} and ` +
    `${((b.bound_ms_per_token as number) / (b.ms_per_token as number)).toFixed(2)} of their bounds' speed)`
  );
}

export function findings(records: BenchRecord[], s: BudgetSettings): string[] {
  const out: string[] = [];
  const ok = (r: BenchRecord | undefined): r is BenchRecord => r !== undefined && r.status === 'ok';
  const largest = (arch: string, length: number) =>
    records.find((r) => r.arch === arch && r.sweep === 'largest batch' && r.length === length);
  const L = s.batchLength;
  const [r, t] = [largest('retnet', L), largest('transformer', L)];
  if (ok(r) && ok(t)) {
    const x = (r.tokens_per_s as number) / (t.tokens_per_s as number);
    const xBest = (r.tokens_per_s_best as number) / (t.tokens_per_s_best as number);
    out.push(
      `at ${L} within ${(s.budget / GIB).toFixed(2)} GiB: RetNet decodes batch ${r.batch} at ` +
        `${(r.tokens_per_s as number).toFixed(1)} tokens/s, the Transformer batch ${t.batch} at ` +
        `${(t.tokens_per_s as number).toFixed(1)}: ${x.toFixed(2)}× (${xBest.toFixed(2)}× from best times; goal ≥ ` +
        `${GOAL_THROUGHPUT}×: ${verdict(x >= GOAL_THROUGHPUT)}, ${verdict(xBest >= GOAL_THROUGHPUT)})` +
        boundNote(r, t, 'tokens_per_s'),
    );
  }
  const sweep = (arch: string) => records.filter((x) => x.arch === arch && x.sweep === 'batch' && x.status === 'ok');
  for (const tr of sweep('transformer')) {
    const re = sweep('retnet').find((x) => x.batch === tr.batch);
    if (!re) continue;
    const m = (re.decode_memory_bytes as number) / (tr.decode_memory_bytes as number);
    out.push(
      `at ${L}, batch ${tr.batch}: RetNet's decode memory is ${(m * 100).toFixed(1)}% of the Transformer's ` +
        `(${(re.decode_memory_mib as number).toFixed(0)} vs ${(tr.decode_memory_mib as number).toFixed(0)} MiB; ` +
        `goal ≤ ${GOAL_MEMORY * 100}%: ${verdict(m <= GOAL_MEMORY)})`,
    );
  }
  const rs = s.lengths.map((l) => largest('retnet', l)).filter(ok);
  if (rs.length === s.lengths.length) {
    const spread = (key: string) => {
      const v = rs.map((x) => x[key] as number);
      const mean = v.reduce((a, b) => a + b, 0) / v.length;
      return Math.max(...v.map((x) => Math.abs(x / mean - 1)));
    };
    const [tp, mem] = [spread('tokens_per_s'), spread('decode_memory_bytes')];
    out.push(
      `RetNet from ${s.lengths[0]} to ${s.lengths.at(-1)} at its largest batch: throughput within ±${(tp * 100).toFixed(1)}%, ` +
        `memory within ±${(mem * 100).toFixed(1)}% of their means (goal ±${GOAL_FLAT * 100}%: ` +
        `${verdict(tp <= GOAL_FLAT)}, ${verdict(mem <= GOAL_FLAT)})`,
    );
  }
  for (const arch of ['retnet', 'transformer']) {
    const rows = sweep(arch).sort((a, b) => (a.batch as number) - (b.batch as number));
    if (rows.length < 2) continue;
    const [first, last] = [rows[0]!, rows.at(-1)!];
    const g = (last.ms_per_token as number) / (first.ms_per_token as number);
    const gBest = (last.ms_per_token_min as number) / (first.ms_per_token_min as number);
    out.push(
      `${arch} per-token latency at ${L}: batch ${last.batch} takes ${g.toFixed(2)}× batch ${first.batch}'s ` +
        `(${gBest.toFixed(2)}× from best times` +
        boundNote(last, first, 'ms_per_token') +
        ')' +
        (arch === 'retnet'
          ? ` (goal ≤ ${GOAL_LATENCY_GROWTH}×: ${verdict(g <= GOAL_LATENCY_GROWTH)}, ${verdict(gBest <= GOAL_LATENCY_GROWTH)})`
          : ''),
    );
  }
  for (const x of records.filter((x) => x.status === 'over budget'))
    out.push(
      `${x.arch} at ${x.length}, batch ${x.batch}: over the budget (predicted ` +
        `${((x.predicted_memory_bytes as number) / GIB).toFixed(2)} GiB)`,
    );
  return out;
}

const COLUMNS: Column[] = [
  { key: 'arch' },
  { key: 'sweep' },
  { key: 'length', digits: 0 },
  { key: 'batch', digits: 0 },
  { key: 'status' },
  { key: 'ms_per_token', header: 'ms/token', digits: 1 },
  { key: 'ms_per_token_min', header: 'best ms/token', digits: 1 },
  { key: 'tokens_per_s', header: 'tokens/s', digits: 1 },
  { key: 'state_mib', header: 'state MiB', digits: 0 },
  { key: 'decode_memory_mib', header: 'decode memory MiB', digits: 0 },
  { key: 'bound_ms_per_token', header: 'bound ms/token', digits: 1 },
  { key: 'sgemm_gflops', header: 'sgemm GFLOP/s', digits: 1 },
  { key: 'read_gbps', header: 'read GB/s', digits: 1 },
  { key: 'other_load', header: 'other load', digits: 2 },
];

export async function budgetSuite(values: {
  quick: boolean;
  report: boolean;
  budget?: number;
  weights: WeightFormat;
  state: BudgetSettings['state'];
}): Promise<void> {
  const s = budgetSettings(values.quick, values.budget, values.weights, values.state);
  const { path, file } = await suiteResults('budget', { report: values.report, quick: values.quick }, () =>
    measureBudget(s),
  );
  const records = file.records;
  printTable(`Decode at a ${(s.budget / GIB).toFixed(2)} GiB budget, ${s.weights} weights`, records, COLUMNS);
  const goals = findings(records, s);
  for (const g of goals) process.stdout.write(`${g}\n`);
  const ok = records.filter((r) => r.status === 'ok');
  const series = (r: BenchRecord) => r.arch as string;
  const plot = await writePlot(
    'budget',
    `Decoding within a ${(s.budget / GIB).toFixed(0)} GiB budget (${s.weights} weights, ${s.state} RetNet state, CPU)`,
    [
      {
        title: 'throughput at the largest batch that fits (tokens/s)',
        records: ok.filter((r) => r.sweep === 'largest batch'),
        x: { field: 'length', title: 'context length (tokens)', log: true },
        y: { field: 'tokens_per_s', title: 'tokens/s', log: true },
        series,
      },
      {
        title: `per-token latency against batch at ${s.batchLength} (ms)`,
        records: ok.filter((r) => r.sweep === 'batch'),
        x: { field: 'batch', title: 'batch size', log: true },
        y: { field: 'ms_per_token', title: 'ms per token' },
        series,
      },
    ],
    2,
  );
  const params = [...new Set(ok.map((r) => `${r.arch} ${((r.parameters as number) / 1e6).toFixed(0)}M`))];
  const sh = s.shape;
  updateBenchmarksMd(
    'budget',
    sectionMarkdown({
      title: 'Decoding at a memory budget (the paper’s Figure 6 regime)',
      intro:
        `RetNet with d = ${sh.embedDim}, ${sh.layers} layers, ${sh.heads} heads, dv = ffn = ${sh.valueDim} and the ` +
        `parameter-matched Transformer (${params.join(', ')} parameters, vocabulary ${s.vocab}), ${s.weights} ` +
        `weights, RetNet's decode state ${s.state === 'f16' ? 'float16' : 'float32'}, the KV cache float32. ` +
        'Each architecture decodes at the largest batch whose decode ' +
        `memory (weights + state of the batch + the step's workspace, from the engine's accounting) fits ` +
        `${(s.budget / GIB).toFixed(0)} GiB, at contexts ${s.lengths.join(', ')}; then per-token latency against ` +
        `the batch at ${s.batchLength} (a batch over the budget is listed, not run). Contexts are synthetic as in ` +
        '`bench decode`. Points whose states fit the budget together take turns (RetNet’s lengths share one state; ' +
        'its batch sweep fits side by side), the others run one after another; `timed_in_turns` names each ' +
        'point’s group, and each group carries its load. What sets each figure on this CPU: a RetNet step reads the weights once, reads and ' +
        'writes its state, and does 2·N·B FLOPs of matrix products, so past a few rows it is bound by arithmetic and ' +
        'its latency grows with the batch; a Transformer step also reads B·2·L·T·d cache values, so it is bound by ' +
        'memory bandwidth and its batch by the budget. Each point carries this machine’s bound for its step (the ' +
        'larger of its FLOPs at the sgemm rate and its bytes at the read rate, both measured in turns with it; ' +
        'bench/budget.ts says how), and the findings compare each ratio with the ratio of the bounds. The paper’s ' +
        '8.4× is for a GPU, whose arithmetic per byte of bandwidth keeps a large RetNet batch bound by the weight reads.',
      file,
      table: markdownTable(records, COLUMNS),
      findings: goals,
      plot,
    }),
  );
  process.stdout.write(`\nwrote ${path}, ${plot.png}, ${plot.svg} and the budget section of BENCHMARKS.md\n`);
  failOnFailedRecords('budget', records);
}
