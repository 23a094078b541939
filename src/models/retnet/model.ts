// RetNet as torchscale's RetNetDecoder defines it (spec §5-§6): the decoder trunk (src/models/decoder.ts) with
// multi-scale retention as its token mixer. Parameter names are torchscale's state_dict keys, so checkpoints move both
// ways. Full sequences run in the parallel or chunkwise form; decoding runs the recurrent form from a DecodeState
// whose size depends only on the config.

import type { RetentionForm } from '../../backend/backend.js';
import { retentionGammas } from '../../backend/retention-math.js';
import { noGrad } from '../../autograd/tape.js';
import { ShapeError } from '../../errors.js';
import { Rng, tiledNormal } from '../../tensor/random.js';
import { tidy, keep } from '../../tensor/scope.js';
import type { Tensor } from '../../tensor/tensor.js';
import { mul, scale } from '../../ops/math.js';
import { rmsNorm, silu } from '../../ops/nn.js';
import { retention, retentionForward, retentionStep } from '../../ops/retention.js';
import { rotary } from '../../ops/rotary.js';
import { concat, reshape, slice } from '../../ops/shape.js';
import { Module } from '../../nn/module.js';
import { Linear, xavierUniform, type ParamOptions } from '../../nn/layers.js';
import { retnetAngles, type RotaryTables } from '../../nn/rotary.js';
import { Decoder, type DecoderOptions, type Mixer, release } from '../decoder.js';
import type { DecodeState } from '../lm.js';
import { type RetNetConfig, headDims, retnetPass, validateRetNetConfig } from './config.js';

export type RetNetOptions = DecoderOptions;

/** How a full-sequence pass runs retention. */
export interface ForwardOptions {
  /** Default: chunkwise when config.chunkwiseRecurrent, else parallel (prefill: chunkwise). */
  form?: RetentionForm;
  /** Default: config.chunkSize. */
  chunkSize?: number;
}

type RetNetPass = Required<ForwardOptions>;

/** Multi-scale retention (paper §2.2, spec §5): projections, rotation, retention, per-head RMSNorm, swish gate. */
export class MultiScaleRetention extends Module implements Mixer<RetNetDecodeState, RetNetPass> {
  readonly qProj: Linear;
  readonly kProj: Linear;
  readonly vProj: Linear;
  readonly gProj: Linear;
  readonly outProj: Linear;
  readonly gammas: number[];
  readonly K: number;
  readonly V: number;

  constructor(
    readonly config: RetNetConfig,
    rng: Rng,
    opts: ParamOptions,
  ) {
    super();
    const { embedDim: d, valueDim: dv, heads: H } = config;
    ({ K: this.K, V: this.V } = headDims(config));
    this.gammas = retentionGammas(H);
    const deep = config.deepnorm ? (8 * config.layers) ** -0.25 : 1;
    const xavier = (shape: [number, number], gain: number) => xavierUniform(shape, rng, gain, opts);
    this.qProj = this.child('q_proj', new Linear(xavier([d, d], 2 ** -2.5)));
    this.kProj = this.child('k_proj', new Linear(xavier([d, d], 2 ** -2.5)));
    this.vProj = this.child('v_proj', new Linear(xavier([dv, d], 2 ** -2.5 * deep)));
    this.gProj = this.child('g_proj', new Linear(xavier([dv, d], 2 ** -2.5)));
    this.outProj = this.child('out_proj', new Linear(xavier([d, dv], 2 ** -1 * deep)));
  }

  /** q, k, v of x: [B, T, D] as [B, T, H, K] (rotated; k scaled by K^-0.5) and [B, T, H, V]. */
  private qkv(x: Tensor, rope: RotaryTables): { q: Tensor; k: Tensor; v: Tensor } {
    const [B, T] = x.shape as [number, number];
    const H = this.config.heads;
    const rotated = (t: Tensor) => {
      const split = reshape(t, [B, T, H, this.K]);
      release(t);
      const out = rotary(split, rope.cos, rope.sin);
      release(split);
      return out;
    };
    const q = rotated(this.qProj.forward(x));
    const kRaw = this.kProj.forward(x);
    const k = rotated(scale(kRaw, this.K ** -0.5));
    release(kRaw);
    const vFlat = this.vProj.forward(x);
    const v = reshape(vFlat, [B, T, H, this.V]);
    release(vFlat);
    return { q, k, v };
  }

  /** The gated output: out_proj(silu(g) ⊙ groupnorm(o)) for o: [B, T, H, V] -> [B, T, D]. */
  private output(x: Tensor, o: Tensor): Tensor {
    const [B, T, H, V] = o.shape as [number, number, number, number];
    const normed = rmsNorm(o, null, this.config.normEps); // per-head RMSNorm over V, no affine
    release(o);
    const flat = reshape(normed, [B, T, H * V]);
    release(normed);
    const g = this.gProj.forward(x);
    const gate = silu(g);
    release(g);
    const gated = mul(gate, flat);
    release(gate, flat);
    const y = this.outProj.forward(gated);
    release(gated);
    return y;
  }

  forward(x: Tensor, rope: RotaryTables, pass: RetNetPass): Tensor {
    const { q, k, v } = this.qkv(x, rope);
    const o = retention(q, k, v, this.gammas, pass);
    release(q, k, v);
    return this.output(x, o);
  }

  /** Packed prompts x: [1, ΣT, D], one retention call over their segments continuing layer l of the state. */
  prefill(
    x: Tensor,
    rope: RotaryTables,
    pass: RetNetPass,
    state: RetNetDecodeState,
    layer: number,
    lengths: readonly number[],
  ): Tensor {
    const { q, k, v } = this.qkv(x, rope); // [1, ΣT, H, *]
    const { o, finalState } = retentionForward(pass.form, q, k, v, this.gammas, {
      chunkSize: pass.chunkSize,
      initialState: { state: state.states[layer]!, scale: state.scales[layer]! },
      returnFinalState: true,
      segments: lengths,
    });
    release(q, k, v);
    state.replace(layer, finalState!.state, finalState!.scale);
    return this.output(x, o);
  }

  step(x: Tensor, rope: RotaryTables, state: RetNetDecodeState, layer: number): Tensor {
    const B = x.shape[0]!;
    const H = this.config.heads;
    const { q, k, v } = this.qkv(x, rope); // [B, 1, H, *]
    const o = retentionStep(
      reshape(q, [B, H, this.K]),
      reshape(k, [B, H, this.K]),
      reshape(v, [B, H, this.V]),
      state.states[layer]!,
      state.scales[layer]!,
      this.gammas,
      true,
    ); // [B, H, V]
    return this.output(x, reshape(o, [B, 1, H, this.V]));
  }
}

/** Recurrent decoding state: per layer S [B, H, K, V] and its decay-sum scale [B, H]; size independent of position. */
export class RetNetDecodeState implements DecodeState {
  constructor(
    readonly states: Tensor[],
    readonly scales: Tensor[],
    public positions: number[],
  ) {
    for (const t of [...states, ...scales]) keep(t);
  }

  get batch(): number {
    return this.positions.length;
  }

  bytes(): number {
    let n = 0;
    for (const t of [...this.states, ...this.scales]) n += t.storage.byteLength;
    return n;
  }

  select(rows: readonly number[]): void {
    for (const r of rows)
      if (!Number.isInteger(r) || r < 0 || r >= this.batch)
        throw new ShapeError(`DecodeState.select: row ${r} is outside the batch of ${this.batch}`);
    const pick = (t: Tensor) =>
      keep(
        noGrad(() =>
          tidy(() =>
            rows.length === 0
              ? t.backend.zeros([0, ...t.shape.slice(1)], t.dtype)
              : concat(
                  rows.map((r) => slice(t, 0, r, r + 1)),
                  0,
                ),
          ),
        ),
      );
    for (const list of [this.states, this.scales])
      list.forEach((t, i) => {
        list[i] = pick(t);
        t.dispose();
      });
    this.positions = rows.map((r) => this.positions[r]!);
  }

  append(other: DecodeState): void {
    if (!(other instanceof RetNetDecodeState) || other.states.length !== this.states.length)
      throw new ShapeError('DecodeState.append: the other state is not from the same RetNet');
    const join = (a: Tensor, b: Tensor) => keep(noGrad(() => tidy(() => concat([a, b], 0))));
    for (const [mine, theirs] of [
      [this.states, other.states],
      [this.scales, other.scales],
    ])
      mine.forEach((t, i) => {
        mine[i] = join(t, theirs[i]!);
        t.dispose();
      });
    this.positions = [...this.positions, ...other.positions];
    other.dispose();
  }

  /** Replaces layer l's state and scale (kept; the old ones are disposed). */
  replace(l: number, state: Tensor, scaleT: Tensor): void {
    this.states[l]!.dispose();
    this.scales[l]!.dispose();
    this.states[l] = keep(state);
    this.scales[l] = keep(scaleT);
  }

  dispose(): void {
    for (const t of [...this.states, ...this.scales]) t.dispose();
  }

  /** Named host copies for saving (layer l: `layers.l.state` [B, H, K, V], `layers.l.scale` [B, H]). */
  toTensors(): Map<string, { shape: readonly number[]; data: ArrayLike<number> }> {
    const out = new Map<string, { shape: readonly number[]; data: ArrayLike<number> }>();
    this.states.forEach((t, l) => out.set(`layers.${l}.state`, { shape: t.shape, data: t.data() }));
    this.scales.forEach((t, l) => out.set(`layers.${l}.scale`, { shape: t.shape, data: t.data() }));
    return out;
  }
}

export class RetNetModel extends Decoder<MultiScaleRetention, RetNetDecodeState, RetNetPass> {
  readonly arch = 'retnet' as const;
  protected readonly packedPrefill = true;
  /** γ of each head. */
  readonly gammas: number[];

  constructor(
    readonly config: RetNetConfig,
    opts: RetNetOptions = {},
  ) {
    validateRetNetConfig(config);
    super(
      { ...config, activation: config.activation === 'swish' ? 'silu' : config.activation },
      {
        name: 'retention',
        normName: 'retention_layer_norm',
        build: (_l, rng, p) => new MultiScaleRetention(config, rng, p),
        angles: retnetAngles(headDims(config).K),
      },
      opts,
    );
    this.gammas = retentionGammas(config.heads);
  }

  protected passOptions(opts: ForwardOptions, purpose: 'forward' | 'prefill'): RetNetPass {
    return retnetPass(this.config, opts, purpose);
  }

  /** An empty state for `batch` rows (positions 0). */
  emptyState(batch: number): RetNetDecodeState {
    const { K, V } = headDims(this.config);
    const H = this.config.heads;
    const make = (shape: number[]) => this.backend.zeros(shape, this.dtype);
    return new RetNetDecodeState(
      this.layers.map(() => make([batch, H, K, V])),
      this.layers.map(() => make([batch, H])),
      new Array<number>(batch).fill(0),
    );
  }

  protected stepState(state: DecodeState, op: string): RetNetDecodeState {
    if (!(state instanceof RetNetDecodeState) || state.states.length !== this.layers.length)
      throw new ShapeError(`RetNet.${op}: the state is not a state of this RetNet`);
    return state;
  }

  /**
   * A state as if each of `batch` rows had consumed `length` tokens, with random contents: for measuring the per-token
   * decode cost at a context length, which depends on the state's shape, not on its values (benchmarks). Each scale
   * holds the decay sum Σ_{i<length} γ^i that a real prefill leaves; the states hold normal(0, 1/K) values.
   */
  syntheticState(batch: number, length: number, rng: Rng): RetNetDecodeState {
    const { K } = headDims(this.config);
    const state = this.emptyState(batch);
    state.positions = new Array<number>(batch).fill(length);
    const sums = this.gammas.map((g) => (1 - g ** length) / (1 - g));
    for (const t of state.states) t.backend.write(t, tiledNormal(rng, t.size, K ** -0.5));
    for (const t of state.scales) t.backend.write(t, Array.from({ length: batch }, () => sums).flat());
    return state;
  }

  /** A state restored from `RetNetDecodeState.toTensors()` output (e.g. read back from a safetensors file). */
  stateFromTensors(
    tensors: Map<string, { shape: readonly number[]; data: ArrayLike<number> }>,
    positions: readonly number[],
  ): RetNetDecodeState {
    const state = this.emptyState(positions.length);
    state.positions = [...positions];
    const fill = (name: string, t: Tensor) => {
      const v = tensors.get(name);
      if (!v) throw new ShapeError(`decode state: missing tensor '${name}'`);
      if (v.shape.length !== t.shape.length || v.shape.some((d, i) => d !== t.shape[i]))
        throw new ShapeError(
          `decode state: '${name}' has shape [${v.shape.join(', ')}], expected [${t.shape.join(', ')}]`,
        );
      t.backend.write(t, v.data);
    };
    this.layers.forEach((_, l) => {
      fill(`layers.${l}.state`, state.states[l]!);
      fill(`layers.${l}.scale`, state.scales[l]!);
    });
    return state;
  }
}
