// A batch of sequences decoded together: one prefill of all their prompts, then one model step per token for every
// row still going. Rows finish independently (end-of-text, stop string, length, cancellation) and are dropped from
// the decode state as they do, so the batch shrinks and its state memory with it.

import type { CausalLM, DecodeState } from '../models/lm.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import type { GenerationEvent } from './sequence.js';
import { Sequence } from './sequence.js';

export class DecodeBatch {
  private rows: Sequence[];
  private state: DecodeState | null = null;
  /** Tokens the sampler may pick: the model's logits beyond the tokenizer's vocabulary decode to nothing. */
  private readonly vocabLimit: number;

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

  /** Prefills every prompt and samples each row's first token. */
  async start(): Promise<GenerationEvent[]> {
    if (this.state) throw new Error('DecodeBatch.start: already started');
    const events = this.dropCancelled();
    if (this.rows.length === 0) return events;
    const { logits, state } = this.model.prefill(this.rows.map((s) => s.promptIds));
    this.state = state;
    return events.concat(await this.sample(logits));
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

  /** logits: [B, V], one row per sequence; disposed here. Read with readAsync, so a GPU device does not block. */
  private async sample(logits: Tensor): Promise<GenerationEvent[]> {
    let data;
    try {
      data = await logits.dataAsync();
    } finally {
      logits.dispose();
    }
    const V = logits.shape[1]!;
    const events: GenerationEvent[] = [];
    this.rows.forEach((s, r) => events.push(...s.next(data.subarray(r * V, r * V + this.vocabLimit))));
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
