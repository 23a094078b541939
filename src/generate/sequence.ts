// One sequence being generated: its request (prompt, limits, sampling settings, stop strings), its sampler and the
// text stream it produces. The decode loop hands it one row of logits per step; it picks the token and says what
// text that token releases and whether the sequence is finished.

import { ConfigError } from '../errors.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { type SamplingOptions, Sampler, type TokenLogprob, logSoftmaxTop, samplingSettings } from './sampler.js';
import { IncrementalDetokenizer, StopMatcher } from './text.js';

export interface GenerationRequest {
  /** Text (encoded with the tokenizer) or token ids. An empty text starts from the end-of-text token. */
  prompt: string | readonly number[];
  /** The most tokens to generate (0: none; the prompt alone is scored, see promptLogprobs). */
  maxNewTokens: number;
  sampling?: SamplingOptions;
  /** Generation ends before the first occurrence of any of these strings, which is not part of the output. */
  stop?: readonly string[];
  /** Keep going after an end-of-text token (it is then an ordinary token). */
  ignoreEos?: boolean;
  /**
   * The ids that end generation (default: the tokenizer's eosId). A model directory's generation_config.json may list
   * several; `loadForGeneration` returns them with the tokenizer's.
   */
  eosIds?: readonly number[];
  /** Cancels this sequence alone. */
  signal?: AbortSignal;
  /** Each token event carries the token's log-probability and this many likeliest alternatives (0-20). */
  logprobs?: number;
  /** The sequence's first event carries every prompt token's log-probability and this many alternatives (0-20). */
  promptLogprobs?: number;
}

/** The most alternatives a token's log-probability may come with. */
export const MAX_TOP_LOGPROBS = 20;

/** 'stop': end-of-text token or a stop string; 'length': maxNewTokens reached; 'abort': cancelled. */
export type FinishReason = 'stop' | 'length' | 'abort';

/** A generated token and the text it releases ('' while a character or a possible stop string is incomplete). */
export interface TokenEvent {
  type: 'token';
  /** The sequence's index among the requests. */
  index: number;
  token: number;
  text: string;
  /** When the request asked for logprobs. */
  logprob?: TokenLogprob;
  /** On a sequence's first event, when the request asked for promptLogprobs. */
  promptLogprobs?: PromptLogprobs;
}

/** The log-probability of each prompt token given the ones before (null for the first token). */
export type PromptLogprobs = (TokenLogprob | null)[];

/** The sequence is finished; `text` is the last of its text (held back until now). */
export interface EndEvent {
  type: 'end';
  index: number;
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  /** On a sequence's first event, when the request asked for promptLogprobs. */
  promptLogprobs?: PromptLogprobs;
}

export type GenerationEvent = TokenEvent | EndEvent;

/** The ids of a text prompt; an empty text becomes the end-of-text token (the start of a document). */
export function encodePrompt(text: string, tokenizer: Tokenizer): number[] {
  return text === '' ? [tokenizer.eosId] : tokenizer.encode(text);
}

export class Sequence {
  readonly promptIds: readonly number[];
  private readonly sampler: Sampler;
  private readonly maxNewTokens: number;
  private readonly ignoreEos: boolean;
  private readonly eosIds: ReadonlySet<number>;
  private readonly detokenizer: IncrementalDetokenizer;
  private readonly stops: StopMatcher;
  /** Tokens the repetition penalty applies to (prompt and output); empty when the penalty is off. */
  private readonly seen = new Set<number>();
  /** How often each token was generated (presence and frequency penalties); empty when they are off. */
  private readonly counts = new Map<number, number>();
  private readonly penalised: boolean;
  readonly logprobs: number | undefined;
  readonly promptLogprobs: number | undefined;
  /** Scored prompt logprobs, until the first event takes them. */
  private scored: PromptLogprobs | undefined;
  readonly signal: AbortSignal | undefined;
  completionTokens = 0;
  /** The token to feed at the next step. */
  lastToken = -1;
  finished = false;

  /** Validates the request; errors name the field, prefixed by `where` (e.g. "requests[2]"). */
  constructor(
    readonly index: number,
    request: GenerationRequest,
    tokenizer: Tokenizer,
    vocabSize: number,
    where = 'request',
  ) {
    const { prompt, maxNewTokens, stop = [] } = request;
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0)
      throw new ConfigError(`${where}.maxNewTokens must be an integer >= 0, got ${String(maxNewTokens)}`);
    for (const key of ['logprobs', 'promptLogprobs'] as const) {
      const k = request[key];
      if (k !== undefined && (!Number.isInteger(k) || k < 0 || k > MAX_TOP_LOGPROBS))
        throw new ConfigError(`${where}.${key} must be an integer in [0, ${MAX_TOP_LOGPROBS}], got ${String(k)}`);
    }
    this.logprobs = request.logprobs;
    this.promptLogprobs = request.promptLogprobs;
    if (!Array.isArray(stop) || stop.some((s) => typeof s !== 'string' || s === ''))
      throw new ConfigError(`${where}.stop must be an array of non-empty strings`);
    if (typeof prompt !== 'string' && !Array.isArray(prompt))
      throw new ConfigError(`${where}.prompt must be a string or an array of token ids`);
    const ids = typeof prompt === 'string' ? encodePrompt(prompt, tokenizer) : prompt;
    if (ids.length === 0) throw new ConfigError(`${where}.prompt is an empty list of token ids`);
    const bad = ids.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= vocabSize);
    if (bad >= 0)
      throw new ConfigError(
        `${where}.prompt token ${bad} (${String(ids[bad])}) is not an id of the model's vocabulary [0, ${vocabSize})`,
      );
    this.promptIds = [...ids];
    const settings = samplingSettings(request.sampling, `${where}.sampling`);
    this.sampler = new Sampler(settings);
    if (settings.repetitionPenalty !== 1) for (const t of this.promptIds) this.seen.add(t);
    this.penalised = settings.presencePenalty !== 0 || settings.frequencyPenalty !== 0;
    this.maxNewTokens = maxNewTokens;
    this.ignoreEos = request.ignoreEos ?? false;
    const eosIds = request.eosIds ?? [tokenizer.eosId];
    if (!Array.isArray(eosIds) || eosIds.some((t) => !Number.isInteger(t) || t < 0 || t >= vocabSize))
      throw new ConfigError(`${where}.eosIds must be ids of the model's vocabulary [0, ${vocabSize})`);
    this.eosIds = new Set(eosIds);
    this.detokenizer = new IncrementalDetokenizer(tokenizer);
    this.stops = new StopMatcher(stop);
    this.signal = request.signal;
  }

  /** Whether it generates nothing (maxNewTokens 0): it ends right after its prompt (and its prompt logprobs). */
  get promptOnly(): boolean {
    return this.maxNewTokens === 0;
  }

  /** Scores the prompt from logits [T, V] of its positions (row j predicts token j + 1), for the first event. */
  scorePrompt(logits: Float32Array | Float64Array, V: number, vocabLimit: number): void {
    const k = this.promptLogprobs ?? 0;
    this.scored = this.promptIds.map((token, j) =>
      j === 0 ? null : logSoftmaxTop(logits.subarray((j - 1) * V, (j - 1) * V + vocabLimit), token, k),
    );
  }

  /** The prompt logprobs for the first event (once). */
  private takeScored(): { promptLogprobs?: PromptLogprobs } {
    const promptLogprobs = this.scored;
    this.scored = undefined;
    return promptLogprobs ? { promptLogprobs } : {};
  }

  /** Ends a prompt-only sequence (maxNewTokens 0) with finish reason 'length'. */
  finishPromptOnly(): EndEvent {
    return this.end('length', '');
  }

  /** Picks the next token from its logits row [V] and returns its event, plus the end event when it finishes. */
  next(logits: ArrayLike<number>): GenerationEvent[] {
    const token = this.sampler.sample(logits, this.seen, this.counts);
    if (this.sampler.settings.repetitionPenalty !== 1) this.seen.add(token);
    if (this.penalised) this.counts.set(token, (this.counts.get(token) ?? 0) + 1);
    const logprob = this.logprobs === undefined ? undefined : logSoftmaxTop(logits, token, this.logprobs);
    this.lastToken = token;
    this.completionTokens++;
    if (this.eosIds.has(token) && !this.ignoreEos)
      return [
        { type: 'token', index: this.index, token, text: '', logprob, ...this.takeScored() },
        this.end('stop', this.flush().text),
      ];
    const { text, stopped } = this.stops.push(this.detokenizer.push(token));
    const event: TokenEvent = { type: 'token', index: this.index, token, text, logprob, ...this.takeScored() };
    if (stopped) return [event, this.end('stop', '')];
    if (this.completionTokens < this.maxNewTokens) return [event];
    const rest = this.flush();
    return [event, this.end(rest.stopped ? 'stop' : 'length', rest.text)];
  }

  /** Ends the sequence as cancelled; text still held back is dropped. */
  abort(): EndEvent {
    return this.end('abort', '');
  }

  /** The text held back by the detokenizer and the stop matcher, at the end of the stream. */
  private flush(): { text: string; stopped: boolean } {
    const last = this.stops.push(this.detokenizer.flush());
    return last.stopped ? last : { text: last.text + this.stops.flush(), stopped: false };
  }

  private end(finishReason: FinishReason, text: string): EndEvent {
    this.finished = true;
    return {
      type: 'end',
      index: this.index,
      text,
      finishReason,
      promptTokens: this.promptIds.length,
      completionTokens: this.completionTokens,
      ...this.takeScored(),
    };
  }
}
