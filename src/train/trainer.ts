// The training loop, for any CausalLM: batches from the token shards, next-token cross-entropy, gradient accumulation,
// global-norm clipping, AdamW with warmup + decay, validation every N steps and at the end, a JSONL metrics log,
// atomic checkpoints, and an exact resume (weights, AdamW moments, step, sampler position and RNG states).
//
// Each optimizer step: for each of `accum` micro-batches, loss_i = CE(forward(x_i), y_i) and backward(loss_i / accum),
// so the gradients add up to those of the mean loss over accum · batch sequences; then the global norm, clipping, and
// one AdamW update. A non-finite loss or gradient norm stops the run before the update, leaving the last checkpoint.

import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { backward, noGrad } from '../autograd/tape.js';
import { RetnetError } from '../errors.js';
import type { CausalLM } from '../models/lm.js';
import { countTargets, crossEntropy } from '../ops/nn.js';
import { add, scale } from '../ops/math.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import {
  type TrainerState,
  latestCheckpoint,
  loadCheckpoint,
  removeIncompleteCheckpoints,
  saveCheckpoint,
} from './checkpoint.js';
import { type Batch, BatchSampler, type PreparedData, ShardReader } from './data.js';
import { batchTensors, evaluate } from './evaluate.js';
import { AdamW } from './optimizer.js';
import { Progress, type ProgressStream } from './progress.js';
import { type DecayKind, learningRate, validateSchedule } from './schedule.js';

/** Training stopped on a problem the user has to act on (divergence, a checkpoint that does not fit). */
export class TrainingError extends RetnetError {}

export interface TrainConfig {
  steps: number;
  /** Sequences per micro-batch. */
  batch: number;
  seqLen: number;
  /** Micro-batches per optimizer step. */
  accum: number;
  lr: number;
  warmupSteps: number;
  decay: DecayKind;
  minLrRatio: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Global gradient-norm limit; 0 turns clipping off. */
  clip: number;
  /** Seeds the data order. */
  seed: number;
  /**
   * Validate every N steps (0: only at the end) and at the end, on the first evalBatches batches of the validation
   * split (0: all of it), the same windows each time so the curve compares like with like.
   */
  evalEvery: number;
  evalBatches: number;
  /** Checkpoint every N steps (0: only at the end or on a stop). */
  checkpointEvery: number;
  keepCheckpoints: number;
  /** Plain log line every N steps when not on a terminal. */
  logEvery: number;
}

export const TRAIN_DEFAULTS: Omit<TrainConfig, 'steps'> = {
  batch: 8,
  seqLen: 128,
  accum: 1,
  lr: 1e-3,
  warmupSteps: -1, // -1: 10% of the steps, at most 1000
  decay: 'cosine',
  minLrRatio: 0.1,
  weightDecay: 0.1,
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  clip: 1,
  seed: 0,
  evalEvery: 0,
  evalBatches: 0,
  checkpointEvery: 0,
  keepCheckpoints: 2,
  logEvery: 10,
};

/** A config with defaults filled in (warmup -1 becomes 10% of the steps, at most 1000). */
export function trainConfig(c: Partial<TrainConfig> & { steps: number }): TrainConfig {
  const full = { ...TRAIN_DEFAULTS, ...c };
  if (full.warmupSteps < 0) full.warmupSteps = Math.min(1000, Math.floor(full.steps / 10));
  return full;
}

/** A model whose random state (dropout) a checkpoint should carry. */
interface RandomStateful {
  rngState(): number[];
  setRngState(state: readonly number[]): void;
}

function randomStateful(model: CausalLM): RandomStateful | null {
  const m = model as Partial<RandomStateful>;
  return typeof m.rngState === 'function' && typeof m.setRngState === 'function' ? (m as RandomStateful) : null;
}

export interface TrainOptions {
  model: CausalLM;
  data: PreparedData;
  /** The run directory: the model directory, metrics.jsonl and checkpoints/. */
  outDir: string;
  config: TrainConfig;
  /** ids int32 [B, T] -> logits [B, T, V]. Default: model.forward. */
  forward?: (ids: Tensor) => Tensor;
  /** Writes the model directory files into a folder (the CLI passes io/model-dir's saveModelDir). */
  writeModel: (dir: string) => void;
  /** Continue from the latest checkpoint in outDir. */
  resume?: boolean;
  /** Where progress goes (default stderr). */
  progress?: ProgressStream;
  /** Set `requested` (e.g. on SIGINT) to stop after the current step with a checkpoint. */
  stop?: { requested: boolean };
  /** Stop with a checkpoint once this step is reached, as if interrupted (tests of resume). */
  stopAtStep?: number;
}

export interface TrainResult {
  step: number;
  /** False when stopped before config.steps. */
  finished: boolean;
  trainLoss: number;
  valLoss: number | null;
  valPpl: number | null;
  tokens: number;
  elapsedSec: number;
  checkpoint: string;
}

/**
 * Forward and backward over the micro-batches of one step: the gradients (added to the parameters' .grad) are those of
 * the mean of the micro-batch losses. Returns that mean.
 *
 * Host round trips: one, the read of the summed loss after the last micro-batch. Target counts come from the host
 * batch and the loss scaling 1/accum stays on the device; a non-finite loss is found after the backward passes
 * (whose gradients the caller then drops).
 */
export function accumulateGradients(
  model: CausalLM,
  forward: (ids: Tensor) => Tensor,
  batches: readonly Batch[],
  T: number,
): number {
  const total = tidy(() => {
    let sum: Tensor | null = null;
    for (const batch of batches) {
      const loss = tidy(() => {
        const { ids, targets } = batchTensors(model, batch, T);
        const l = crossEntropy(forward(ids), targets, { count: countTargets(batch.targets) });
        backward(scale(l, 1 / batches.length));
        return noGrad(() => scale(l, 1)); // detached copy: the tape is done with l
      });
      const next: Tensor = sum ? noGrad(() => add(sum!, loss)) : loss;
      if (sum) {
        sum.dispose();
        loss.dispose();
      }
      sum = next;
    }
    return sum!;
  });
  const value = total.item(); // the step's one read of the loss
  total.dispose();
  return value / batches.length;
}

/** Rewrites the metrics log without the records past `step` (a resumed run repeats those steps). */
function truncateMetrics(path: string, step: number): void {
  if (!existsSync(path)) return;
  const kept = readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => {
      try {
        return (JSON.parse(line) as { step: number }).step <= step;
      } catch {
        return false; // a blank line, or a record torn by a crash
      }
    });
  writeFileSync(path, kept.map((l) => `${l}\n`).join(''));
}

export async function train(opts: TrainOptions): Promise<TrainResult> {
  const { model, data, outDir, config } = opts;
  const forward = opts.forward ?? ((ids: Tensor) => model.forward(ids));
  const schedule = validateSchedule({
    peak: config.lr,
    warmupSteps: config.warmupSteps,
    totalSteps: config.steps,
    decay: config.decay,
    minRatio: config.minLrRatio,
  });
  if (data.tokenizer.vocabSize > model.vocabSize)
    throw new TrainingError(
      `the tokenizer has ${data.tokenizer.vocabSize} tokens but the model's vocabulary is ${model.vocabSize}`,
    );
  mkdirSync(outDir, { recursive: true });
  const metricsPath = join(outDir, 'metrics.jsonl');
  const metric = (record: Record<string, unknown>) => appendFileSync(metricsPath, `${JSON.stringify(record)}\n`);

  const optimizer = new AdamW(model.namedParameters(), {
    beta1: config.beta1,
    beta2: config.beta2,
    eps: config.eps,
    weightDecay: config.weightDecay,
  });
  const trainReader = new ShardReader(data.dir, data.manifest, 'train');
  const valReader = new ShardReader(data.dir, data.manifest, 'val');
  const rngOwner = randomStateful(model);
  const progress = new Progress(opts.progress ?? process.stderr, config.steps, config.logEvery);
  model.setTraining(true);
  try {
    const sampler = new BatchSampler(trainReader, config.batch, config.seqLen, config.seed);
    let step = 0;
    let tokens = 0;
    let elapsedBefore = 0;
    removeIncompleteCheckpoints(outDir);
    if (opts.resume) {
      const dir = latestCheckpoint(outDir);
      if (!dir) throw new TrainingError(`${outDir}: no checkpoint to resume from`);
      const state = loadCheckpoint(dir, model, optimizer);
      if (state.dataKey !== data.manifest.key)
        throw new TrainingError(
          `${dir}: the checkpoint was trained on other data or another tokenizer (data key ${state.dataKey.slice(0, 16)}, now ${data.manifest.key.slice(0, 16)})`,
        );
      if (state.step > config.steps)
        throw new TrainingError(`${dir}: the checkpoint is at step ${state.step}, past --steps ${config.steps}`);
      step = state.step;
      tokens = state.tokens;
      elapsedBefore = state.elapsedSec;
      sampler.setPosition(state.sampler);
      if (rngOwner && state.modelRng) rngOwner.setRngState(state.modelRng);
      truncateMetrics(metricsPath, step);
    } else truncateMetrics(metricsPath, -1);
    progress.begin(step);
    if (opts.resume) progress.message(`resumed from ${latestCheckpoint(outDir)} at step ${step}`);
    metric({ type: 'run', step, resumed: opts.resume === true, config, time: new Date().toISOString() });

    const started = performance.now();
    const elapsed = () => elapsedBefore + (performance.now() - started) / 1000;
    const checkpoint = () =>
      saveCheckpoint(
        outDir,
        {
          writeModel: opts.writeModel,
          optimizer,
          state: {
            format: 'retnet-trainer-state',
            version: 1,
            step,
            tokens,
            elapsedSec: elapsed(),
            sampler: sampler.getPosition(),
            modelRng: rngOwner ? rngOwner.rngState() : null,
            dataKey: data.manifest.key,
            config: { ...config },
          } satisfies TrainerState,
        },
        config.keepCheckpoints,
      );
    if (valReader.tokens < config.seqLen + 1)
      progress.message(
        `no validation: the validation split has ${valReader.tokens} tokens, fewer than one sequence of ${config.seqLen} + 1`,
      );
    const validate = (maxBatches: number) => {
      model.setTraining(false);
      const r = evaluate(forward, model, valReader, config.batch, config.seqLen, maxBatches);
      model.setTraining(true);
      if (r === null) return null;
      metric({ type: 'val', step, loss: r.loss, ppl: r.ppl, tokens: r.tokens });
      progress.message(
        `step ${step}: validation loss ${r.loss.toFixed(4)} ppl ${r.ppl.toFixed(2)} (${r.tokens} tokens)`,
      );
      return r;
    };

    const evalLimit = config.evalBatches > 0 ? config.evalBatches : Infinity;
    let lastLoss = NaN;
    let lastCheckpoint = latestCheckpoint(outDir);
    // Throughput: an exponential moving average of the training steps' own speed (validation and checkpoints excluded).
    let tokensPerSec = 0;
    while (step < config.steps) {
      const stepStart = performance.now();
      const lr = learningRate(schedule, step);
      const batches = Array.from({ length: config.accum }, () => sampler.next());
      const loss = accumulateGradients(model, forward, batches, config.seqLen);
      const gradNorm = Number.isFinite(loss) ? optimizer.gradNorm() : NaN;
      if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) {
        model.zeroGrad();
        const what = !Number.isFinite(loss) ? `the loss is ${loss}` : `the gradient norm is ${gradNorm}`;
        throw new TrainingError(
          `step ${step + 1}: ${what}; training stopped. ` +
            (lastCheckpoint
              ? `The last good checkpoint is ${lastCheckpoint}; resume from it with --resume (a lower --lr or --clip may help).`
              : 'No checkpoint was written yet (a lower --lr or --clip may help).'),
        );
      }
      const gradScale = config.clip > 0 && gradNorm > config.clip ? config.clip / (gradNorm + 1e-6) : 1;
      optimizer.update(lr, gradScale);
      model.zeroGrad();
      step++;
      const stepTokens = config.accum * config.batch * config.seqLen;
      tokens += stepTokens;
      lastLoss = loss;
      const stepSec = (performance.now() - stepStart) / 1000;
      const speed = stepTokens / Math.max(stepSec, 1e-9);
      tokensPerSec = tokensPerSec === 0 ? speed : 0.9 * tokensPerSec + 0.1 * speed;
      metric({ type: 'train', step, loss, lr, gradNorm, tokens, stepSec, tokensPerSec, elapsedSec: elapsed() });
      progress.update({ step, loss, lr, gradNorm, tokensPerSec });

      if (config.evalEvery > 0 && step % config.evalEvery === 0 && step < config.steps) validate(evalLimit);
      const stopping = opts.stop?.requested === true || step === opts.stopAtStep;
      if (stopping || (config.checkpointEvery > 0 && step % config.checkpointEvery === 0 && step < config.steps)) {
        lastCheckpoint = checkpoint();
        opts.writeModel(outDir);
        progress.message(`step ${step}: checkpoint ${lastCheckpoint}`);
      }
      if (stopping && step < config.steps) {
        progress.done();
        return {
          step,
          finished: false,
          trainLoss: lastLoss,
          valLoss: null,
          valPpl: null,
          tokens,
          elapsedSec: elapsed(),
          checkpoint: lastCheckpoint!,
        };
      }
      // Let signal handlers (Ctrl-C) run between steps.
      await new Promise((resolve) => setImmediate(resolve));
    }
    progress.done();
    const final = validate(evalLimit);
    lastCheckpoint = checkpoint();
    opts.writeModel(outDir);
    progress.message(`step ${step}: model written to ${outDir}`);
    return {
      step,
      finished: true,
      trainLoss: lastLoss,
      valLoss: final?.loss ?? null,
      valPpl: final?.ppl ?? null,
      tokens,
      elapsedSec: elapsed(),
      checkpoint: lastCheckpoint,
    };
  } finally {
    progress.done();
    model.setTraining(false);
    optimizer.dispose();
    trainReader.close();
    valReader.close();
  }
}
