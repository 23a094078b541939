// `retnet logits`: the logits of a token sequence as JSON, one row per position. A stable contract: other tools
// (and torchscale comparisons) script against it.

import { getBackend } from '../backend/index.js';
import { noGrad } from '../autograd/tape.js';
import { loadModelDir } from '../io/model-dir.js';
import { SIZE_BOUNDS } from '../models/bounds.js';
import { RetNetModel } from '../models/retnet/model.js';
import { tidy } from '../tensor/scope.js';
import {
  type Command,
  UsageError,
  choiceFlag,
  intFlag,
  parseFlags,
  WEIGHTS_FLAG,
  WEIGHTS_USAGE,
  weightsFlag,
} from './command.js';

const FORMS = ['parallel', 'recurrent', 'chunkwise'] as const;

function parseTokens(text: string | undefined): number[] {
  if (text === undefined || text.trim() === '')
    throw new UsageError('logits: --tokens is required (e.g. --tokens 3,1,4)');
  return text.split(',').map((s, i) => {
    const n = Number(s.trim());
    if (s.trim() === '' || !Number.isInteger(n) || n < 0)
      throw new UsageError(`logits: --tokens entry ${i} ('${s}') is not a non-negative integer`);
    return n;
  });
}

/**
 * Streams `{"logits": [[...], ...]}` to stdout a few rows per write, so the cost is linear in the number of values and
 * no second copy of the logits (as JSON) is ever held whole. (Writes to a pipe or file are synchronous on Linux.)
 */
function writeRows(flat: ArrayLike<number>, rows: number, V: number): void {
  const ROWS_PER_WRITE = 64;
  let pending: string[] = ['{"logits":['];
  for (let i = 0; i < rows; i++) {
    const row: number[] = new Array<number>(V);
    for (let j = 0; j < V; j++) row[j] = flat[i * V + j]!;
    pending.push(`${i > 0 ? ',' : ''}${JSON.stringify(row)}`);
    if (pending.length >= ROWS_PER_WRITE) {
      process.stdout.write(pending.join(''));
      pending = [];
    }
  }
  pending.push(']}\n');
  process.stdout.write(pending.join(''));
}

export const logitsCommand: Command = {
  name: 'logits',
  summary: 'print the logits of a token sequence as JSON ({"logits": [[...], ...]})',
  usage:
    'retnet logits --model DIR --tokens 3,1,4 [--form parallel|recurrent|chunkwise] [--chunk-size N] [--dtype float32|float64] ' +
    WEIGHTS_USAGE,
  async run(argv) {
    const { values } = parseFlags('logits', argv, {
      model: { type: 'string' },
      tokens: { type: 'string' },
      form: { type: 'string' },
      'chunk-size': { type: 'string' },
      dtype: { type: 'string' },
      ...WEIGHTS_FLAG,
    });
    if (!values.model) throw new UsageError('logits: --model DIR is required');
    const tokens = parseTokens(values.tokens);
    const dtype = choiceFlag('logits', 'dtype', values.dtype, ['float32', 'float64'] as const, 'float32');
    // float64 runs on the reference backend, the only one that holds it.
    const backend = dtype === 'float64' ? getBackend('reference') : getBackend();
    const weights = weightsFlag('logits', values.weights);
    if (weights && dtype !== 'float32')
      throw new UsageError(`logits: --weights ${weights} computes in float32; leave out --dtype ${dtype}`);
    const { model } = loadModelDir(values.model, { backend, dtype, weights });
    for (const [i, t] of tokens.entries())
      if (t >= model.vocabSize)
        throw new UsageError(`logits: token ${t} at position ${i} is outside the vocabulary [0, ${model.vocabSize})`);
    const V = model.vocabSize;
    let flat: ArrayLike<number>;
    if (model instanceof RetNetModel) {
      const form = choiceFlag('logits', 'form', values.form, FORMS, 'parallel');
      const chunkSize = intFlag(
        'logits',
        'chunk-size',
        values['chunk-size'],
        model.config.chunkSize,
        1,
        SIZE_BOUNDS.chunkSize,
      );
      if (form === 'recurrent') {
        const state = model.emptyState(1);
        const out = new Float64Array(tokens.length * V);
        tokens.forEach((t, i) => {
          const l = model.step([t], state);
          out.set(l.data(), i * V);
          l.dispose();
        });
        state.dispose();
        flat = out;
      } else {
        flat = noGrad(() =>
          tidy(() => model.forward(backend.fromData(tokens, [1, tokens.length], 'int32'), { form, chunkSize }).data()),
        );
      }
    } else {
      if (values.form !== undefined || values['chunk-size'] !== undefined)
        throw new UsageError(`logits: --form and --chunk-size apply to RetNet models, not to a ${model.arch}`);
      flat = noGrad(() => tidy(() => model.forward(backend.fromData(tokens, [1, tokens.length], 'int32')).data()));
    }
    model.dispose();
    writeRows(flat, tokens.length, V);
    return 0;
  },
};
