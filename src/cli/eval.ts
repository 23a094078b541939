// `retnet eval --model DIR --data PATH|brown`: the mean next-token loss and perplexity of a model directory on the
// validation split of the data (the same split training held out), the training split, or all of it. Settings the
// model was trained with (DIR/run.json: sequence length, split fraction, cache) are the defaults. The last line on
// stdout is JSON with "loss" and "ppl".

import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { FormatError } from '../errors.js';
import { loadModelDir } from '../io/model-dir.js';
import { RetNetModel } from '../models/retnet/model.js';
import type { Tensor } from '../tensor/tensor.js';
import { ShardReader, prepareData } from '../train/data.js';
import { evaluate } from '../train/evaluate.js';
import {
  type Command,
  UsageError,
  choiceFlag,
  intFlag,
  numberFlag,
  parseFlags,
  WEIGHTS_FLAG,
  WEIGHTS_USAGE,
  weightsFlag,
} from './command.js';
import { DATA_FLAGS, DEFAULT_CACHE, type RunSettings } from './train.js';

const SPLITS = ['val', 'train', 'all'] as const;

export const evalCommand: Command = {
  name: 'eval',
  summary: 'print the loss and perplexity of a model on data (JSON line with "loss" and "ppl")',
  usage:
    'retnet eval --model DIR --data PATH|brown [--split val|train|all --seq-len N --batch N --max-batches N ' +
    '--form parallel|chunkwise --chunk-size N --val-fraction X --jsonl-field NAME --skip-bad-data --cache DIR] ' +
    WEIGHTS_USAGE,
  async run(argv) {
    const { values: v } = parseFlags('eval', argv, {
      ...DATA_FLAGS,
      model: { type: 'string' },
      split: { type: 'string' },
      'max-batches': { type: 'string' },
      ...WEIGHTS_FLAG,
    });
    if (!v.model) throw new UsageError('eval: --model DIR is required');
    if (!v.data) throw new UsageError('eval: --data PATH|brown is required');
    const dir = resolve(v.model);
    const runPath = join(dir, 'run.json');
    const run = existsSync(runPath) ? (JSON.parse(readFileSync(runPath, 'utf8')) as RunSettings) : null;
    const split = choiceFlag('eval', 'split', v.split, SPLITS, 'val');
    const seqLen = intFlag('eval', 'seq-len', v['seq-len'], run?.train.seqLen ?? 128);
    const batch = intFlag('eval', 'batch', v.batch, run?.train.batch ?? 8);
    const maxBatches = intFlag('eval', 'max-batches', v['max-batches'], Number.MAX_SAFE_INTEGER);
    const valFraction = numberFlag('eval', 'val-fraction', v['val-fraction'], run?.data.valFraction ?? 0.01, 0, 0.5);
    if (split !== 'all' && valFraction === 0)
      throw new UsageError(`eval: --split ${split} needs a validation fraction above 0 (or use --split all)`);

    const { model, tokenizer } = loadModelDir(dir, { weights: weightsFlag('eval', v.weights) });
    if (!tokenizer)
      throw new FormatError(`${dir}: no tokenizer.json; eval needs the tokenizer the model was trained with`);
    let forward = (ids: Tensor) => model.forward(ids);
    if (model instanceof RetNetModel) {
      const form = choiceFlag(
        'eval',
        'form',
        v.form,
        ['parallel', 'chunkwise'] as const,
        model.config.chunkwiseRecurrent ? 'chunkwise' : 'parallel',
      );
      const chunkSize = intFlag('eval', 'chunk-size', v['chunk-size'], model.config.chunkSize);
      forward = (ids) => model.forward(ids, { form, chunkSize });
    } else if (v.form !== undefined || v['chunk-size'] !== undefined)
      throw new UsageError(`eval: --form and --chunk-size apply to RetNet models, not to a ${model.arch}`);

    const data = prepareData({
      source: v.data === 'brown' ? 'brown' : resolve(v.data),
      tokenizer,
      cacheDir: resolve(v.cache ?? run?.data.cacheDir ?? DEFAULT_CACHE()),
      valFraction: split === 'all' ? 0 : valFraction,
      jsonlField: v['jsonl-field'] ?? run?.data.jsonlField ?? 'text',
      onBadData: (v['skip-bad-data'] ?? run?.data.skipBadData) ? 'skip' : 'reject',
      log: (line) => process.stderr.write(`${line}\n`),
    });
    const reader = new ShardReader(data.dir, data.manifest, split === 'val' ? 'val' : 'train');
    try {
      const r = evaluate(forward, model, reader, batch, seqLen, maxBatches);
      if (!r)
        throw new UsageError(
          `eval: the ${split} split has ${reader.tokens} tokens, too few for one sequence of --seq-len ${seqLen} + 1`,
        );
      process.stdout.write(
        `${JSON.stringify({ loss: r.loss, ppl: r.ppl, tokens: r.tokens, split, seqLen, model: dir, data: data.manifest.source })}\n`,
      );
      return 0;
    } finally {
      reader.close();
      model.dispose();
    }
  },
};
