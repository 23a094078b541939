// `retnet train`: tokenises the data (once; the shards are reused), builds a model from a preset and trains it into a
// run directory that is also a model directory (`retnet eval --model DIR`). Ctrl-C stops after the current step with
// a checkpoint; `--resume` continues it exactly. The run's settings are kept in DIR/run.json, so a resumed command
// may repeat them (or leave them out); only --steps and the reporting cadence may change on a resume.

import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

import { writeFileAtomic } from '../io/atomic.js';
import { loadModelDir, readTokenizerFile, saveModelDir } from '../io/model-dir.js';
import { ARCHS, type Arch, createModel } from '../models/registry.js';
import { PRESETS } from '../models/presets.js';
import { RETNET_DEFAULTS, configuredForm, retnetPreset } from '../models/retnet/config.js';
import { RetNetModel } from '../models/retnet/model.js';
import { transformerPreset } from '../models/transformer/config.js';
import { ConfigError } from '../errors.js';
import { ByteTokenizer, type Tokenizer } from '../tokenizer/tokenizer.js';
import { latestCheckpoint } from '../train/checkpoint.js';
import { prepareData } from '../train/data.js';
import { DECAY_KINDS } from '../train/schedule.js';
import { TRAIN_DEFAULTS, type TrainConfig, train, trainConfig } from '../train/trainer.js';
import { InvalidArgumentError } from 'commander';

import {
  DEVICE_FLAG,
  type Flag,
  type FlagValues,
  type Parsed,
  UsageError,
  bool,
  choice,
  defineCommand,
  formFlags,
  int,
  num,
  text,
} from './command.js';

const FORMS = ['parallel', 'chunkwise'] as const;
const TOKENIZERS = ['bytes', 'bpe'] as const;

/** --tokenizer: bytes, bpe, or an existing tokenizer.json to reuse (kept as an absolute path in run.json). */
function tokenizerFlag(): Flag<string> {
  return {
    placeholder: 'bytes|bpe|FILE',
    help: 'byte-level, a byte-level BPE trained on the training split, or an existing tokenizer.json to reuse',
    parse: (raw) => {
      if ((TOKENIZERS as readonly string[]).includes(raw)) return raw;
      if (!existsSync(raw))
        throw new InvalidArgumentError(`expected ${TOKENIZERS.join(', ')} or a tokenizer.json file, got '${raw}'`);
      return resolve(raw);
    },
    default: 'bytes',
  };
}

/** The tokenizer of a run that does not train one: the byte tokenizer or a tokenizer.json file. */
function fixedTokenizer(kind: string): Tokenizer {
  return kind === 'bytes' ? new ByteTokenizer() : readTokenizerFile(kind);
}

/** Everything a run was started with, saved as run.json. */
export interface RunSettings {
  arch: Arch;
  preset: string;
  /** RetNet only: the form of the full-sequence forward pass, and the chunk size of the chunkwise form. */
  form: (typeof FORMS)[number] | null;
  chunkSize: number | null;
  data: {
    source: string;
    /** bytes, bpe (trained on the training split), or the absolute path of an existing tokenizer.json. */
    tokenizer: string;
    /** BPE vocabulary size. */
    vocab: number;
    valFraction: number;
    jsonlField: string;
    skipBadData: boolean;
    cacheDir: string;
  };
  train: TrainConfig;
}

/** Settings that may differ between the first part of a run and a resumed part. */
const CHANGEABLE: readonly (keyof TrainConfig)[] = [
  'steps',
  'evalEvery',
  'evalBatches',
  'checkpointEvery',
  'keepCheckpoints',
  'logEvery',
];

export const DEFAULT_CACHE = () => process.env.RETNET_CACHE ?? join(homedir(), '.cache', 'retnet', 'shards');

const D = TRAIN_DEFAULTS;
const MAX_STEPS = 1e9;
/** Tokens in one micro-batch (batch × seq-len): beyond this the activations alone take gigabytes. */
const MAX_BATCH_TOKENS = 2 ** 20;

/** Data and batch-shape flags shared with `retnet eval`. */
export const DATA_FLAGS = {
  data: text('a text file, a directory of files (*.jsonl read as JSONL), a JSONL file, or brown', {
    placeholder: 'path|brown',
    nonEmpty: true,
  }),
  'val-fraction': num('every k-th segment (k = 1 / X) is validation', { min: 0, max: 0.5, default: 0.01 }),
  'jsonl-field': text('the field of each JSONL line that holds the text', { placeholder: 'name', default: 'text' }),
  'skip-bad-data': bool('leave out unreadable files and lines with a warning instead of stopping'),
  cache: text('where tokenised shards are kept', {
    placeholder: 'dir',
    defaultHelp: '$RETNET_CACHE or ~/.cache/retnet/shards',
  }),
  'seq-len': int('tokens per sequence', { min: 1, max: 65536, default: D.seqLen }),
  batch: int('sequences per micro-batch', { min: 1, max: 4096, default: D.batch }),
};

/** The forms a training or evaluation pass runs (shared with `retnet eval`). */
export const FORM_FLAGS = formFlags(FORMS);

const FLAGS = {
  ...DATA_FLAGS,
  ...DEVICE_FLAG,
  ...FORM_FLAGS,
  arch: choice('the architecture', ARCHS, { default: 'retnet' }),
  preset: choice('the model size', Object.keys(PRESETS), { default: 'tiny' }),
  steps: int('optimizer steps', { min: 1, max: MAX_STEPS }),
  out: text('the run directory (also a model directory)', { placeholder: 'dir', required: true, nonEmpty: true }),
  resume: bool('continue the run in --out exactly where its last checkpoint left off'),
  'stop-at': int('stop (with a checkpoint) after this step, as if interrupted', { min: 1, max: MAX_STEPS }),
  lr: num('peak learning rate', { min: 1e-9, max: 10, default: D.lr }),
  seed: int('seeds the initialisation and the data order', { min: 0, max: 2 ** 32 - 1, default: D.seed }),
  accum: int('micro-batches per optimizer step', { min: 1, max: 4096, default: D.accum }),
  warmup: int('linear warm-up steps', { min: 0, max: MAX_STEPS, defaultHelp: '10% of --steps, at most 1000' }),
  decay: choice('the learning-rate decay after warm-up', DECAY_KINDS, { default: D.decay }),
  'min-lr-ratio': num('the decay ends at this fraction of --lr', { min: 0, max: 1, default: D.minLrRatio }),
  'weight-decay': num('AdamW decoupled weight decay (matrices only)', { min: 0, max: 10, default: D.weightDecay }),
  clip: num('global gradient-norm limit; 0 turns clipping off', { min: 0, max: 1e6, default: D.clip }),
  'eval-every': int('validate every N steps; 0: only at the end', { min: 0, max: MAX_STEPS, default: D.evalEvery }),
  'eval-batches': int('validation batches; 0: all of the split', { min: 0, max: MAX_STEPS, default: D.evalBatches }),
  'checkpoint-every': int('checkpoint every N steps; 0: only at the end or on a stop', {
    min: 0,
    max: MAX_STEPS,
    default: D.checkpointEvery,
  }),
  'keep-checkpoints': int('checkpoints kept', { min: 1, max: 1000, default: D.keepCheckpoints }),
  'log-every': int('a log line every N steps when not on a terminal', { min: 1, max: MAX_STEPS, default: D.logEvery }),
  tokenizer: tokenizerFlag(),
  vocab: int('BPE vocabulary size', { min: 259, max: 65536, default: 4096 }),
};

/**
 * Checks before any long work that `path` can be (or become) a directory: it is one, or nothing exists there and its
 * nearest existing ancestor is a directory. (Otherwise the run would fail with ENOTDIR/EEXIST after tokenising.)
 */
export function checkDirFlag(command: string, flag: string, path: string): void {
  for (let p = path; ; p = dirname(p)) {
    let st;
    try {
      st = statSync(p, { throwIfNoEntry: false });
    } catch (e) {
      if ((e as { code?: string }).code !== 'ENOTDIR') throw e;
    }
    if (st !== undefined) {
      if (!st.isDirectory())
        throw new UsageError(
          p === path
            ? `${command}: --${flag} ${path} is a file, not a directory; choose a directory`
            : `${command}: --${flag} ${path}: ${p} is a file, not a directory; choose another path`,
        );
      return;
    }
    if (dirname(p) === p) return;
  }
}

/** Checks batch × seq-len against MAX_BATCH_TOKENS. */
export function checkBatchTokens(command: string, batch: number, seqLen: number): void {
  if (batch * seqLen > MAX_BATCH_TOKENS)
    throw new UsageError(
      `${command}: --batch ${batch} × --seq-len ${seqLen} is ${batch * seqLen} tokens per micro-batch, ` +
        `more than ${MAX_BATCH_TOKENS}; use a smaller batch with --accum`,
    );
}

/** Settings from the flags, with `base` (the saved run on a resume) for the flags not given. */
function settingsFromFlags(p: Parsed<typeof FLAGS>, base: RunSettings | null): RunSettings {
  const { values: v, given } = p;
  /** The flag's value, or on a resume the saved setting when the flag was not given. */
  const pick = <K extends keyof typeof FLAGS & string, T>(
    flag: K,
    saved: T | undefined,
  ): FlagValues<typeof FLAGS>[K] | T => (base !== null && !given(flag) ? (saved as T) : v[flag]);
  const t = base?.train;
  const d = base?.data;
  const arch = pick('arch', base?.arch);
  const isRetNet = arch === 'retnet';
  if (!isRetNet && (given('form') || given('chunk-size')))
    throw new UsageError(`train: --form and --chunk-size apply to RetNet, not to a ${arch}`);
  const steps = pick('steps', t?.steps);
  if (steps === undefined) throw new UsageError('train: --steps N is required');
  const data = pick('data', d?.source);
  if (data === undefined) throw new UsageError('train: --data PATH|brown is required');
  const batch = pick('batch', t?.batch);
  const seqLen = pick('seq-len', t?.seqLen);
  checkBatchTokens('train', batch, seqLen);
  return {
    arch,
    preset: pick('preset', base?.preset),
    // Not given (nor saved): RetNetConfig's defaults, kept in run.json as what the run trains with.
    form: isRetNet ? (pick('form', base?.form ?? undefined) ?? configuredForm(RETNET_DEFAULTS)) : null,
    chunkSize: isRetNet ? (pick('chunk-size', base?.chunkSize ?? undefined) ?? RETNET_DEFAULTS.chunkSize) : null,
    data: {
      source: base !== null && !given('data') ? data : data === 'brown' ? 'brown' : resolve(data),
      tokenizer: pick('tokenizer', d?.tokenizer),
      vocab: pick('vocab', d?.vocab),
      valFraction: pick('val-fraction', d?.valFraction),
      jsonlField: pick('jsonl-field', d?.jsonlField),
      skipBadData: pick('skip-bad-data', d?.skipBadData),
      cacheDir: resolve(pick('cache', d?.cacheDir) ?? DEFAULT_CACHE()),
    },
    train: trainConfig({
      steps,
      batch,
      seqLen,
      accum: pick('accum', t?.accum),
      lr: pick('lr', t?.lr),
      warmupSteps: pick('warmup', t?.warmupSteps) ?? -1,
      decay: pick('decay', t?.decay),
      minLrRatio: pick('min-lr-ratio', t?.minLrRatio),
      weightDecay: pick('weight-decay', t?.weightDecay),
      beta1: t?.beta1 ?? D.beta1,
      beta2: t?.beta2 ?? D.beta2,
      eps: t?.eps ?? D.eps,
      clip: pick('clip', t?.clip),
      seed: pick('seed', t?.seed),
      evalEvery: pick('eval-every', t?.evalEvery),
      evalBatches: pick('eval-batches', t?.evalBatches),
      checkpointEvery: pick('checkpoint-every', t?.checkpointEvery),
      keepCheckpoints: pick('keep-checkpoints', t?.keepCheckpoints),
      logEvery: pick('log-every', t?.logEvery),
    }),
  };
}

/** Checks the model settings against the model's own rules before any data is read (the vocabulary comes later). */
function checkModelSettings(s: RunSettings): void {
  const vocabSize = s.data.tokenizer === 'bpe' ? s.data.vocab : fixedTokenizer(s.data.tokenizer).vocabSize;
  try {
    if (s.arch === 'retnet')
      retnetPreset(s.preset, { vocabSize, chunkwiseRecurrent: s.form === 'chunkwise', chunkSize: s.chunkSize! });
    else transformerPreset(s.preset, { vocabSize });
  } catch (e) {
    if (e instanceof ConfigError) throw new UsageError(`train: ${e.message}`);
    throw e;
  }
}

/** The first setting of `next` that differs from `saved` and may not change on a resume, or null. */
function changedSetting(saved: RunSettings, next: RunSettings): string | null {
  const flat = (s: RunSettings): Record<string, unknown> => {
    const train = Object.fromEntries(
      Object.entries(s.train).filter(([k]) => !CHANGEABLE.includes(k as keyof TrainConfig)),
    );
    return { arch: s.arch, preset: s.preset, form: s.form, chunkSize: s.chunkSize, ...s.data, ...train };
  };
  const a = flat(saved);
  const b = flat(next);
  for (const k of Object.keys(b))
    if (JSON.stringify(a[k]) !== JSON.stringify(b[k]))
      return `${k} is ${JSON.stringify(b[k])} but the run was started with ${JSON.stringify(a[k])}`;
  return null;
}

function readRunSettings(out: string): RunSettings {
  const path = join(out, 'run.json');
  if (!existsSync(path)) throw new UsageError(`train: --resume: ${out} holds no run.json (was it trained here?)`);
  return JSON.parse(readFileSync(path, 'utf8')) as RunSettings;
}

export const trainCommand = defineCommand({
  name: 'train',
  summary: 'train a model on text (a file, a directory, JSONL or brown) into a run/model directory',
  flags: FLAGS,
  epilog:
    'On --resume the settings come from DIR/run.json; flags given again must match them, except --steps and the\n' +
    'reporting cadence (--eval-every, --eval-batches, --checkpoint-every, --keep-checkpoints, --log-every).',
  async run(parsed) {
    const { values } = parsed;
    const out = resolve(values.out);
    checkDirFlag('train', 'out', out);
    // A run directory whose run stopped before its first checkpoint has nothing to lose: it starts again from step 0
    // (with its saved settings under --resume, with the flags' settings without it).
    const hasRun = existsSync(join(out, 'run.json')) || existsSync(join(out, 'checkpoints'));
    const hasCheckpoint = hasRun && latestCheckpoint(out) !== null;
    const resume = values.resume;
    let settings: RunSettings;
    if (resume) {
      const saved = readRunSettings(out);
      settings = settingsFromFlags(parsed, saved);
      const changed = changedSetting(saved, settings);
      if (changed) throw new UsageError(`train: --resume: ${changed}; a resumed run keeps its settings`);
    } else {
      if (hasCheckpoint)
        throw new UsageError(`train: ${out} already holds a run; pass --resume to continue it or choose another --out`);
      settings = settingsFromFlags(parsed, null);
      checkModelSettings(settings);
    }
    if (hasRun && !hasCheckpoint)
      process.stderr.write(`train: ${out} holds a run that stopped before its first checkpoint; starting it again\n`);
    checkDirFlag('train', 'cache', settings.data.cacheDir);
    const stopAt = values['stop-at'];
    const log = (line: string) => process.stderr.write(`${line}\n`);
    const d = settings.data;
    const data = prepareData({
      source: d.source,
      tokenizer: d.tokenizer === 'bpe' ? { bpeVocabSize: d.vocab } : fixedTokenizer(d.tokenizer),
      cacheDir: d.cacheDir,
      valFraction: d.valFraction,
      jsonlField: d.jsonlField,
      onBadData: d.skipBadData ? 'skip' : 'reject',
      log,
    });

    // A resumed run rebuilds its model from the checkpoint's config.json; a new one from the preset.
    const checkpoint = resume && hasCheckpoint ? latestCheckpoint(out) : null;
    const model = checkpoint
      ? loadModelDir(checkpoint).model
      : createModel(
          settings.arch,
          settings.preset,
          {
            vocabSize: data.tokenizer.vocabSize,
            ...(settings.form
              ? { chunkwiseRecurrent: settings.form === 'chunkwise', chunkSize: settings.chunkSize }
              : {}),
          },
          { seed: settings.train.seed },
        );
    mkdirSync(out, { recursive: true });
    if (!checkpoint) writeFileAtomic(join(out, 'run.json'), `${JSON.stringify(settings, null, 2)}\n`);
    log(
      `model: ${settings.arch} ${settings.preset}, ${model.parameterCount()} parameters, vocabulary ${model.vocabSize}` +
        (model instanceof RetNetModel ? `, ${settings.form} form` : ''),
    );

    const stop = { requested: false };
    const onSignal = () => {
      stop.requested = true;
      log('stopping after this step with a checkpoint (Ctrl-C again to abort)');
      process.once('SIGINT', () => process.exit(130));
    };
    process.once('SIGINT', onSignal);
    try {
      const r = await train({
        model,
        data,
        outDir: out,
        config: settings.train,
        writeModel: (dir) => saveModelDir(dir, model, data.tokenizer),
        resume: checkpoint !== null,
        stop,
        stopAtStep: stopAt,
      });
      process.stdout.write(
        `${JSON.stringify({ out, step: r.step, finished: r.finished, trainLoss: r.trainLoss, valLoss: r.valLoss, valPpl: r.valPpl, tokens: r.tokens, elapsedSec: r.elapsedSec })}\n`,
      );
      return 0;
    } finally {
      process.removeListener('SIGINT', onSignal);
      model.dispose();
    }
  },
});
