// generate(): several prompts decoded together, as a stream of events. The prompts are prefilled with the model's
// full-sequence form (RetNet: chunkwise; Transformer: filling its KV cache), then each step feeds every unfinished
// row one token through the recurrent form. Between steps the loop yields to the event loop, so the longest time it
// holds the thread is one model call.

import { nextMacrotask } from './macrotask.js';

import type { CausalLM } from '../models/lm.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { DecodeBatch } from './batch.js';
import { type GenerationEvent, type GenerationRequest, Sequence } from './sequence.js';

export interface GenerateOptions {
  /** Cancels every sequence: each ends with finishReason 'abort' at the next step. */
  signal?: AbortSignal;
}

/** The signal that fires when any of the given ones does. */
export function eitherSignal(...signals: (AbortSignal | undefined)[]): AbortSignal | undefined {
  const present = signals.filter((s): s is AbortSignal => s !== undefined);
  return present.length <= 1 ? present[0] : AbortSignal.any(present);
}

/**
 * Generates for every request and streams the events: a 'token' event per token (its `index` is the request's
 * position) and one 'end' event per sequence. Requests are validated before this returns (ConfigError otherwise).
 * Breaking out of the iteration frees the decode state.
 */
export function generate(
  model: CausalLM,
  tokenizer: Tokenizer,
  requests: readonly GenerationRequest[],
  opts: GenerateOptions = {},
): AsyncGenerator<GenerationEvent> {
  const sequences = requests.map(
    (r, i) =>
      new Sequence(
        i,
        { ...r, signal: eitherSignal(r.signal, opts.signal) },
        tokenizer,
        model.vocabSize,
        `requests[${i}]`,
      ),
  );
  return run(new DecodeBatch(model, tokenizer, sequences));
}

async function* run(batch: DecodeBatch): AsyncGenerator<GenerationEvent> {
  try {
    yield* await batch.start();
    while (batch.size > 0) {
      await nextMacrotask();
      yield* await batch.step();
    }
  } finally {
    batch.dispose();
  }
}
