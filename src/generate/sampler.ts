// Choosing the next token from one row of logits: greedy (temperature 0), or a draw from the softmax at a temperature,
// restricted to the k most likely tokens (top-k) and/or the smallest set holding probability p (top-p, nucleus), after
// a repetition penalty. Each sequence has its own seeded Rng, so a seeded request gives the same text whatever else
// is in the batch.


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
    seed: opts.seed ?? globalThis.crypto.getRandomValues(new Uint32Array(1))[0]!,
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

  /** The next token for one row of logits [V]; `seen` holds the tokens the repetition penalty applies to. */
  sample(logits: ArrayLike<number>, seen: ReadonlySet<number>): number {
    const { temperature, topK, topP, repetitionPenalty } = this.settings;
    let scores: ArrayLike<number> = logits;
    if (repetitionPenalty !== 1) {
      const penalised = Float64Array.from(logits);
      for (const t of seen)
        if (t < penalised.length)
          penalised[t] = penalised[t]! > 0 ? penalised[t]! / repetitionPenalty : penalised[t]! * repetitionPenalty;
      scores = penalised;
    }
    if (temperature === 0) return argmax(scores);

    // Candidates: every token, or the most likely first when top-k / top-p needs an order (ties by lower id).
    const V = scores.length;
    let ids: number[] = Array.from({ length: V }, (_, i) => i);
    const truncate = (topK > 0 && topK < V) || topP < 1;
    if (truncate) {
      ids.sort((a, b) => scores[b]! - scores[a]! || a - b);
      if (topK > 0 && topK < V) ids = ids.slice(0, topK);
    }
    // Softmax over the candidates at the temperature, shifted by the largest score for range.
    let max = -Infinity;
    for (const i of ids) if (scores[i]! > max) max = scores[i]!;
    const probs = ids.map((i) => Math.exp((scores[i]! - max) / temperature));
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
