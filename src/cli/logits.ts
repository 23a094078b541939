// `retnet logits`: the logits of a token sequence as JSON, one row per position. A stable contract: other tools
// (and torchscale comparisons) script against it.

import { getBackend } from '../backend/index.js';
import { noGrad } from '../autograd/tape.js';
import { loadModelDir } from '../io/model-dir.js';
import { RetNetModel } from '../models/retnet/model.js';
import { tidy } from '../tensor/scope.js';
import {
  DEVICE_FLAG,
  UsageError,
  WEIGHTS_FLAG,
  choice,
  defineCommand,
  formFlags,
  intItem,
  list,
  text,
} from './command.js';

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

export const logitsCommand = defineCommand({
  name: 'logits',
  summary: 'print the logits of a token sequence as JSON ({"logits": [[...], ...]})',
  flags: {
    model: text('the model directory', { placeholder: 'dir', required: true, nonEmpty: true }),
    tokens: {
      ...list('token ids, comma-separated', intItem(0, 2 ** 31 - 1), { placeholder: 'ids', maxItems: 2 ** 20 }),
      required: true,
    },
    ...formFlags(['parallel', 'recurrent', 'chunkwise']),
    ...WEIGHTS_FLAG,
    ...DEVICE_FLAG,
    dtype: choice('float64 runs on the reference backend', ['float32', 'float64'] as const, { default: 'float32' }),
  },
  async run({ values, given }) {
    const tokens = values.tokens!;
    const dtype = values.dtype;
    // float64 runs on the reference backend, the only one that holds it.
    const backend = dtype === 'float64' ? getBackend('reference') : getBackend();
    const weights = values.weights;
    if (weights && dtype !== 'float32')
      throw new UsageError(`logits: --weights ${weights} computes in float32; leave out --dtype ${dtype}`);
    const { model } = loadModelDir(values.model, { backend, dtype, weights });
    for (const [i, t] of tokens.entries())
      if (t >= model.vocabSize)
        throw new UsageError(`logits: token ${t} at position ${i} is outside the vocabulary [0, ${model.vocabSize})`);
    const V = model.vocabSize;
    let flat: ArrayLike<number>;
    if (model instanceof RetNetModel) {
      const { form, 'chunk-size': chunkSize } = values;
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
      if (given('form') || given('chunk-size'))
        throw new UsageError(`logits: --form and --chunk-size apply to RetNet models, not to a ${model.arch}`);
      flat = noGrad(() => tidy(() => model.forward(backend.fromData(tokens, [1, tokens.length], 'int32')).data()));
    }
    model.dispose();
    writeRows(flat, tokens.length, V);
    return 0;
  },
});
