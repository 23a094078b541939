// The paper's GPU figures at their sizes on the cuda device (issue 18): Figure 6 at 6.7B (decode with bfloat16
// weights: memory and throughput against the context length 2k-16k at batch 1, latency against the batch 1-8 at
// 8k) and Table 4 at 1.3B (a training step at 8192 tokens: tokens/s and peak memory of RetNet chunkwise against the
// Transformer with flash attention). The bench suites (bench/decode.ts, bench/budget.ts, bench/train.ts,
// bench/trainmem.ts) measure the same at the CPU sizes; this runs their measurement at the paper's sizes, where only a
// GPU has the memory and the speed.
//   node dist/bench/cuda/paper.js [--only decode,budget,train,profile] [--budget GiB] [--profile-batch N]
//     [--state f32|f16] [--graphs on|off] [--quick] --out FILE
// Sections: `decode` Figure 6 at fixed batches; `budget` Figure 6's regime (the paper's 8.4x): each architecture at
// the largest batch whose decode memory fits `--budget` GiB (default 80, the paper's A100), as `bench budget`;
// `train` Table 4 with the live memory after the forward pass attributed to the op that produced it, as
// `bench trainmem`; `profile` the 6.7B RetNet step at batch 1 (or --profile-batch): host enqueue time against the
// whole step, RetNet's step replayed as a CUDA graph and kernel by kernel in turns, then one step inside the
// profiler's range (`ncu --profile-from-start off` lists its kernels). `--graphs off` runs RetNet's decode and budget
// steps kernel by kernel (RetNetModel.stepGraphs; default on).
//
// Weights are random (the step's cost depends on shapes, not values), drawn on the device: building 6.7B parameters
// from the host's generator would take minutes of device time. Every parameter is a tiled copy of one pool of
// uniform draws, scaled as PyTorch's default Linear init (U(±1/sqrt(fan-in))); norm weights are 1 + U(±0.1).
// Decode: the suites' synthetic contexts (bench/decode.ts measureDecodePoints), Linear weights in bfloat16
// (quantizeModel 'bf16', tensor-core products), embeddings, norms, KV caches and states float32. Train: float32
// weights and activations (float32 GEMMs unless RETNET_CUDA_TF32=1), one step = loss + backward without the
// optimizer, as bench/train.ts; vocabulary 4096 as the suites (the paper's larger vocabulary would add the same
// LM-head cost to both models).
import { writeFileSync } from 'node:fs';

import { setBackend } from '../../src/backend/index.js';
import { kernelsOf } from '../../src/backend/kernels.js';
import type { CudaDevice } from '../../src/backend/cuda/device.js';
import { type Arch, createModel } from '../../src/models/registry.js';
import type { RetNetModel } from '../../src/models/retnet/model.js';
import { TransformerDecodeState, type TransformerModel } from '../../src/models/transformer/model.js';
import type { CausalLM } from '../../src/models/lm.js';
import { quantizeModel, weightBytes } from '../../src/quant/model.js';
import { Rng } from '../../src/tensor/random.js';
import type { Tensor } from '../../src/tensor/tensor.js';
import { backward } from '../../src/autograd/tape.js';
import { crossEntropy } from '../../src/ops/nn.js';
import { tidy } from '../../src/tensor/scope.js';
import { type BenchRecord, batchOf, measureEach } from '../lib.js';
import { type BudgetSettings, type Synthetic, findings, measureBudget } from '../budget.js';
import { type DecodeModels, type DecodePoint, measureDecodePoints, stepInPlace } from '../decode.js';
import { trainStep } from '../train.js';
import { liveByOp } from '../trainmem.js';

const args = process.argv.slice(2);
const flag = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1]! : null);
const outPath = flag('--out');
const SECTIONS = ['decode', 'budget', 'train', 'profile'];
const only = (flag('--only') ?? 'decode,budget,train').split(',');
for (const x of only)
  if (!SECTIONS.includes(x)) throw new Error(`paper: unknown section '${x}' (${SECTIONS.join(', ')})`);
const budgetGiB = Number(flag('--budget') ?? 80);
/** The batch of the profiled steps (`--only profile`). */
const profileBatch = Number(flag('--profile-batch') ?? 1);
if (!Number.isInteger(profileBatch) || profileBatch < 1)
  throw new Error(`paper: --profile-batch takes a positive whole number, got '${flag('--profile-batch')}'`);
/** RetNet's decode state (`--state f16`: float16, RetNetModel.stateDType; the Transformer's KV cache stays float32). */
const stateFlag = flag('--state') ?? 'f32';
if (stateFlag !== 'f32' && stateFlag !== 'f16') throw new Error(`paper: --state takes f32 or f16, got '${stateFlag}'`);
const stateArg: BudgetSettings['state'] = stateFlag;
const graphsFlag = flag('--graphs') ?? 'on';
if (graphsFlag !== 'on' && graphsFlag !== 'off')
  throw new Error(`paper: --graphs takes on or off, got '${graphsFlag}'`);
const quick = args.includes('--quick');
const be = setBackend('cuda') as CudaDevice;
const records: BenchRecord[] = [];
const VOCAB = 4096;
const GIB = 2 ** 30;
/** HBM bandwidth of the bound a decode step is judged against (issue 18: 4.3 TB/s, the copy rate measured here). */
const HBM_BYTES_PER_S = 4.3e12;

function log(r: BenchRecord): void {
  records.push(r);
  process.stdout.write(`${JSON.stringify(r)}\n`);
}

/** A device pool of draws that tensors are filled from by device copies (building them on the host takes minutes). */
const POOL = 1 << 22;
function pool(draw: () => number): Tensor {
  return be.fromData(Float32Array.from({ length: POOL }, draw), [POOL], 'float32');
}

/** t ← tiled copies of the pool, times `scale`. */
function fillFrom(p: Tensor, t: Tensor, scale: number): void {
  for (let off = 0; off < t.size; off += POOL) be.copy(p, 0, t, off, Math.min(POOL, t.size - off));
  be.addon.scale(be.ptr(t), be.ptr(t), scale, t.size);
}

/** Fills every parameter of `model` from a pool of U(-1, 1) draws, scaled per tensor (see the header). */
function randomize(model: CausalLM, rng: Rng): void {
  const p = pool(() => 2 * rng.uniform() - 1);
  for (const t of model.parameters())
    if (t.rank === 1)
      t.device.write(
        t,
        Float32Array.from({ length: t.size }, () => 1 + 0.1 * (2 * rng.uniform() - 1)),
      );
    else fillFrom(p, t, 1 / Math.sqrt(t.shape[t.rank - 1]!));
  p.dispose();
}

/**
 * TransformerModel.syntheticState with the caches filled on the device from a pool of normal draws: the host fill
 * of the batch sweep's 120 GiB of caches took most of a 5-minute device call (run 1). Same shapes (the capacity
 * rounded up to the model's 64-position cache block) and the same N(0, 1) values, tiled.
 */
function deviceKvState(model: TransformerModel, batch: number, length: number, rng: Rng): TransformerDecodeState {
  const H = model.config.heads;
  const K = model.config.embedDim / H;
  const C = Math.ceil((length + 1) / 64) * 64;
  const p = pool(() => rng.normal());
  const make = () => {
    const t = be.zeros([batch, H, C, K], 'float32');
    fillFrom(p, t, 1);
    return t;
  };
  const state = new TransformerDecodeState(
    model.layers.map(make),
    model.layers.map(make),
    new Array<number>(batch).fill(length),
  );
  p.dispose();
  return state;
}

/**
 * RetNetModel.syntheticState with the states filled on the device (a budget-sized batch is ~70 GB of states): the same
 * shapes, N(0, 1/K) values tiled from a pool, and the decay sums of `length` consumed tokens.
 */
function deviceRetNetState(model: RetNetModel, batch: number, length: number, rng: Rng) {
  const K = model.config.embedDim / model.config.heads;
  const state = model.emptyState(batch);
  state.positions = new Array<number>(batch).fill(length);
  const p = pool(() => rng.normal());
  for (const t of state.states) {
    if (t.dtype === 'float32') {
      fillFrom(p, t, K ** -0.5);
      continue;
    }
    const wide = be.empty(t.shape, 'float32'); // a 16-bit state: drawn in float32, stored rounded
    fillFrom(p, wide, K ** -0.5);
    const half = kernelsOf(wide).cast(wide, t.dtype);
    be.copy(half, 0, t, 0, t.size);
    wide.dispose();
    half.dispose();
  }
  p.dispose();
  const sums = model.layers[0]!.mixer.gammas.map((g) => (1 - g ** length) / (1 - g));
  for (const t of state.scales) t.device.write(t, Array.from({ length: batch }, () => sums).flat());
  return state;
}

function build<A extends Arch>(arch: A, preset: string, seed: number): CausalLM {
  const model = createModel(arch, preset, { vocabSize: VOCAB }, { init: false });
  randomize(model, new Rng(seed));
  return model;
}

function progress(msg: string): void {
  process.stderr.write(`paper: ${msg} (device: ${(be.deviceMemory().reservedBytes / GIB).toFixed(1)} GiB reserved)\n`);
}

const DECODE_PRESET = quick ? '1.3B' : '6.7B';

/** The decode pair at DECODE_PRESET, bf16 weights, synthetic states built on the device. */
function decodeModels(): DecodeModels {
  progress(`decode: building ${DECODE_PRESET} RetNet and Transformer`);
  const models: DecodeModels = {
    retnet: build('retnet', DECODE_PRESET, 1) as RetNetModel,
    transformer: build('transformer', DECODE_PRESET, 2) as TransformerModel,
  };
  for (const m of [models.retnet, models.transformer]) quantizeModel(m, 'bf16');
  models.retnet.setStateFormat(stateArg);
  models.retnet.stepGraphs = graphsFlag === 'on';
  const [re, tr] = [models.retnet, models.transformer];
  re.syntheticState = (batch, length, rng) => deviceRetNetState(re, batch, length, rng);
  tr.syntheticState = (batch, length, rng) => deviceKvState(tr, batch, length, rng);
  return models;
}

function withBound(r: BenchRecord): BenchRecord {
  const bytes = (r.weight_bytes as number) + (r.state_bytes as number);
  const boundMs = (bytes / HBM_BYTES_PER_S) * 1e3;
  return {
    ...r,
    weights: 'bf16',
    ...(r.arch === 'retnet' ? { state: stateArg, step_graphs: graphsFlag === 'on' } : {}),
    // Weight products of more than 8 rows: x rounded to bf16 (true) or kept float32 as two bf16 parts (false).
    round_activations: be.roundActivations,
    hbm_bound_ms: boundMs,
    over_hbm_bound: r.status === 'ok' ? (r.ms_per_token as number) / boundMs : null,
  };
}

/** Figure 6 at 6.7B, fixed batches. */
async function decode(models: DecodeModels): Promise<void> {
  const preset = DECODE_PRESET;
  const timing = { warmup: 2, minTimeMs: quick ? 200 : 1000, minSamples: 5, sampleTargetMs: 20 };
  const lengths = quick ? [2048, 8192] : [2048, 4096, 8192, 16384];
  // Each group's states are live together (a 16k KV cache at 6.7B is 17 GiB a row): the length sweep at batch 1,
  // then one group per larger batch at 8192.
  const groups: DecodePoint[][] = [
    lengths.map((length) => ({ length, batch: 1 })),
    ...(quick ? [2, 8] : [2, 4, 8]).map((batch) => [{ length: 8192, batch }]),
  ];
  for (const points of groups) {
    progress(`decode: ${points.map((p) => `${p.length}x${p.batch}`).join(', ')}`);
    be.addon.emptyCache();
    for (const r of await measureDecodePoints(models, preset, points, timing))
      log({ figure: 'figure6', ...withBound(r) });
  }
  be.addon.emptyCache();
}

/**
 * Figure 6's regime: throughput within a memory budget, each architecture at the largest batch that fits (bench
 * budget's measurement on the decode pair), then latency against the batch at 8k.
 */
async function budget(models: DecodeModels): Promise<void> {
  const s: BudgetSettings = {
    shape: models.retnet.config,
    vocab: VOCAB,
    weights: 'bf16',
    state: stateArg,
    budget: budgetGiB * GIB,
    lengths: quick ? [2048, 8192] : [2048, 8192, 16384],
    batches: [1, 2, 4, 8],
    batchLength: 8192,
    maxBatch: 1024,
    samples: quick ? 3 : 5,
  };
  progress(`budget: ${budgetGiB} GiB`);
  be.addon.emptyCache();
  const rs = await measureBudget(s, [models.retnet, models.transformer] as unknown as Synthetic[]);
  for (const r of rs)
    log({ figure: 'figure6-budget', model: DECODE_PRESET, ...(r.status === 'ok' ? withBound(r) : r) });
  for (const g of findings(rs, s)) process.stdout.write(`budget: ${g}\n`);
  be.addon.emptyCache();
}

/**
 * The RetNet step at 8k, batch 1 (or --profile-batch): the host's enqueue time (from a synchronised start until
 * step() returns) against the whole step (until the device is done), medians of 20, for each architecture, RetNet's
 * step as a graph and kernel by kernel in turns (sample by sample); then one RetNet step inside the profiler's range.
 */
function profile(models: DecodeModels): void {
  for (const model of [models.retnet, models.transformer] as Synthetic[]) {
    const state = model.syntheticState(profileBatch, 8192, new Rng(7));
    const tokens = new Array<number>(profileBatch).fill(37);
    const retnet = model.arch === 'retnet' ? (model as unknown as RetNetModel) : null;
    // The first step runs kernel by kernel, the second captures the graph.
    for (let i = 0; i < 3; i++) stepInPlace(model, state, tokens);
    const variants = retnet ? [true, false] : [false];
    const enqueue = variants.map((): number[] => []);
    const total = variants.map((): number[] => []);
    for (let i = 0; i < 20; i++)
      variants.forEach((graphs, v) => {
        if (retnet) retnet.stepGraphs = graphs;
        be.synchronize();
        const t0 = performance.now();
        stepInPlace(model, state, tokens);
        const t1 = performance.now();
        be.synchronize();
        enqueue[v]!.push(t1 - t0);
        total[v]!.push(performance.now() - t0);
      });
    if (retnet) retnet.stepGraphs = graphsFlag === 'on';
    const median = (x: number[]) => x.sort((a, b) => a - b)[x.length >> 1]!;
    const bound = ((weightBytes(model) + state.bytes()) / HBM_BYTES_PER_S) * 1e3;
    variants.forEach((graphs, v) =>
      log({
        figure: 'step-profile',
        model: DECODE_PRESET,
        arch: model.arch,
        length: 8192,
        batch: profileBatch,
        step_graphs: graphs,
        enqueue_ms: median(enqueue[v]!),
        step_ms: median(total[v]!),
        step_ms_min: Math.min(...total[v]!),
        hbm_bound_ms: bound,
        over_hbm_bound: median(total[v]!) / bound,
        weight_bytes: weightBytes(model),
        state_bytes: state.bytes(),
      }),
    );
    if (model.arch === 'retnet') {
      be.addon.profile(true);
      stepInPlace(model, state, tokens);
      be.addon.profile(false);
    }
    state.dispose();
  }
}

/**
 * The chunk of RetNet's chunkwise form in training: 32, since the float32 chunkwise kernel's shared memory at the 1.3B
 * heads (K 256, V 432) passes the 227 KiB a block may have at 64 (run 2, 2026-12-02).
 */
const CHUNK = 32;

/** Table 4 at 1.3B. */
async function train(): Promise<void> {
  const preset = quick ? 'small' : '1.3B';
  const T = quick ? 2048 : 8192;
  const B = 1;
  const idsData = Array.from({ length: B * T }, (_, i) => (i * 7919) % VOCAB);
  const ids = be.fromData(idsData, [B, T], 'int32');
  const targets = be.fromData(
    idsData.map((x) => (x + 1) % VOCAB),
    [B, T],
    'int32',
  );
  const variants = [
    { arch: 'retnet' as const, variant: 'retnet-chunkwise', forward: (m: CausalLM, x: typeof ids) =>
      (m as RetNetModel).forward(x, { form: 'chunkwise', chunkSize: CHUNK }) }, // prettier-ignore
    { arch: 'transformer' as const, variant: 'transformer-flash', forward: (m: CausalLM, x: typeof ids) =>
      (m as TransformerModel).forward(x, { attention: 'flash' }) }, // prettier-ignore
  ];
  for (const v of variants) {
    progress(`train: building ${preset} ${v.arch}`);
    const model = build(v.arch, preset, 3);
    const step = () => trainStep(model, (x) => v.forward(model, x), ids, targets);
    const base: BenchRecord = {
      figure: 'table4',
      model: preset,
      arch: v.arch,
      variant: v.variant,
      parameters: model.parameterCount(),
      length: T,
      batch: B,
      tf32: be.tf32,
      weight_bytes: weightBytes(model),
    };
    try {
      progress(`train: ${v.variant} memory and warm-up step`);
      be.addon.synchronize();
      const live = be.memory.current;
      be.memory.resetPeak();
      // As bench trainmem: what the tape holds after the forward pass, by producing op.
      let afterForward = 0;
      let groups = new Map<string, { bytes: number; tensors: number }>();
      tidy(() => {
        const logits = v.forward(model, ids);
        afterForward = be.memory.current - live;
        groups = liveByOp();
        backward(crossEntropy(logits, targets));
      });
      model.zeroGrad();
      be.addon.synchronize();
      const peak = be.memory.peak;
      const attributed = [...groups.values()].reduce((n, g) => n + g.bytes, 0);
      for (const [group, g] of [
        ...groups.entries(),
        ['saved statistics', { bytes: afterForward - attributed, tensors: 0 }] as const,
      ].sort((a, b) => b[1].bytes - a[1].bytes))
        log({ ...base, kind: 'op', group, tensors: g.tensors, gib: g.bytes / GIB, kib_per_token: g.bytes / T / 1024 });
      const [t] = await measureEach([batchOf(step)], {
        warmup: 0,
        minTimeMs: 0,
        minSamples: quick ? 2 : 3,
        sampleTargetMs: 0,
      });
      log({
        ...base,
        status: 'ok',
        ms_per_step: t!.msMedian,
        ms_per_step_min: t!.msMin,
        tokens_per_s: (B * T * 1000) / t!.msMedian,
        // Tensor bytes at the step's peak: weights, their gradients and the activations.
        peak_gib: peak / GIB,
        after_forward_gib: afterForward / GIB,
        step_gib: (peak - live) / GIB,
        samples: t!.samples,
      });
    } catch (e) {
      log({ ...base, status: 'failed', error: (e as Error).message });
    }
    model.dispose();
    be.addon.emptyCache();
  }
  ids.dispose();
  targets.dispose();
}

const info = be.info();
process.stdout.write(`${JSON.stringify(info)}\n`);
if (only.some((x) => x !== 'train')) {
  const models = decodeModels();
  if (only.includes('decode')) await decode(models);
  if (only.includes('budget')) await budget(models);
  if (only.includes('profile')) profile(models);
  models.retnet.dispose();
  models.transformer.dispose();
  be.addon.emptyCache();
}
if (only.includes('train')) await train();
if (outPath) writeFileSync(outPath, JSON.stringify({ info, command: `paper ${args.join(' ')}`, records }, null, 1));
