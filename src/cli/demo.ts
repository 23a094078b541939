// `retnet demo`: the main job on a fresh machine. Trains a small RetNet on the built-in Brown corpus (a few minutes on
// two cores), reports validation perplexity, shows the three forms agreeing on the trained model, streams a
// generated continuation, and leaves a model directory that `generate`, `serve` and `eval` accept.

import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { noGrad } from '../autograd/tape.js';
import { getBackend } from '../backend/index.js';
import { RetnetError } from '../errors.js';
import { readSafetensors } from '../io/safetensors.js';
import { modelFromConfig } from '../models/registry.js';
import { RetNetModel } from '../models/retnet/model.js';
import { tidy } from '../tensor/scope.js';
import { ByteTokenizer } from '../tokenizer/tokenizer.js';
import { brownFiles, brownText } from '../train/brown.js';
import { type Command, UsageError, intFlag, numberFlag, parseFlags } from './command.js';
import { formatStats, generateText, loadForGeneration } from './generate.js';
import { trainCommand } from './train.js';

const MARKER = 'demo.json';

/** max |a − b| over max |b|. */
function relativeDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return diff / Math.max(scale, 1e-30);
}

/**
 * Logits of the three forms on one text and their largest relative differences from the parallel form. `normEps`
 * replaces the model's RMSNorm eps: the forms differ only by the per-head norm's eps (docs/retention.md), so with
 * eps ~0 they agree to float32 rounding.
 */
function compareForms(
  dir: string,
  ids: number[],
  chunkSize: number,
  normEps: number | null,
): { chunkwise: number; recurrent: number } {
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  if (normEps !== null) config.layernorm_eps = normEps;
  const model = modelFromConfig(config, join(dir, 'config.json'), { backend: getBackend() });
  if (!(model instanceof RetNetModel)) throw new RetnetError(`${dir}: not a RetNet model`);
  const weights = join(dir, 'model.safetensors');
  model.loadValues(readSafetensors(weights).tensors, weights, (n) => n.startsWith('retnet_rel_pos.'));
  const be = model.backend;
  const full = (form: 'parallel' | 'chunkwise') =>
    noGrad(() => tidy(() => model.forward(be.fromData(ids, [1, ids.length], 'int32'), { form, chunkSize }).data()));
  const parallel = full('parallel');
  const chunkwise = full('chunkwise');
  const state = model.emptyState(1);
  const recurrent = new Float32Array(parallel.length);
  ids.forEach((id, i) => {
    const l = model.step([id], state);
    recurrent.set(l.data(), i * model.vocabSize);
    l.dispose();
  });
  state.dispose();
  model.dispose();
  return { chunkwise: relativeDifference(chunkwise, parallel), recurrent: relativeDifference(recurrent, parallel) };
}

/** A sentence of the corpus to test the forms on: the first line of the last Brown file (the validation end). */
function sampleText(): string {
  const files = brownFiles();
  const text = brownText(files[files.length - 1]!);
  return text.slice(0, 400);
}

export const demoCommand: Command = {
  name: 'demo',
  summary: 'train a small RetNet on the Brown corpus, check the three forms, generate (no flags needed)',
  usage:
    'retnet demo [--steps N] [--preset tiny|small|base] [--out DIR] [--seq-len N] [--batch N] [--lr X] [--seed N] ' +
    '[--prompt TEXT] [--max-tokens N]',
  async run(argv) {
    const { values } = parseFlags('demo', argv, {
      steps: { type: 'string' },
      preset: { type: 'string' },
      out: { type: 'string' },
      'seq-len': { type: 'string' },
      batch: { type: 'string' },
      lr: { type: 'string' },
      seed: { type: 'string' },
      prompt: { type: 'string' },
      'max-tokens': { type: 'string' },
    });
    const steps = intFlag('demo', 'steps', values.steps, 400);
    const seqLen = intFlag('demo', 'seq-len', values['seq-len'], 128, 2);
    const batch = intFlag('demo', 'batch', values.batch, 16);
    const lr = numberFlag('demo', 'lr', values.lr, 3e-3, Number.MIN_VALUE);
    const seed = intFlag('demo', 'seed', values.seed, 0, 0);
    const maxTokens = intFlag('demo', 'max-tokens', values['max-tokens'], 200);
    const preset = values.preset ?? 'tiny';
    const out = resolve(values.out ?? join('runs', 'demo'));
    // The demo owns its output directory: a previous demo run there is replaced, anything else is left alone.
    if (existsSync(out) && readdirSync(out).length > 0) {
      if (!existsSync(join(out, MARKER)))
        throw new UsageError(`demo: ${out} exists and was not written by the demo; pass another --out`);
      rmSync(out, { recursive: true, force: true });
    }
    const say = (s: string) => process.stdout.write(`${s}\n`);

    say(`== 1/4 training a ${preset} RetNet on the Brown corpus (${steps} steps of ${batch}×${seqLen} tokens)`);
    const trainArgs = ['--arch', 'retnet', '--preset', preset, '--data', 'brown', '--steps', String(steps)];
    trainArgs.push('--out', out, '--seq-len', String(seqLen), '--batch', String(batch), '--lr', String(lr));
    trainArgs.push('--seed', String(seed), '--form', 'parallel');
    trainArgs.push('--eval-every', String(steps), '--checkpoint-every', String(steps), '--log-every', '25');
    writeFileSync(join(resolveDir(out), MARKER), JSON.stringify({ createdBy: 'retnet demo', steps, preset }));
    const code = await trainCommand.run(trainArgs);
    if (code !== 0) return code;

    say('\n== 2/4 the three forms on the trained model (max |difference| / max |logit|, against parallel)');
    const ids = new ByteTokenizer().encode(sampleText());
    const show = (label: string, d: { chunkwise: number; recurrent: number }) =>
      say(
        `${label.padEnd(34)} chunkwise (C=16) ${d.chunkwise.toExponential(2)}   recurrent ${d.recurrent.toExponential(2)}`,
      );
    show('as trained (norm eps 1e-6):', compareForms(out, ids, 16, null));
    const exact = compareForms(out, ids, 16, 1e-30);
    show('per-head norm eps → 0:', exact);
    say(`(${ids.length} tokens; each form scales a row differently and only the norm's eps sees the scale)`);
    // With eps ~0 the forms are the same function; what remains is float32 rounding.
    const tolerance = 1e-4;
    if (exact.chunkwise > tolerance || exact.recurrent > tolerance)
      throw new RetnetError(`demo: the forms disagree by more than ${tolerance}; this is a bug`);

    say('\n== 3/4 a continuation, streamed (chunkwise prefill, then recurrent decoding)');
    const prompt = values.prompt ?? 'The jury said ';
    const { model, tokenizer } = loadForGeneration(out);
    process.stdout.write(prompt);
    const stats = await generateText(
      model,
      tokenizer,
      { prompt, maxTokens, sampling: { temperature: 0.8, topP: 0.95, seed } },
      (t) => process.stdout.write(t),
    );
    process.stdout.write('\n');
    process.stderr.write(`${formatStats(stats)}\n`);
    model.dispose();

    say('\n== 4/4 the model directory is ready');
    say(`  ${out}`);
    say(`  retnet generate --model ${out} --prompt "The jury said" --max-tokens 100`);
    say(`  retnet serve --model ${out} --port 8080`);
    say(`  retnet eval --model ${out} --data brown`);
    return 0;
  },
};

function resolveDir(dir: string): string {
  mkdirSync(dir, { recursive: true });
  return dir;
}
