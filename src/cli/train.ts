// `retnet train`: tokenises the data (once; the shards are reused), builds a model from a preset and trains it into a
// run directory that is also a model directory (`retnet eval --model DIR`). Ctrl-C stops after the current step with
// a checkpoint; `--resume` continues it exactly. The run's settings are kept in DIR/run.json, so a resumed command
// may repeat them (or leave them out); only --steps and the reporting cadence may change on a resume.

import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

import { writeFileAtomic } from '../io/atomic.js';
import { loadModelDir, saveModelDir } from '../io/model-dir.js';
import { ARCHS, type Arch, createModel } from '../models/registry.js';
import { RETENTION_FORMS, RETNET_DEFAULTS } from '../models/retnet/config.js';
import { RetNetModel } from '../models/retnet/model.js';
import { ByteTokenizer } from '../tokenizer/tokenizer.js';
import { latestCheckpoint } from '../train/checkpoint.js';
import { prepareData } from '../train/data.js';
import { DECAY_KINDS } from '../train/schedule.js';
import { TRAIN_DEFAULTS, type TrainConfig, train, trainConfig } from '../train/trainer.js';
import { type Command, UsageError, choiceFlag, intFlag, numberFlag, parseFlags, formFlags } from './command.js';

const TOKENIZERS = ['bytes', 'bpe'] as const;

/** Everything a run was started with, saved as run.json. */
export interface RunSettings {
  arch: Arch;
  preset: string;
  /** RetNet only: the form of the full-sequence forward pass, and the chunk size of the chunkwise form. */
  form: (typeof RETENTION_FORMS)[number] | null;
  chunkSize: number | null;
  data: {
    source: string;
    tokenizer: (typeof TOKENIZERS)[number];
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

/** Data flags shared with `retnet eval`. */
export const DATA_FLAGS = {
  data: { type: 'string' },
  'val-fraction': { type: 'string' },
  'jsonl-field': { type: 'string' },
  'skip-bad-data': { type: 'boolean' },
  cache: { type: 'string' },
  'seq-len': { type: 'string' },
  batch: { type: 'string' },
  form: { type: 'string' },
  'chunk-size': { type: 'string' },
} as const;

const FLAGS = {
  ...DATA_FLAGS,
  arch: { type: 'string' },
  preset: { type: 'string' },
  steps: { type: 'string' },
  out: { type: 'string' },
  lr: { type: 'string' },
  seed: { type: 'string' },
  resume: { type: 'boolean' },
  'stop-at': { type: 'string' },
  accum: { type: 'string' },
  warmup: { type: 'string' },
  decay: { type: 'string' },
  'min-lr-ratio': { type: 'string' },
  'weight-decay': { type: 'string' },
  clip: { type: 'string' },
  'eval-every': { type: 'string' },
  'eval-batches': { type: 'string' },
  'checkpoint-every': { type: 'string' },
  'keep-checkpoints': { type: 'string' },
  'log-every': { type: 'string' },
  tokenizer: { type: 'string' },
  vocab: { type: 'string' },
} as const;

type Values = ReturnType<typeof parseFlags<typeof FLAGS>>['values'];

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

/** Settings from the flags, with `base` (defaults, or the saved run on a resume) for flags not given. */
function settingsFromFlags(v: Values, base: RunSettings | null): RunSettings {
  const c = 'train';
  const t = base?.train;
  const arch = choiceFlag(c, 'arch', v.arch, ARCHS, base?.arch ?? 'retnet');
  const isRetNet = arch === 'retnet';
  if (!isRetNet && (v.form !== undefined || v['chunk-size'] !== undefined))
    throw new UsageError(`train: --form and --chunk-size apply to RetNet, not to a ${arch}`);
  const pass = isRetNet
    ? formFlags(
        c,
        v,
        {
          chunkwiseRecurrent: base?.form === 'chunkwise',
          chunkSize: base?.chunkSize ?? RETNET_DEFAULTS.chunkSize,
        },
        RETENTION_FORMS,
      )
    : null;
  const steps = intFlag(c, 'steps', v.steps, t?.steps ?? 0);
  if (steps === 0) throw new UsageError('train: --steps N is required');
  const source = v.data === undefined ? base?.data.source : v.data === 'brown' ? 'brown' : resolve(v.data);
  if (source === undefined) throw new UsageError('train: --data PATH|brown is required');
  const d = base?.data;
  const D = TRAIN_DEFAULTS;
  return {
    arch,
    preset: v.preset ?? base?.preset ?? 'tiny',
    form: pass?.form ?? null,
    chunkSize: pass?.chunkSize ?? null,
    data: {
      source,
      tokenizer: choiceFlag(c, 'tokenizer', v.tokenizer, TOKENIZERS, d?.tokenizer ?? 'bytes'),
      vocab: intFlag(c, 'vocab', v.vocab, d?.vocab ?? 4096, 259),
      valFraction: numberFlag(c, 'val-fraction', v['val-fraction'], d?.valFraction ?? 0.01, 0, 0.5),
      jsonlField: v['jsonl-field'] ?? d?.jsonlField ?? 'text',
      skipBadData: v['skip-bad-data'] ?? d?.skipBadData ?? false,
      cacheDir: resolve(v.cache ?? d?.cacheDir ?? DEFAULT_CACHE()),
    },
    train: trainConfig({
      steps,
      batch: intFlag(c, 'batch', v.batch, t?.batch ?? D.batch),
      seqLen: intFlag(c, 'seq-len', v['seq-len'], t?.seqLen ?? D.seqLen),
      accum: intFlag(c, 'accum', v.accum, t?.accum ?? D.accum),
      lr: numberFlag(c, 'lr', v.lr, t?.lr ?? D.lr, Number.MIN_VALUE),
      warmupSteps: intFlag(c, 'warmup', v.warmup, t?.warmupSteps ?? -1, 0),
      decay: choiceFlag(c, 'decay', v.decay, DECAY_KINDS, t?.decay ?? D.decay),
      minLrRatio: numberFlag(c, 'min-lr-ratio', v['min-lr-ratio'], t?.minLrRatio ?? D.minLrRatio, 0, 1),
      weightDecay: numberFlag(c, 'weight-decay', v['weight-decay'], t?.weightDecay ?? D.weightDecay, 0),
      beta1: t?.beta1 ?? D.beta1,
      beta2: t?.beta2 ?? D.beta2,
      eps: t?.eps ?? D.eps,
      clip: numberFlag(c, 'clip', v.clip, t?.clip ?? D.clip, 0),
      seed: intFlag(c, 'seed', v.seed, t?.seed ?? D.seed, 0, 0xffffffff),
      evalEvery: intFlag(c, 'eval-every', v['eval-every'], t?.evalEvery ?? D.evalEvery, 0),
      evalBatches: intFlag(c, 'eval-batches', v['eval-batches'], t?.evalBatches ?? D.evalBatches, 0),
      checkpointEvery: intFlag(
        c,
        'checkpoint-every',
        v['checkpoint-every'],
        t?.checkpointEvery ?? D.checkpointEvery,
        0,
      ),
      keepCheckpoints: intFlag(c, 'keep-checkpoints', v['keep-checkpoints'], t?.keepCheckpoints ?? D.keepCheckpoints),
      logEvery: intFlag(c, 'log-every', v['log-every'], t?.logEvery ?? D.logEvery),
    }),
  };
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

export const trainCommand: Command = {
  name: 'train',
  summary: 'train a model on text (a file, a directory, JSONL or brown) into a run/model directory',
  usage:
    `retnet train --arch ${ARCHS.join('|')} --preset NAME --data PATH|brown --steps N --out DIR ` +
    '[--seq-len N --batch N --lr X --form parallel|chunkwise --seed N --resume] ' +
    '[--accum N --warmup N --decay cosine|linear|constant --min-lr-ratio X --weight-decay X --clip X ' +
    '--eval-every N --eval-batches N --checkpoint-every N --keep-checkpoints N --log-every N --stop-at N ' +
    '--tokenizer bytes|bpe --vocab N --val-fraction X --jsonl-field NAME --skip-bad-data --cache DIR --chunk-size N]',
  async run(argv) {
    const { values } = parseFlags('train', argv, FLAGS);
    if (!values.out) throw new UsageError('train: --out DIR is required');
    const out = resolve(values.out);
    checkDirFlag('train', 'out', out);
    // A run directory whose run stopped before its first checkpoint has nothing to lose: it starts again from step 0
    // (with its saved settings under --resume, with the flags' settings without it).
    const hasRun = existsSync(join(out, 'run.json')) || existsSync(join(out, 'checkpoints'));
    const hasCheckpoint = hasRun && latestCheckpoint(out) !== null;
    const resume = values.resume === true;
    let settings: RunSettings;
    if (resume) {
      const saved = readRunSettings(out);
      settings = settingsFromFlags(values, saved);
      const changed = changedSetting(saved, settings);
      if (changed) throw new UsageError(`train: --resume: ${changed}; a resumed run keeps its settings`);
    } else {
      if (hasCheckpoint)
        throw new UsageError(`train: ${out} already holds a run; pass --resume to continue it or choose another --out`);
      settings = settingsFromFlags(values, null);
    }
    if (hasRun && !hasCheckpoint)
      process.stderr.write(`train: ${out} holds a run that stopped before its first checkpoint; starting it again\n`);
    checkDirFlag('train', 'cache', settings.data.cacheDir);
    const stopAt = values['stop-at'] === undefined ? undefined : intFlag('train', 'stop-at', values['stop-at'], 1);
    const log = (line: string) => process.stderr.write(`${line}\n`);

    const d = settings.data;
    const data = prepareData({
      source: d.source,
      tokenizer: d.tokenizer === 'bpe' ? { bpeVocabSize: d.vocab } : new ByteTokenizer(),
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
};
