// Retention ops (RetNet's multi-scale retention core). The normalisers of each form are detached (as in torchscale),
// so the gradient is that of the un-normalised retention scaled by the saved row factors. The kernels carry state as
// fla's and ggml's do: a call may continue a state per sequence, return the state after each sequence, and take
// packed sequences of different lengths (docs/retention.md).

import { type RetentionForm, type RetentionState, kernels } from '../backend/kernels.js';
import { needsGrad, record } from '../autograd/tape.js';
import { DTypeError, RetnetError, ShapeError, formatShape } from '../errors.js';
import type { Tensor } from '../tensor/tensor.js';
import { deviceOf, expectFloat, expectShape, sameDType } from './check.js';

export type { RetentionState } from '../backend/kernels.js';

export interface RetentionOptions {
  /** Chunk size of the chunkwise form (any positive size; it need not divide T). */
  chunkSize?: number;
  /** torchscale's normalisers (default true); false: fla's plain retention o = q S, the same function in every form. */
  normalize?: boolean;
  /**
   * The state each sequence continues: state [N, H, K, V] and scale [N, H] (a RetNet decode state's layer), N the
   * batch or the number of segments. Not differentiable: the call must run without gradients.
   */
  initialState?: RetentionState | null;
  /** Also return the state after each sequence ([N, H, K, V], [N, H]). */
  returnFinalState?: boolean;
  /**
   * Lengths of packed sequences along T (fla's cu_seqlens, as lengths): q, k, v are [1, T, H, *] with sequence i at
   * positions [Σ_{j<i} len_j, Σ_{j≤i} len_j); each starts from its own state. Not differentiable.
   */
  segments?: readonly number[] | null;
}

function checkGammas(op: string, gammas: readonly number[], H: number): void {
  if (gammas.length !== H) throw new ShapeError(`${op}: ${gammas.length} decay values for ${H} heads`);
  for (const g of gammas) if (!(g > 0 && g < 1)) throw new ShapeError(`${op}: decay ${g} is not in (0, 1)`);
}

/**
 * Multi-scale retention in the parallel (paper Eq. 5) or chunkwise (Eq. 7) form, with torchscale's normalisations
 * unless `normalize` is false. q, k: [B, T, H, K] (rotated; k scaled by K^-0.5), v: [B, T, H, V], gammas: [H].
 * Returns o: [B, T, H, V] and, with `returnFinalState`, the state after each sequence.
 */
export function retentionForward(
  form: RetentionForm,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gammas: readonly number[],
  opts: RetentionOptions = {},
): { o: Tensor; finalState: RetentionState | null } {
  const op = 'retention';
  const be = deviceOf(op, q, k, v);
  const kern = kernels(be, q.dtype);
  expectFloat(op, 'q', q);
  sameDType(op, q, k);
  sameDType(op, q, v);
  if (q.rank !== 4) throw new ShapeError(`${op}: q must be [B, T, H, K], got ${formatShape(q.shape)}`);
  const [B, T, H, K] = q.shape as [number, number, number, number];
  expectShape(op, 'k', k, q.shape);
  if (v.rank !== 4 || v.shape[0] !== B || v.shape[1] !== T || v.shape[2] !== H)
    throw new ShapeError(`${op}: v must be [${B}, ${T}, ${H}, V], got ${formatShape(v.shape)}`);
  const V = v.shape[3]!;
  checkGammas(op, gammas, H);
  if (form !== 'parallel' && form !== 'chunkwise')
    throw new ShapeError(`${op}: form must be 'parallel' or 'chunkwise', got ${JSON.stringify(form)}`);
  const chunkSize = opts.chunkSize ?? 0;
  if (form === 'chunkwise' && (!Number.isInteger(chunkSize) || chunkSize < 1))
    throw new ShapeError(`${op}: the chunkwise form needs a positive integer chunkSize, got ${opts.chunkSize}`);
  const segments = opts.segments ?? null;
  if (segments) {
    if (B !== 1) throw new ShapeError(`${op}: packed segments need a batch of one row, got q ${formatShape(q.shape)}`);
    if (segments.some((n) => !Number.isInteger(n) || n < 0))
      throw new ShapeError(`${op}: segment lengths must be non-negative integers, got [${segments.join(', ')}]`);
    const total = segments.reduce((a, n) => a + n, 0);
    if (total !== T) throw new ShapeError(`${op}: segment lengths sum to ${total}, but T is ${T}`);
  }
  const N = segments ? segments.length : B;
  const initialState = opts.initialState ?? null;
  if (initialState) {
    deviceOf(op, q, initialState.state, initialState.scale);
    sameDType(op, q, initialState.state);
    sameDType(op, q, initialState.scale);
    expectShape(op, 'initialState.state', initialState.state, [N, H, K, V]);
    expectShape(op, 'initialState.scale', initialState.scale, [N, H]);
  }
  const differentiable = needsGrad(q, k, v);
  if (differentiable && (initialState || segments))
    throw new RetnetError(
      `${op}: training through ${initialState ? 'an initial state' : 'packed segments'} is not supported; ` +
        'run it without gradients (noGrad), or train on whole sequences',
    );
  const normalize = opts.normalize ?? true;
  const run = { chunkSize, normalize, initialState, segments, returnFinalState: opts.returnFinalState === true };
  const { o, r, finalState } = kern.retentionForward(form, q, k, v, gammas, run);
  // o is [B, T, H, V] (V = 2K in RetNet) and only the gated norm after it reads it: in the chunkwise form,
  // recomputing it from q, k, v (which the backward keeps anyway) costs one more linear-time pass of the kernel and
  // frees V floats per head and token. The parallel form's pass is quadratic in T, so there o is kept.
  const recompute = () => {
    const again = kern.retentionForward(form, q, k, v, gammas, { ...run, returnFinalState: false });
    again.r.dispose();
    return again.o;
  };
  if (differentiable)
    record(
      `retention.${form}`,
      [q, k, v],
      [o],
      ([g]) => {
        const { dq, dk, dv } = kern.retentionBackward(form, q, k, v, gammas, r, g!, chunkSize);
        r.dispose();
        return [dq, dk, dv];
      },
      { saved: [q, k, v], recompute: form === 'chunkwise' ? recompute : undefined },
    );
  else r.dispose();
  return { o, finalState };
}

/** retentionForward's output alone, for whole sequences from empty states (differentiable). */
export function retention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gammas: readonly number[],
  opts: { form: RetentionForm; chunkSize?: number; normalize?: boolean },
): Tensor {
  return retentionForward(opts.form, q, k, v, gammas, opts).o;
}

/**
 * One recurrent retention step (inference only; updates state [B, H, K, V] and scale [B, H] in place); `normalize`
 * false: fla's S' = γS + kᵀv. The state is float32 (as q), or float16 (a 16-bit state, half the bytes a decode step
 * reads and writes): the step reads it as float32, computes S' and o = q S' in float32 and stores S' rounded to
 * float16 (round to nearest even). The scale stays float32.
 */
export function retentionStep(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  state: Tensor,
  scale: Tensor,
  gammas: readonly number[],
  normalize = true,
): Tensor {
  const kern = kernels(deviceOf('retentionStep', q, k, v, state, scale), q.dtype);
  if (q.rank !== 3) throw new ShapeError(`retentionStep: q must be [B, H, K], got ${formatShape(q.shape)}`);
  const [B, H, K] = q.shape as [number, number, number];
  expectShape('retentionStep', 'k', k, q.shape);
  if (v.rank !== 3 || v.shape[0] !== B || v.shape[1] !== H)
    throw new ShapeError(`retentionStep: v must be [${B}, ${H}, V], got ${formatShape(v.shape)}`);
  expectShape('retentionStep', 'state', state, [B, H, K, v.shape[2]!]);
  expectShape('retentionStep', 'scale', scale, [B, H]);
  if (state.dtype !== q.dtype && state.dtype !== 'float16')
    throw new DTypeError(`retentionStep: state must be ${q.dtype} (as q) or float16, got ${state.dtype}`);
  if (scale.dtype !== q.dtype)
    throw new DTypeError(`retentionStep: scale must be ${q.dtype} (as q), got ${scale.dtype}`);
  checkGammas('retentionStep', gammas, H);
  return kern.retentionStep(q, k, v, state, scale, gammas, normalize);
}
