// Choosing the next token from one row of logits: greedy (temperature 0), or a draw from the softmax at a temperature,
// restricted to the k most likely tokens (top-k), to those at least min-p times as likely as the likeliest (min-p)
// and/or to the smallest set holding probability p (top-p, nucleus), after the repetition, presence and frequency
// penalties and a per-token logit bias. Each sequence has its own seeded Rng, so a seeded request gives the same text
// whatever else is in the batch. Also the log-probabilities a client may ask for (logSoftmaxTop).

import { randomInt } from 'node:crypto';

import { ConfigError } from '../errors.js';
import { Rng } from '../tensor/random.js';

export interface SamplingOptions {
  /** Softmax temperature; 0 picks the most likely token (greedy). Default 1. */
  temperature?: number;
  /** Keep only the k most likely tokens; 0 keeps all. Default 0. */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p; 1 keeps all. Default 1. */
  topP?: number;
  /**
   * Penalty r > 0 on every token already in the prompt or the output (CTRL, Keskar et al. 2019): a positive logit is
   * divided by r, a negative one multiplied by r, so r > 1 discourages repeats. 1 is off. Default 1.
   */
  repetitionPenalty?: number;
  /** Subtracted once from the logit of every token already generated (OpenAI's presence_penalty). Default 0. */
  presencePenalty?: number;
  /** Subtracted from a token's logit once per time it was generated (OpenAI's frequency_penalty). Default 0. */
  frequencyPenalty?: number;
  /** Added to the logits of the given token ids (OpenAI's logit_bias; -100 about bans a token). Default none. */
  logitBias?: ReadonlyMap<number, number>;
  /** Keep only tokens whose probability is at least minP times the likeliest one's; 0 keeps all. Default 0. */
  minP?: number;
  /** Seed of this sequence's random draws; a random seed when absent. */
  seed?: number;
}

export type SamplingSettings = Required<SamplingOptions>;

function check(ok: boolean, what: string, expected: string, got: unknown): void {
  if (!ok) throw new ConfigError(`${what} must be ${expected}, got ${JSON.stringify(got) ?? String(got)}`);
}

/** Fills defaults and validates; errors name the field (prefixed by `where`). */
export function samplingSettings(opts: SamplingOptions = {}, where = 'sampling'): SamplingSettings {
  const s: SamplingSettings = {
    temperature: opts.temperature ?? 1,
    topK: opts.topK ?? 0,
    topP: opts.topP ?? 1,
    repetitionPenalty: opts.repetitionPenalty ?? 1,
    presencePenalty: opts.presencePenalty ?? 0,
    frequencyPenalty: opts.frequencyPenalty ?? 0,
    logitBias: opts.logitBias ?? new Map(),
    minP: opts.minP ?? 0,
    seed: opts.seed ?? randomInt(2 ** 32 - 1),
  };
  const finite = (v: number) => typeof v === 'number' && Number.isFinite(v);
  check(finite(s.temperature) && s.temperature >= 0, `${where}.temperature`, 'a number >= 0', s.temperature);
  check(Number.isInteger(s.topK) && s.topK >= 0, `${where}.topK`, 'an integer >= 0', s.topK);
  check(finite(s.topP) && s.topP > 0 && s.topP <= 1, `${where}.topP`, 'a number in (0, 1]', s.topP);
  check(
    finite(s.repetitionPenalty) && s.repetitionPenalty > 0,
    `${where}.repetitionPenalty`,
    'a number > 0',
    s.repetitionPenalty,
  );
  for (const key of ['presencePenalty', 'frequencyPenalty'] as const)
    check(finite(s[key]), `${where}.${key}`, 'a finite number', s[key]);
  for (const [token, bias] of s.logitBias)
    check(Number.isInteger(token) && token >= 0 && finite(bias), `${where}.logitBias`, 'token id -> finite number', [
      token,
      bias,
    ]);
  check(finite(s.minP) && s.minP >= 0 && s.minP <= 1, `${where}.minP`, 'a number in [0, 1]', s.minP);
  check(
    Number.isInteger(s.seed) && s.seed >= 0 && s.seed < 2 ** 32,
    `${where}.seed`,
    'an integer in [0, 2^32)',
    s.seed,
  );
  return s;
}

/** Index of the largest value; the first one on ties (as an argmax over the same row would give). */
export function argmax(xs: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i]! > xs[best]!) best = i;
  return best;
}

export class Sampler {
  readonly settings: SamplingSettings;
  private readonly rng: Rng;

  constructor(settings: SamplingSettings) {
    this.settings = settings;
    this.rng = new Rng(settings.seed);
  }

  /**
   * The next token for one row of logits [V]. `seen` holds the tokens the repetition penalty applies to (prompt and
   * output), `counts` how often each token was generated (presence and frequency penalties).
   */
  sample(
    logits: ArrayLike<number>,
    seen: ReadonlySet<number> = new Set(),
    counts: ReadonlyMap<number, number> = new Map(),
  ): number {
    const { temperature, topK, topP, minP, repetitionPenalty, presencePenalty, frequencyPenalty, logitBias } =
      this.settings;
    let scores: ArrayLike<number> = logits;
    const penalties = presencePenalty !== 0 || frequencyPenalty !== 0;
    if (repetitionPenalty !== 1 || penalties || logitBias.size > 0) {
      const adjusted = Float64Array.from(logits);
      if (repetitionPenalty !== 1)
        for (const t of seen)
          if (t < adjusted.length)
            adjusted[t] = adjusted[t]! > 0 ? adjusted[t]! / repetitionPenalty : adjusted[t]! * repetitionPenalty;
      if (penalties)
        for (const [t, c] of counts) if (t < adjusted.length) adjusted[t]! -= presencePenalty + c * frequencyPenalty;
      for (const [t, bias] of logitBias) if (t < adjusted.length) adjusted[t]! += bias;
      scores = adjusted;
    }
    if (temperature === 0) return argmax(scores);

    // Candidates: every token, or the most likely first when top-k / top-p needs an order (ties by lower id).
    const V = scores.length;
    let ids: number[] = Array.from({ length: V }, (_, i) => i);
    const truncate = (topK > 0 && topK < V) || topP < 1 || minP > 0;
    if (truncate) {
      ids.sort((a, b) => scores[b]! - scores[a]! || a - b);
      if (topK > 0 && topK < V) ids = ids.slice(0, topK);
    }
    // Softmax over the candidates at the temperature, shifted by the largest score for range.
    let max = -Infinity;
    for (const i of ids) if (scores[i]! > max) max = scores[i]!;
    const probs = ids.map((i) => Math.exp((scores[i]! - max) / temperature));
    if (minP > 0) {
      // ids are sorted, so probs[0] is the likeliest (its scaled probability is exp(0) = 1).
      let keepN = 1;
      while (keepN < probs.length && probs[keepN]! >= minP) keepN++;
      ids = ids.slice(0, keepN);
      probs.length = keepN;
    }
    let total = probs.reduce((a, b) => a + b, 0);
    if (topP < 1) {
      // ids are sorted by probability: keep the shortest prefix whose mass reaches topP (at least one token).
      let mass = 0;
      let keepN = 0;
      while (keepN < probs.length && mass < topP * total) mass += probs[keepN++]!;
      ids = ids.slice(0, keepN);
      probs.length = keepN;
      total = mass;
    }
    let u = this.rng.uniform() * total;
    for (let j = 0; j < ids.length; j++) {
      u -= probs[j]!;
      if (u < 0) return ids[j]!;
    }
    return ids[ids.length - 1]!; // u landed on the rounding remainder of `total`
  }
}

/** A token's log-probability, and the likeliest alternatives at its position when asked for. */
export interface TokenLogprob {
  token: number;
  logprob: number;
  /** The `k` likeliest tokens there, most likely first (ties by lower id). */
  top: { token: number; logprob: number }[];
}

/**
 * The model's log-probability of `token` under the log-softmax of one row of logits [V] (the model's own
 * distribution: before penalties, bias and temperature), and the k likeliest tokens with theirs.
 */
export function logSoftmaxTop(logits: ArrayLike<number>, token: number, k: number): TokenLogprob {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const logZ = max + Math.log(sum);
  // The k largest by insertion into a short sorted list: k is at most 20, V up to ~10^5.
  const top: number[] = [];
  for (let i = 0; i < logits.length && k > 0; i++) {
    if (top.length === k && logits[i]! <= logits[top[k - 1]!]!) continue;
    let at = top.length;
    while (at > 0 && logits[top[at - 1]!]! < logits[i]!) at--;
    top.splice(at, 0, i);
    if (top.length > k) top.pop();
  }
  return {
    token,
    logprob: logits[token]! - logZ,
    top: top.map((t) => ({ token: t, logprob: logits[t]! - logZ })),
  };
}
