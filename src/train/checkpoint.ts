// Checkpoints of a training run, under RUN/checkpoints/:
//   step-00000100/  the model directory (config.json, model.safetensors, tokenizer.json) + optimizer.safetensors
//                   (AdamW moments) + trainer.json (step, sampler position, RNG states, config)
//   latest          the name of the newest complete checkpoint
// A checkpoint is written into a hidden temporary folder, every file fsynced, then renamed into place, and only then
// does `latest` move (itself written atomically). A crash at any point leaves `latest` naming a complete checkpoint.
// Old checkpoints are pruned the same way in reverse: renamed to a hidden folder first, then deleted, so a crash
// while pruning never leaves a half-deleted step-N folder that looks like a checkpoint.

import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';

import { FormatError } from '../errors.js';
import { syncDir, writeFileAtomic } from '../io/atomic.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { Module } from '../nn/module.js';
import type { SamplerPosition } from './data.js';
import type { AdamW } from './optimizer.js';

export interface TrainerState {
  format: 'retnet-trainer-state';
  version: 1;
  /** Completed optimizer steps. */
  step: number;
  /** Training tokens consumed. */
  tokens: number;
  /** Wall time spent training so far, over every resumed part. */
  elapsedSec: number;
  sampler: SamplerPosition;
  /** The model's own random state (dropout), when it has one. */
  modelRng: number[] | null;
  /** Key of the data manifest, so a resume on other data is refused. */
  dataKey: string;
  /** The training configuration, as the trainer received it. */
  config: Record<string, unknown>;
}

const STEP_DIR = /^step-(\d+)$/;
const stepName = (step: number) => `step-${String(step).padStart(8, '0')}`;

export function checkpointsDir(runDir: string): string {
  return join(runDir, 'checkpoints');
}

/** The files a complete checkpoint holds and `loadCheckpoint` reads (writeModel may add config.json and others). */
const CHECKPOINT_FILES = ['trainer.json', 'model.safetensors', 'optimizer.safetensors'];

const isComplete = (folder: string) => CHECKPOINT_FILES.every((f) => existsSync(join(folder, f)));

/** Complete checkpoints of a run, oldest first. */
function completeCheckpoints(runDir: string): { name: string; step: number }[] {
  const dir = checkpointsDir(runDir);
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .map((name) => ({ name, match: STEP_DIR.exec(name) }))
    .filter((e) => e.match && isComplete(join(dir, e.name)))
    .map((e) => ({ name: e.name, step: Number(e.match![1]) }))
    .sort((a, b) => a.step - b.step);
}

/** The folder of the newest complete checkpoint, or null. Follows `latest`, else the highest step present. */
export function latestCheckpoint(runDir: string): string | null {
  const dir = checkpointsDir(runDir);
  const pointer = join(dir, 'latest');
  if (existsSync(pointer)) {
    const name = readFileSync(pointer, 'utf8').trim();
    if (STEP_DIR.test(name) && isComplete(join(dir, name))) return join(dir, name);
  }
  const all = completeCheckpoints(runDir);
  return all.length > 0 ? join(dir, all[all.length - 1]!.name) : null;
}

/** Removes the hidden folders (half-written or half-pruned checkpoints) a crash may have left behind. */
export function removeIncompleteCheckpoints(runDir: string): void {
  const dir = checkpointsDir(runDir);
  if (!existsSync(dir)) return;
  for (const name of readdirSync(dir))
    if (name.startsWith('.step-') || name.startsWith('.pruned-')) rmSync(join(dir, name), { recursive: true });
}

/** Deletes a checkpoint folder atomically as far as readers are concerned: rename it away, then delete it. */
function pruneCheckpoint(dir: string, name: string): void {
  const trash = join(dir, `.pruned-${name}-${process.pid}`);
  renameSync(join(dir, name), trash);
  rmSync(trash, { recursive: true, force: true });
}

export interface CheckpointContents {
  /** Writes the model directory files (config.json, model.safetensors, tokenizer.json) into a folder. */
  writeModel: (dir: string) => void;
  optimizer: AdamW;
  state: TrainerState;
}

/** Writes a checkpoint atomically, points `latest` at it and keeps the newest `keep` checkpoints. Returns its path. */
export function saveCheckpoint(runDir: string, c: CheckpointContents, keep: number): string {
  const dir = checkpointsDir(runDir);
  mkdirSync(dir, { recursive: true });
  const name = stepName(c.state.step);
  const final = join(dir, name);
  // The same step holds the same weights (training is deterministic), so an existing checkpoint stands.
  if (!isComplete(final)) {
    const tmp = join(dir, `.${name}.tmp-${process.pid}`);
    rmSync(tmp, { recursive: true, force: true });
    rmSync(final, { recursive: true, force: true });
    mkdirSync(tmp);
    c.writeModel(tmp);
    const { tensors, metadata } = c.optimizer.stateTensors();
    writeSafetensors(join(tmp, 'optimizer.safetensors'), tensors, metadata);
    writeFileAtomic(join(tmp, 'trainer.json'), `${JSON.stringify(c.state, null, 2)}\n`);
    renameSync(tmp, final);
    syncDir(dir);
  }
  writeFileAtomic(join(dir, 'latest'), `${name}\n`);
  const all = completeCheckpoints(runDir);
  for (const old of all.slice(0, Math.max(0, all.length - keep))) if (old.name !== name) pruneCheckpoint(dir, old.name);
  return final;
}

/** Loads a checkpoint's weights into the model and moments into the optimizer; returns the trainer state. */
export function loadCheckpoint(dir: string, model: Module, optimizer: AdamW): TrainerState {
  const statePath = join(dir, 'trainer.json');
  let state: TrainerState;
  try {
    state = JSON.parse(readFileSync(statePath, 'utf8')) as TrainerState;
  } catch (e) {
    throw new FormatError(`${statePath}: cannot read the trainer state (${(e as Error).message})`);
  }
  if (state.format !== 'retnet-trainer-state' || !Number.isInteger(state.step))
    throw new FormatError(`${statePath}: not a retnet trainer state`);
  const weights = join(dir, 'model.safetensors');
  // Names the model does not have are buffers saved for other tools (torchscale's rotary tables).
  model.loadValues(readSafetensors(weights).tensors, weights, () => true);
  const opt = join(dir, 'optimizer.safetensors');
  const { tensors, metadata } = readSafetensors(opt);
  optimizer.loadState(tensors, metadata, opt);
  return state;
}
