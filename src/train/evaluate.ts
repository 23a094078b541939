// Validation: mean next-token cross-entropy over the windows of a split, in order, and its perplexity exp(loss).

import { noGrad } from '../autograd/tape.js';
import type { CausalLM } from '../models/lm.js';
import { countTargets, crossEntropy } from '../ops/nn.js';
import { tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import { type Batch, type ShardReader, sequentialBatches } from './data.js';

/** A batch as int32 tensors [rows, T] on the model's backend. */
export function batchTensors(model: CausalLM, batch: Batch, T: number): { ids: Tensor; targets: Tensor } {
  const be = model.parameters()[0]!.device;
  return {
    ids: be.fromData(batch.inputs, [batch.rows, T], 'int32'),
    targets: be.fromData(batch.targets, [batch.rows, T], 'int32'),
  };
}

export interface EvalResult {
  /** Mean cross-entropy per target token (nats). */
  loss: number;
  ppl: number;
  /** Target tokens scored. */
  tokens: number;
}

/** Scores up to maxBatches batches of the split; null when it is too short for one sequence of seqLen + 1 tokens. */
export function evaluate(
  forward: (ids: Tensor) => Tensor,
  model: CausalLM,
  reader: ShardReader,
  batch: number,
  seqLen: number,
  maxBatches = Infinity,
): EvalResult | null {
  let sum = 0;
  let tokens = 0;
  noGrad(() => {
    for (const b of sequentialBatches(reader, batch, seqLen, maxBatches))
      tidy(() => {
        const { ids, targets } = batchTensors(model, b, seqLen);
        // crossEntropy is the mean over the batch; weight it by the batch's token count.
        sum += crossEntropy(forward(ids), targets, { count: countTargets(b.targets) }).item() * b.rows * seqLen;
        tokens += b.rows * seqLen;
      });
  });
  if (tokens === 0) return null;
  const loss = sum / tokens;
  return { loss, ppl: Math.exp(loss), tokens };
}
