// The learning-rate schedule: linear warmup from 0 to the peak, then cosine or linear decay to minRatio · peak at the
// last step (or a constant peak).

import { ConfigError } from '../errors.js';

export type DecayKind = 'cosine' | 'linear' | 'constant';
export const DECAY_KINDS: readonly DecayKind[] = ['cosine', 'linear', 'constant'];

export interface LrSchedule {
  peak: number;
  warmupSteps: number;
  totalSteps: number;
  decay: DecayKind;
  /** The final learning rate as a fraction of the peak. */
  minRatio: number;
}

export function validateSchedule(s: LrSchedule): LrSchedule {
  if (!(s.peak > 0 && Number.isFinite(s.peak))) throw new ConfigError(`learning rate must be positive, got ${s.peak}`);
  if (!(Number.isInteger(s.totalSteps) && s.totalSteps >= 1))
    throw new ConfigError(`steps must be a positive integer, got ${s.totalSteps}`);
  if (!(Number.isInteger(s.warmupSteps) && s.warmupSteps >= 0 && s.warmupSteps <= s.totalSteps))
    throw new ConfigError(`warmup steps must be an integer in [0, ${s.totalSteps}], got ${s.warmupSteps}`);
  if (!DECAY_KINDS.includes(s.decay))
    throw new ConfigError(`decay must be one of ${DECAY_KINDS.join(', ')}, got ${JSON.stringify(s.decay)}`);
  if (!(s.minRatio >= 0 && s.minRatio <= 1)) throw new ConfigError(`min lr ratio must be in [0, 1], got ${s.minRatio}`);
  return s;
}

/** The learning rate of update number step + 1 (step counts completed updates, from 0). */
export function learningRate(s: LrSchedule, step: number): number {
  if (step < s.warmupSteps) return (s.peak * (step + 1)) / s.warmupSteps;
  const floor = s.peak * s.minRatio;
  const span = s.totalSteps - s.warmupSteps;
  // progress runs from 0 at the first update after warmup to 1 at the last update.
  const progress = span <= 1 ? 1 : Math.min(1, (step - s.warmupSteps) / (span - 1));
  switch (s.decay) {
    case 'constant':
      return s.peak;
    case 'linear':
      return s.peak - (s.peak - floor) * progress;
    case 'cosine':
      return floor + 0.5 * (s.peak - floor) * (1 + Math.cos(Math.PI * progress));
  }
}
