// A batch of sequences decoded together: their prompts prefilled, then one model step per token for every row still
// going. Rows finish independently (end-of-text, stop string, length, cancellation) and are dropped from the decode
// state as they do, so the batch shrinks and its state memory with it. Sequences with the same prompt (the n samples
// of one request) share one prefill: the state row is copied (DecodeState.select with a repeated row), not recomputed.

import { noGrad } from '../autograd/tape.js';
import type { CausalLM, DecodeState } from '../models/lm.js';
import { keep, tidy } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { GenerationEvent } from './sequence.js';
import { Sequence } from './sequence.js';

/** The distinct prompts of some sequences, and for each sequence the position of its prompt among them. */
export function distinctPrompts(sequences: readonly Sequence[]): { prompts: (readonly number[])[]; rowOf: number[] } {
  const at = new Map<string, number>();
  const prompts: (readonly number[])[] = [];
  const rowOf = sequences.map((s) => {
    const key = s.promptIds.join(',');
    let row = at.get(key);
    if (row === undefined) {
      at.set(key, (row = prompts.length));
      prompts.push(s.promptIds);
    }
    return row;
  });
  return { prompts, rowOf };
}

/**
 * Scores the prompts of the sequences that ask for prompt logprobs: one full forward pass per distinct prompt
 * (logits [1, T, V]: a prefill keeps only the last position's). Then the sequences that generate nothing end; their
 * end events are returned.
 */
export async function scorePrompts(
  model: CausalLM,
  vocabLimit: number,
  sequences: readonly Sequence[],
): Promise<GenerationEvent[]> {
  const events: GenerationEvent[] = [];
  const scoring = sequences.filter((s) => s.promptLogprobs !== undefined && !s.finished);
  const { prompts, rowOf } = distinctPrompts(scoring);
  for (const [row, ids] of prompts.entries()) {
    const V = model.vocabSize;
    const out = noGrad(() => tidy(() => keep(model.forward(model.backend.fromData(ids, [1, ids.length], 'int32')))));
    let logits;
    try {
      logits = await out.dataAsync();
    } finally {
      out.dispose();
    }
    scoring.forEach((s, i) => {
      if (rowOf[i] === row) s.scorePrompt(logits as Float32Array | Float64Array, V, vocabLimit);
    });
  }
  for (const s of sequences) if (s.promptOnly && !s.finished) events.push(s.finishPromptOnly());
  return events;
}

export class DecodeBatch {
  private rows: Sequence[];
  private state: DecodeState | null = null;
  /** Tokens the sampler may pick: the model's logits beyond the tokenizer's vocabulary decode to nothing. */
  readonly vocabLimit: number;

  constructor(
    private readonly model: CausalLM,
    tokenizer: Tokenizer,
    sequences: readonly Sequence[],
  ) {
    this.rows = [...sequences];
    this.vocabLimit = Math.min(model.vocabSize, tokenizer.vocabSize);
  }

  /** Sequences still being generated. */
  get size(): number {
    return this.rows.length;
  }

  /** Scores the prompts that ask for it, prefills every distinct prompt in one call and samples each first token. */
  async start(): Promise<GenerationEvent[]> {
    if (this.state) throw new Error('DecodeBatch.start: already started');
    const events = this.dropCancelled();
    events.push(...(await scorePrompts(this.model, this.vocabLimit, this.rows)));
    this.keepUnfinished();
    if (this.rows.length === 0) return events;
    const { prompts, rowOf } = distinctPrompts(this.rows);
    const { logits, state } = this.model.prefill(prompts);
    return events.concat(await this.begin(logits, state, rowOf));
  }

  /**
   * Starts from a prefill done elsewhere (the scheduler's, in pieces): logits [P, V] and state of P rows after the
   * distinct prompts, rowOf[i] the row of sequence i. Samples each first token; the state is taken over.
   */
  async begin(logits: Tensor, state: DecodeState, rowOf: readonly number[]): Promise<GenerationEvent[]> {
    if (this.state) throw new Error('DecodeBatch.begin: already started');
    // n samples of one prompt: copy its state row n times (cheap next to the prefill it saves).
    if (rowOf.length !== state.batch || rowOf.some((r, i) => r !== i)) state.select(rowOf);
    this.state = state;
    return this.sample(logits, rowOf);
  }

  /** Feeds each row its last token and samples the next. */
  async step(): Promise<GenerationEvent[]> {
    const events = this.dropCancelled();
    if (this.rows.length === 0) return events;
    if (!this.state) throw new Error('DecodeBatch.step: call start() first');
    const logits = this.model.step(
      this.rows.map((s) => s.lastToken),
      this.state,
    );
    return events.concat(await this.sample(logits));
  }

  /**
   * Moves every row of another started batch into this one, when the model's state can append (DecodeState.append).
   * Returns false, changing nothing, when it cannot.
   */
  absorb(other: DecodeBatch): boolean {
    if (!this.state?.append || !other.state) return false;
    this.state.append(other.state);
    this.rows.push(...other.rows);
    other.rows = [];
    other.state = null;
    return true;
  }

  /** Frees the decode state (rows still going are left unfinished). */
  dispose(): void {
    this.state?.dispose();
    this.state = null;
    this.rows = [];
  }

  /**
   * logits: [P, V], row rowOf[r] for sequence r (default r); disposed here. Read with dataAsync, so a GPU device does
   * not block.
   */
  private async sample(logits: Tensor, rowOf?: readonly number[]): Promise<GenerationEvent[]> {
    let data;
    try {
      data = await logits.dataAsync();
    } finally {
      logits.dispose();
    }
    const V = logits.shape[1]!;
    const events: GenerationEvent[] = [];
    this.rows.forEach((s, r) => {
      const at = (rowOf?.[r] ?? r) * V;
      events.push(...s.next(data.subarray(at, at + this.vocabLimit)));
    });
    this.keepUnfinished();
    return events;
  }

  private dropCancelled(): GenerationEvent[] {
    const events: GenerationEvent[] = [];
    for (const s of this.rows) if (s.signal?.aborted) events.push(s.abort());
    this.keepUnfinished();
    return events;
  }

  private keepUnfinished(): void {
    const rows = this.rows.flatMap((s, r) => (s.finished ? [] : [r]));
    if (rows.length === this.rows.length) return;
    this.rows = rows.map((r) => this.rows[r]!);
    if (!this.state) return;
    if (rows.length > 0) this.state.select(rows);
    else {
      this.state.dispose();
      this.state = null;
    }
  }
}
