// The rotary position tables of a model: per-pair angles θ (RetNet's or RoPE's) and the cos/sin tables of the
// positions a pass needs. Tables of positions 0..T−1 are cached per T (a training run asks for the same T every
// step); tables of arbitrary positions (decoding, prefill continuing a state) are built per call.

import type { Device } from '../backend/device.js';
import type { RotaryPairs } from '../backend/kernels.js';
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

/**
 * The table layout the rotary op reads: pair j's angle `angleOf(j)` at both of its elements; pair j is (2j, 2j+1)
 * when interleaved (torchscale), (j, j + K/2) for halves (fla's rotate_half).
 */
function pairAngles(K: number, pairs: RotaryPairs, angleOf: (j: number) => number): Float64Array {
  const half = K / 2;
  const angles = new Float64Array(K);
  for (let j = 0; j < half; j++) {
    const [i0, i1] = pairs === 'halves' ? [j, j + half] : [2 * j, 2 * j + 1];
    angles[i0] = angles[i1] = angleOf(j);
  }
  return angles;
}

/** RetNet's θ (torchscale's RetNetRelPos): pair j turns by 10000^(−j/(K/2−1)) per position (linspace including 1). */
export function retnetAngles(K: number, pairs: RotaryPairs = 'interleaved'): Float64Array {
  const half = K / 2;
  return pairAngles(K, pairs, (j) => 1 / 10000 ** (half === 1 ? 0 : j / (half - 1)));
}

/** Standard RoPE angles: pair j of a head of K dims turns by θ^(−2j/K) per position. */
export function ropeAngles(K: number, theta: number, pairs: RotaryPairs = 'interleaved'): Float64Array {
  return pairAngles(K, pairs, (j) => theta ** ((-2 * j) / K));
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

  /** The tables' values for the given positions: cos and sin, [N·K] each (position i's row at i·K). */
  values(positions: readonly number[]): { cos: Float64Array; sin: Float64Array } {
    const K = this.angles.length;
    const cos = new Float64Array(positions.length * K);
    const sin = new Float64Array(positions.length * K);
    positions.forEach((p, i) => {
      for (let x = 0; x < K; x++) {
        cos[i * K + x] = Math.cos(p * this.angles[x]!);
        sin[i * K + x] = Math.sin(p * this.angles[x]!);
      }
    });
    return { cos, sin };
  }

  /** Tables [N, K] (or [N, 1, K] when `perRow`) for the given positions; owned by the caller. */
  at(positions: readonly number[], perRow: boolean): RotaryTables {
    const K = this.angles.length;
    const { cos, sin } = this.values(positions);
    const shape = perRow ? [positions.length, 1, K] : [positions.length, K];
    const be = this.backend;
    return { cos: be.fromData(cos, shape, this.dtype), sin: be.fromData(sin, shape, this.dtype), owned: true };
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
