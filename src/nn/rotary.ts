// The rotary position tables of a model: per-pair angles θ (RetNet's or RoPE's) and the cos/sin tables of the
// positions a pass needs. Tables of positions 0..T−1 are cached per T (a training run asks for the same T every
// step); tables of arbitrary positions (decoding, prefill continuing a state) are built per call.

import type { Device } from '../backend/device.js';
import type { DType } from '../tensor/dtype.js';
import { keep } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';

/** cos/sin tables, [T, K] (shared by the batch) or [B, T, K] (per row). */
export interface RotaryTables {
  cos: Tensor;
  sin: Tensor;
  /** False when the tables belong to the Rotary cache (callers must not dispose them). */
  owned: boolean;
}

/** RetNet's θ (torchscale's RetNetRelPos): angle[2j] = angle[2j+1] = 10000^(−j/(K/2−1)) (linspace including 1). */
export function retnetAngles(K: number): Float64Array {
  const half = K / 2;
  const angles = new Float64Array(K);
  for (let j = 0; j < half; j++) {
    const a = 1 / 10000 ** (half === 1 ? 0 : j / (half - 1));
    angles[2 * j] = a;
    angles[2 * j + 1] = a;
  }
  return angles;
}

/** Standard RoPE angles: pair j of a head of K dims turns by θ^(−2j/K) per position (stored for both pair members). */
export function ropeAngles(K: number, theta: number): Float64Array {
  const angles = new Float64Array(K);
  for (let j = 0; j < K / 2; j++) angles[2 * j] = angles[2 * j + 1] = theta ** ((-2 * j) / K);
  return angles;
}

/** Tables kept per sequence length: a run uses one or two lengths; more would only be a leak. */
const CACHED_LENGTHS = 4;

export class Rotary {
  private readonly cache = new Map<number, RotaryTables>();

  constructor(
    readonly angles: Float64Array,
    private readonly backend: Device,
    private readonly dtype: DType,
  ) {}

  /** Tables [N, K] (or [N, 1, K] when `perRow`) for the given positions; owned by the caller. */
  at(positions: readonly number[], perRow: boolean): RotaryTables {
    const K = this.angles.length;
    const c = new Float64Array(positions.length * K);
    const s = new Float64Array(positions.length * K);
    positions.forEach((p, i) => {
      for (let x = 0; x < K; x++) {
        c[i * K + x] = Math.cos(p * this.angles[x]!);
        s[i * K + x] = Math.sin(p * this.angles[x]!);
      }
    });
    const shape = perRow ? [positions.length, 1, K] : [positions.length, K];
    const be = this.backend;
    return { cos: be.fromData(c, shape, this.dtype), sin: be.fromData(s, shape, this.dtype), owned: true };
  }

  /** Tables [T, K] of positions 0..T−1, from the cache (the caller must not dispose them). */
  prefix(T: number): RotaryTables {
    let t = this.cache.get(T);
    if (!t) {
      if (this.cache.size >= CACHED_LENGTHS) this.clear();
      const built = this.at([...Array(T).keys()], false);
      t = { cos: keep(built.cos), sin: keep(built.sin), owned: false };
      this.cache.set(T, t);
    }
    return t;
  }

  /** Frees the cached tables. */
  clear(): void {
    for (const t of this.cache.values()) {
      t.cos.dispose();
      t.sin.dispose();
    }
    this.cache.clear();
  }
}
