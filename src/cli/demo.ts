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
import { UsageError, bool, choice, defineCommand, int, num, text } from './command.js';
import { formatStats, generateText, loadForGeneration } from './generate.js';
import { checkBatchTokens, trainCommand } from './train.js';

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

export const demoCommand = defineCommand({
  name: 'demo',
  summary: 'train a small RetNet on the Brown corpus, check the three forms, generate (no flags needed)',
  flags: {
    steps: int('training steps', { min: 1, max: 1e6, default: 400 }),
    preset: choice('the model size', ['tiny', 'small', 'base'] as const, { default: 'tiny' }),
    out: text('the run directory it leaves', { placeholder: 'dir', default: join('runs', 'demo'), nonEmpty: true }),
    force: bool("replace --out when it holds an earlier demo's run"),
    'seq-len': int('tokens per sequence', { min: 2, max: 65536, default: 128 }),
    batch: int('sequences per batch', { min: 1, max: 4096, default: 16 }),
    lr: num('peak learning rate', { min: 1e-9, max: 10, default: 3e-3 }),
    seed: int('seeds the model, the data order and the sampler', { min: 0, max: 2 ** 32 - 1, default: 0 }),
    prompt: text('the start of the generated text', { default: 'The jury said ' }),
    'max-tokens': int('tokens to generate', { min: 1, max: 2 ** 20, default: 200 }),
  },
  async run({ values }) {
    const { steps, preset, batch, lr, seed } = values;
    const seqLen = values['seq-len'];
    const maxTokens = values['max-tokens'];
    checkBatchTokens('demo', batch, seqLen);
    const out = resolve(values.out);
    // An earlier run is never replaced silently: --force replaces an earlier demo's, anything else is left alone.
    if (existsSync(out) && readdirSync(out).length > 0) {
      if (!existsSync(join(out, MARKER)))
        throw new UsageError(`demo: ${out} exists and was not written by the demo; pass another --out`);
      if (!values.force)
        throw new UsageError(`demo: ${out} holds an earlier demo run; pass --force to replace it, or another --out`);
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
    const prompt = values.prompt;
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
    say(`  npx retnet generate --model ${out} --prompt "The jury said" --max-tokens 100`);
    say(`  npx retnet serve --model ${out} --port 8080`);
    say(`  npx retnet eval --model ${out} --data brown`);
    return 0;
  },
});

function resolveDir(dir: string): string {
  mkdirSync(dir, { recursive: true });
  return dir;
}
