// The paper's GPU figures at their sizes on the cuda device (issue 18): Figure 6 at 6.7B (decode with bfloat16
// weights: memory and throughput against the context length 2k-16k at batch 1, latency against the batch 1-8 at
// 8k) and Table 4 at 1.3B (a training step at 8192 tokens: tokens/s and peak memory of RetNet chunkwise against the
// Transformer with flash attention). The bench suites (bench/decode.ts, bench/train.ts) measure the same at the CPU
// sizes; this runs their measurement at the paper's sizes, where only a GPU has the memory and the speed.
//   node dist/bench/cuda/paper.js [--only decode|train] [--quick] --out FILE
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
import type { CudaDevice } from '../../src/backend/cuda/device.js';
import { type Arch, createModel } from '../../src/models/registry.js';
import type { RetNetModel } from '../../src/models/retnet/model.js';
import { TransformerDecodeState, type TransformerModel } from '../../src/models/transformer/model.js';
import type { CausalLM } from '../../src/models/lm.js';
import { quantizeModel, weightBytes } from '../../src/quant/model.js';
import { Rng } from '../../src/tensor/random.js';
import type { Tensor } from '../../src/tensor/tensor.js';
import { type BenchRecord, batchOf, measureEach } from '../lib.js';
import { type DecodeModels, type DecodePoint, measureDecodePoints } from '../decode.js';
import { trainStep } from '../train.js';

const args = process.argv.slice(2);
const flag = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1]! : null);
const outPath = flag('--out');
const only = flag('--only');
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

function build<A extends Arch>(arch: A, preset: string, seed: number): CausalLM {
  const model = createModel(arch, preset, { vocabSize: VOCAB }, { init: false });
  randomize(model, new Rng(seed));
  return model;
}

function progress(msg: string): void {
  process.stderr.write(`paper: ${msg} (device: ${(be.deviceMemory().reservedBytes / GIB).toFixed(1)} GiB reserved)\n`);
}

/** Figure 6 at 6.7B. */
async function decode(): Promise<void> {
  const preset = quick ? '1.3B' : '6.7B';
  progress(`decode: building ${preset} RetNet and Transformer`);
  const models: DecodeModels = {
    retnet: build('retnet', preset, 1) as RetNetModel,
    transformer: build('transformer', preset, 2) as TransformerModel,
  };
  for (const m of [models.retnet, models.transformer]) quantizeModel(m, 'bf16');
  const tr = models.transformer;
  tr.syntheticState = (batch, length, rng) => deviceKvState(tr, batch, length, rng);
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
    for (const r of await measureDecodePoints(models, preset, points, timing)) {
      const bytes = (r.weight_bytes as number) + (r.state_bytes as number);
      const boundMs = (bytes / HBM_BYTES_PER_S) * 1e3;
      log({
        ...r,
        weights: 'bf16',
        hbm_bound_ms: boundMs,
        over_hbm_bound: r.status === 'ok' ? (r.ms_per_token as number) / boundMs : null,
      });
    }
  }
  models.retnet.dispose();
  models.transformer.dispose();
  be.addon.emptyCache();
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
      step();
      be.addon.synchronize();
      const peak = be.memory.peak;
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
if (only !== 'train') await decode();
if (only !== 'decode') await train();
if (outPath) writeFileSync(outPath, JSON.stringify({ info, command: `paper ${args.join(' ')}`, records }, null, 1));
