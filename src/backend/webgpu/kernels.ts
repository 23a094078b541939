// The webgpu device's kernels (float32; layout kernels for int32 too; products, embedding and casts for the 16-bit
// storage dtypes as well): the inference path of RetNet and the Transformer's products. Each validates what the op above it does not (ids the host knows), allocates its outputs on
// the device and records one or a few dispatches (WGSL in shaders.ts). Kernels left out here (backward kernels,
// optimizer, attention) resolve through the kernel table's fallback.

import { BackendError, ShapeError } from '../../errors.js';
import type { DType } from '../../tensor/dtype.js';
import { keep } from '../../tensor/scope.js';
import { type Tensor, shapeSize } from '../../tensor/tensor.js';
import type {
  ActivationKind,
  BinaryOp,
  Kernels,
  RetentionForm,
  RetentionRun,
  RetentionState,
  RotaryPairs,
} from '../kernels.js';
import { decaySums } from '../reference/retention-math.js';
import { type WebGpuDevice, grid } from './device.js';
import * as wgsl from './shaders.js';

const u = (v: number) => ['u', v] as const;
const f = (v: number) => ['f', v] as const;

const ACTIVATIONS: Record<ActivationKind, number> = { gelu: 0, silu: 1, relu: 2 };

/** Storage modes of the shaders that take several dtypes (shaders.ts's DECODE). */
const MODES: Partial<Record<DType, number>> = { float32: 0, bfloat16: 1, float16: 2, int32: 3 };

function modeOf(t: Tensor, what: string): number {
  const m = MODES[t.dtype];
  if (m === undefined) throw new BackendError(`${what}: the webgpu device has no ${t.dtype} tensors`);
  return m;
}

const is16 = (t: Tensor) => t.dtype === 'bfloat16' || t.dtype === 'float16';

/**
 * Below this many rows a product runs one invocation per output (MATMUL_ROWS) instead of 16×16 tiles. Measured on
 * SwiftShader (chromium 156, 2 loaded cores): 1×128 · 128×256 took 73 ms tiled, where the barriers dominate.
 */
const ROWS_MATMUL_BELOW = 32;

/** The parallel form's clamp of the row sums (torchscale's parallel_forward); the chunkwise form has none. */
const PARALLEL_CLAMP = 5e4;

export type WebGpuKernelName =
  | 'cast'
  | 'matmul'
  | 'binary'
  | 'scale'
  | 'activation'
  | 'rmsNorm'
  | 'gatedRmsNorm'
  | 'softmax'
  | 'embedding'
  | 'copyBlocks'
  | 'retentionForward'
  | 'retentionStep'
  | 'rotary';

export class WebGpuKernels implements Pick<Kernels, WebGpuKernelName> {
  /** Each layer's decays, uploaded once (a few floats per model, kept for the device's life). */
  private readonly gammaTables = new Map<string, Tensor>();

  constructor(private readonly d: WebGpuDevice) {}

  private run(
    name: keyof typeof wgsl,
    params: readonly (readonly ['u' | 'i' | 'f', number])[],
    tensors: readonly Tensor[],
    written: readonly Tensor[],
    groups: readonly [number, number?, number?],
  ): void {
    const buffers = [...tensors.map((t) => this.d.buffer(t)), ...written.map((t) => this.d.buffer(t, true))];
    this.d.dispatch(
      this.d.pipeline(name, () => wgsl[name]),
      params,
      buffers,
      groups,
    );
  }

  private out(shape: readonly number[], dtype: DType = 'float32'): Tensor {
    return this.d.empty(shape, dtype);
  }

  /** A float32 tensor of host values, for per-head tables (from the pool: no allocation once warm). */
  private table(values: ArrayLike<number>): Tensor {
    return this.d.fromData(values, [values.length], 'float32');
  }

  cast(t: Tensor, dtype: DType): Tensor {
    if (!this.d.supportsDType(dtype))
      throw new BackendError(`cast: the webgpu device holds ${this.d.dtypes.join(', ')} tensors, not ${dtype}`);
    const y = this.out(t.shape, dtype);
    if (t.size === 0) return y;
    if (t.dtype === dtype) this.d.copy(t, 0, y, 0, t.size);
    else {
      const outWords = is16(y) ? Math.ceil(t.size / 2) : t.size;
      this.run('CAST', [u(t.size), u(modeOf(t, 'cast')), u(modeOf(y, 'cast'))], [t], [y], grid(outWords));
    }
    return y;
  }

  /**
   * Computed in float32 with a and b in any storage dtype (a 16-bit weight unpacked as it is read); the result is
   * float32, or rounded to a's dtype when a is 16-bit too (the host devices' throughFloat32).
   */
  matmul(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
    const y = this.matmul32(a, b, transA, transB);
    if (!is16(a)) return y;
    const back = this.cast(y, a.dtype);
    y.dispose();
    return back;
  }

  private matmul32(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
    const ra = a.rank;
    const M = transA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
    const K = transA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
    const N = transB ? b.shape[b.rank - 2]! : b.shape[b.rank - 1]!;
    const batch = shapeSize(a.shape.slice(0, -2));
    const y = this.out([...a.shape.slice(0, -2), M, N]);
    if (y.size === 0) return y;
    if (K === 0) {
      y.dispose();
      return this.d.zeros([...a.shape.slice(0, -2), M, N], 'float32');
    }
    const flags = [u(transA ? 1 : 0), u(transB ? 1 : 0), u(b.rank > 2 ? 1 : 0)];
    const modes = [u(modeOf(a, 'matmul')), u(modeOf(b, 'matmul'))];
    if (M < ROWS_MATMUL_BELOW) {
      this.run('MATMUL_ROWS', [u(M), u(N), u(K), ...flags, ...modes, u(batch)], [a, b], [y], grid(y.size));
      return y;
    }
    if (batch > 65535) throw new ShapeError(`matmul: ${batch} batch entries exceed the webgpu grid (65535)`);
    this.run(
      'MATMUL',
      [u(M), u(N), u(K), ...flags, ...modes],
      [a, b],
      [y],
      [Math.ceil(N / 16), Math.ceil(M / 16), batch],
    );
    return y;
  }

  binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
    const y = this.out(a.shape);
    if (a.size > 0) this.run('BINARY', [u(a.size), u(b.size), u(op === 'add' ? 0 : 1)], [a, b], [y], grid(a.size));
    return y;
  }

  scale(a: Tensor, alpha: number): Tensor {
    const y = this.out(a.shape);
    if (a.size > 0) this.run('SCALE', [u(a.size), f(alpha)], [a], [y], grid(a.size));
    return y;
  }

  activation(kind: ActivationKind, x: Tensor): Tensor {
    const y = this.out(x.shape);
    if (x.size > 0) this.run('ACTIVATION', [u(x.size), u(ACTIVATIONS[kind])], [x], [y], grid(x.size));
    return y;
  }

  private rows(x: Tensor): { rows: number; cols: number } {
    const cols = x.shape[x.rank - 1] ?? 1;
    return { rows: cols === 0 ? 0 : x.size / cols, cols };
  }

  rmsNorm(x: Tensor, w: Tensor | null, eps: number): { y: Tensor; rstd: Tensor } {
    return this.normRows(x, null, w, eps);
  }

  gatedRmsNorm(x: Tensor, gate: Tensor, w: Tensor | null, eps: number): { y: Tensor; rstd: Tensor } {
    return this.normRows(x, gate, w, eps);
  }

  /** y = x · rstd · w (w null: 1) per row of the last dim, times silu(gate) where a gate is given. */
  private normRows(x: Tensor, gate: Tensor | null, w: Tensor | null, eps: number): { y: Tensor; rstd: Tensor } {
    const { rows, cols } = this.rows(x);
    const y = this.out(x.shape);
    const rstd = this.out([rows]);
    const params = [u(rows), u(cols), u(w ? 1 : 0), u(gate ? 1 : 0), f(eps)] as const;
    if (rows > 0) this.run('RMSNORM', params, [x, w ?? x, gate ?? x], [y, rstd], grid(rows, 1));
    return { y, rstd };
  }

  softmax(x: Tensor): Tensor {
    const { rows, cols } = this.rows(x);
    const y = this.out(x.shape);
    if (rows > 0) this.run('SOFTMAX', [u(rows), u(cols)], [x], [y], grid(rows, 1));
    return y;
  }

  embedding(table: Tensor, ids: Tensor): Tensor {
    const [V, D] = table.shape as [number, number];
    const known = this.d.storageOf(ids).known;
    if (known instanceof Int32Array) {
      const bad = known.findIndex((id) => id < 0 || id >= V);
      if (bad >= 0) throw new ShapeError(`embedding: token id ${known[bad]} at ${bad} is outside [0, ${V})`);
    }
    // The rows in the table's dtype (a 16-bit table's rows as stored, as on the host devices).
    const y = this.out([...ids.shape, D], table.dtype);
    const wide = !is16(table);
    if (y.size > 0)
      this.run(
        'EMBEDDING',
        [u(ids.size), u(D), u(V), u(wide ? 1 : 0)],
        [table, ids],
        [y],
        grid(wide ? y.size : Math.ceil(y.size / 2)),
      );
    return y;
  }

  copyBlocks(
    src: Tensor,
    srcOff: number,
    srcStride: number,
    dst: Tensor,
    dstOff: number,
    dstStride: number,
    blocks: number,
    len: number,
  ): void {
    const n = blocks * len;
    if (n === 0) return;
    if (this.d.buffer(src) === this.d.buffer(dst)) {
      // One buffer cannot be bound for reading and writing at once: copy the source first.
      const copy = this.out(src.shape, src.dtype);
      this.d.copy(src, 0, copy, 0, src.size);
      this.copyBlocks(copy, srcOff, srcStride, dst, dstOff, dstStride, blocks, len);
      copy.dispose();
      return;
    }
    this.run(
      'COPY_BLOCKS',
      [u(srcOff), u(srcStride), u(dstOff), u(dstStride), u(blocks), u(len)],
      [src],
      [dst],
      grid(n),
    );
  }

  rotary(x: Tensor, cos: Tensor, sin: Tensor, pairs: RotaryPairs, inverse: boolean): Tensor {
    const [B, T, H, K] = x.shape as [number, number, number, number];
    const y = this.out(x.shape);
    const n = (B * T * H * K) / 2;
    if (n > 0)
      this.run(
        'ROTARY',
        [u(B), u(T), u(H), u(K), u(cos.rank === 3 ? 1 : 0), u(pairs === 'halves' ? 1 : 0), f(inverse ? -1 : 1)],
        [x, cos, sin],
        [y],
        grid(n),
      );
    return y;
  }

  retentionForward(
    form: RetentionForm,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gammas: readonly number[],
    run: RetentionRun,
  ): { o: Tensor; r: Tensor; finalState: RetentionState | null } {
    const { chunkSize, normalize } = run;
    const [B, T, H, K] = q.shape as [number, number, number, number];
    const V = v.shape[3]!;
    const o = this.out([B, T, H, V]);
    const r = this.out([B, H, T]);
    // The sequences: each batch row, or the packed segments of row 0.
    const seqs: [number, number, number][] = [];
    if (run.segments) run.segments.reduce((at, len) => (seqs.push([0, at, len]), at + len), 0);
    else for (let b = 0; b < B; b++) seqs.push([b, 0, T]);
    const N = seqs.length;
    if (form !== 'parallel' && !(chunkSize >= 1))
      throw new ShapeError(`retentionForward: chunk size ${chunkSize} must be at least 1`);
    if (N * H > 65535) throw new ShapeError(`retentionForward: ${N * H} (sequences × heads) exceed the webgpu grid`);
    if (B * T >= 2 ** 24)
      throw new ShapeError(`retentionForward: ${B * T} positions exceed the webgpu kernel's 2^24 (float32 indices)`);
    // W: the states, in and out, then the score scratch; sc: the scales, in and out.
    const longest = Math.max(1, ...seqs.map((s) => s[2]));
    // The parallel form is one chunk of the whole sequence, with its clamp; unnormalised, every form is one function.
    const C = form === 'parallel' ? longest : Math.min(chunkSize, longest);
    const W = this.out([N * H * (K * V + C * C)]);
    const sc = run.initialState ? this.out([N, H]) : this.d.zeros([N, H], 'float32');
    if (run.initialState) {
      this.d.copy(run.initialState.state, 0, W, 0, N * H * K * V);
      this.d.copy(run.initialState.scale, 0, sc, 0, N * H);
    }
    // tab: per head [ln γ, SC, S_0 … S_{C−1}]; per sequence [b, start, length]; per (sequence, head) S(length − 1).
    const seqAt = H * (C + 2);
    const endAt = seqAt + 3 * N;
    const tab = new Float64Array(endAt + N * H);
    gammas.forEach((g, h) => {
      // SC = S(C − 1) of the form's chunk (the chunkwise σ's scale), in closed form: the chunk size may exceed T.
      const chunk = form === 'parallel' ? C : chunkSize;
      tab[h * (C + 2)] = Math.log(g);
      tab[h * (C + 2) + 1] = normalize ? (1 - g ** chunk) / (1 - g) : 1;
      tab.set(decaySums(g, C), h * (C + 2) + 2);
    });
    seqs.forEach((seq, n) => {
      tab.set(seq, seqAt + 3 * n);
      gammas.forEach((g, h) => (tab[endAt + n * H + h] = seq[2] > 0 ? decaySums(g, seq[2])[seq[2] - 1]! : 0));
    });
    const tabT = this.table(tab);
    if (N * H > 0)
      this.run(
        'RETENTION_CHUNK',
        [
          ...[T, H, K, V, C, N, normalize ? 1 : 0, form === 'parallel' ? 1 : 0, run.initialState ? 1 : 0].map(u),
          u(seqAt),
          u(endAt),
          f(form === 'parallel' ? PARALLEL_CLAMP : 3.4e38),
        ],
        [q, k, v, tabT],
        [o, r, W, sc],
        [N * H],
      );
    tabT.dispose();
    let finalState: RetentionState | null = null;
    if (run.returnFinalState) {
      const state = this.out([N, H, K, V]);
      this.d.copy(W, 0, state, 0, N * H * K * V);
      finalState = { state, scale: sc };
    } else sc.dispose();
    W.dispose();
    return { o, r, finalState };
  }

  retentionStep(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    state: Tensor,
    scale: Tensor,
    gammas: readonly number[],
    normalize: boolean,
  ): Tensor {
    if (state.dtype === 'float16') {
      // A 16-bit state (ops/retention.ts): stepped as a float32 copy, stored back rounded by the cast shader.
      const wide = this.cast(state, 'float32');
      const o = this.retentionStep(q, k, v, wide, scale, gammas, normalize);
      const back = this.cast(wide, 'float16');
      this.d.copy(back, 0, state, 0, state.size);
      wide.dispose();
      back.dispose();
      return o;
    }
    const [B, H, K] = q.shape as [number, number, number];
    const V = v.shape[2]!;
    const o = this.out([B, H, V]);
    if (B * H === 0) return o;
    if (B * H > 65535) throw new ShapeError(`retentionStep: ${B * H} (batch × heads) exceed the webgpu grid`);
    const key = gammas.join(',');
    let g = this.gammaTables.get(key);
    if (!g) this.gammaTables.set(key, (g = keep(this.table(gammas)))); // kept out of the caller's tidy scope
    this.run(
      'RETENTION_STEP',
      [u(B), u(H), u(K), u(V), u(normalize ? 1 : 0)],
      [q, k, v, g],
      [state, scale, o],
      [B * H],
    );
    return o;
  }
}
