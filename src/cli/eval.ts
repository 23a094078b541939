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
import { DEVICE_FLAG, UsageError, WEIGHTS_FLAG, choice, defineCommand, int, text } from './command.js';
import { DATA_FLAGS, DEFAULT_CACHE, FORM_FLAGS, type RunSettings, checkBatchTokens } from './train.js';

const SPLITS = ['val', 'train', 'all'] as const;

export const evalCommand = defineCommand({
  name: 'eval',
  summary: 'print the loss and perplexity of a model on data (JSON line with "loss" and "ppl")',
  flags: {
    model: text('the model directory', { placeholder: 'dir', required: true, nonEmpty: true }),
    ...DATA_FLAGS,
    ...FORM_FLAGS,
    data: text(DATA_FLAGS.data.help, { placeholder: 'path|brown', required: true, nonEmpty: true }),
    split: choice('which split to evaluate', SPLITS, { default: 'val' }),
    ...WEIGHTS_FLAG,
    ...DEVICE_FLAG,
    'max-batches': int('stop after this many batches', { min: 1, max: Number.MAX_SAFE_INTEGER, defaultHelp: 'all' }),
  },
  epilog:
    'Flags not given take the settings the model was trained with (DIR/run.json): --seq-len, --batch,\n' +
    '--val-fraction, --jsonl-field, --skip-bad-data, --cache; a RetNet evaluates in the form it was configured with.',
  async run({ values: v, given }) {
    const dir = resolve(v.model);
    const runPath = join(dir, 'run.json');
    const run = existsSync(runPath) ? (JSON.parse(readFileSync(runPath, 'utf8')) as RunSettings) : null;
    const split = v.split;
    const seqLen = given('seq-len') ? v['seq-len'] : (run?.train.seqLen ?? v['seq-len']);
    const batch = given('batch') ? v.batch : (run?.train.batch ?? v.batch);
    checkBatchTokens('eval', batch, seqLen);
    const maxBatches = v['max-batches'] ?? Number.MAX_SAFE_INTEGER;
    const valFraction = given('val-fraction') ? v['val-fraction'] : (run?.data.valFraction ?? v['val-fraction']);
    if (split !== 'all' && valFraction === 0)
      throw new UsageError(`eval: --split ${split} needs a validation fraction above 0 (or use --split all)`);

    const { model, tokenizer } = loadModelDir(dir, { weights: v.weights });
    if (!tokenizer)
      throw new FormatError(`${dir}: no tokenizer.json; eval needs the tokenizer the model was trained with`);
    let forward = (ids: Tensor) => model.forward(ids);
    if (model instanceof RetNetModel)
      forward = (ids) => model.forward(ids, { form: v.form, chunkSize: v['chunk-size'] });
    else if (given('form') || given('chunk-size')) {
      model.dispose();
      throw new UsageError(`eval: --form and --chunk-size apply to RetNet models, not to a ${model.arch}`);
    }

    const data = prepareData({
      source: v.data === 'brown' ? 'brown' : resolve(v.data),
      tokenizer,
      cacheDir: resolve(v.cache ?? run?.data.cacheDir ?? DEFAULT_CACHE()),
      valFraction: split === 'all' ? 0 : valFraction,
      jsonlField: given('jsonl-field') ? v['jsonl-field'] : (run?.data.jsonlField ?? v['jsonl-field']),
      onBadData: v['skip-bad-data'] || run?.data.skipBadData ? 'skip' : 'reject',
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
});
