// RetNet as torchscale's RetNetDecoder defines it (spec §5-§6), with fla's variant as options: the decoder trunk
// (src/models/decoder.ts: embedding, pre-RMSNorm blocks with a GLU feed-forward, final RMSNorm, LM head) with
// multi-scale retention as its token mixer. Parameter names are torchscale's state_dict keys (or fla's), so
// checkpoints move both ways. Full sequences run in the parallel or chunkwise form; prefill runs the prompts packed
// into one chunkwise call; decoding runs the recurrent form from a state whose size depends only on the config.

import { retentionGammas } from '../../backend/reference/retention-math.js';
import { type RetentionForm, kernelsOf } from '../../backend/kernels.js';
import { noGrad } from '../../autograd/tape.js';
import { DTypeError, ShapeError } from '../../errors.js';
import type { DType } from '../../tensor/dtype.js';
import { type Rng, tiledNormal } from '../../tensor/random.js';
import { tidy, keep } from '../../tensor/scope.js';
import type { Tensor } from '../../tensor/tensor.js';
import { scale } from '../../ops/math.js';
import { activation, gatedRmsNorm, rmsNorm } from '../../ops/nn.js';
import { type RetentionOptions, type RetentionState, retentionForward, retentionStep } from '../../ops/retention.js';
import { rotary } from '../../ops/rotary.js';
import { concat, reshape, slice } from '../../ops/shape.js';
import { Module } from '../../nn/module.js';
import { Linear, RMSNorm, sharedForward, xavierUniform, type ParamOptions } from '../../nn/layers.js';
import { type RotaryTables, retnetAngles, ropeAngles } from '../../nn/rotary.js';
import {
  Decoder,
  type DecoderOptions,
  type ForwardOptions as TrunkForwardOptions,
  type Mixer,
  type TrunkState,
  release,
} from '../decoder.js';
import type { DecodeState } from '../lm.js';
import { type RetNetConfig, configuredForm, headDims, validateRetNetConfig } from './config.js';
import { flaParamName, splitFusedGateProj } from './fla.js';

export type RetNetOptions = DecoderOptions;

/** A RetNet pass: the retention form and the chunk size of the chunkwise form (defaults: the config's). */
export interface RetNetPass {
  form: RetentionForm;
  chunkSize: number;
}

/** Options of a full-sequence pass: form, chunk size, padding mask (see the trunk's ForwardOptions). */
export type ForwardOptions = TrunkForwardOptions<RetNetPass>;

/** The rotary angles of a head of K dims as the config sets them (torchscale's or RoPE's; interleaved or halves). */
export function rotaryAngles(K: number, c: Pick<RetNetConfig, 'rotaryAngles' | 'rotaryPairs'>): Float64Array {
  return c.rotaryAngles === 'rope' ? ropeAngles(K, 10000, c.rotaryPairs) : retnetAngles(K, c.rotaryPairs);
}

/**
 * Multi-scale retention (paper §2.2, spec §5; fla-spec §4.3): projections, optional feature map, rotation, grouped
 * key/value heads, retention, per-head RMSNorm (optionally with a learned weight), optional swish gate.
 */
export class MultiScaleRetention extends Module implements Mixer<RetNetDecodeState, RetNetPass> {
  readonly qProj: Linear;
  readonly kProj: Linear;
  readonly vProj: Linear;
  readonly gProj: Linear | null;
  readonly outProj: Linear;
  /** The per-head norm's learned weight [V], shared by the heads (fla's g_norm), or none (torchscale). */
  readonly groupNorm: RMSNorm | null;
  readonly gammas: number[];
  readonly K: number;
  readonly V: number;
  /** Query heads per key/value head. */
  private readonly groups: number;
  private readonly normalize: boolean;

  constructor(
    readonly config: RetNetConfig,
    rng: Rng,
    opts: ParamOptions,
  ) {
    super();
    const { embedDim: d, keyDim: dk, valueDim: dv, heads: H, kvHeads } = config;
    ({ K: this.K, V: this.V } = headDims(config));
    this.groups = H / kvHeads;
    this.normalize = config.retentionNorm === 'torchscale';
    this.gammas = retentionGammas(H);
    const deep = config.deepnorm ? (8 * config.layers) ** -0.25 : 1;
    const xavier = (shape: [number, number], gain: number) => xavierUniform(shape, rng, gain, opts);
    // The key and gate projections are recomputed in backward from the layer's input (kept anyway) rather than kept
    // (the gate, and the rotated key through its scale and rotation): d + dv floats per token and layer freed, for
    // one more product of each, 2·d·(d + dv) FLOPs per token and layer. Measured (bench trainmem, base preset,
    // T = 8192): 328.5 -> 256.5 KiB per token at the step's peak, 0.94x -> 0.75x the flash Transformer's; the gate
    // alone frees 48 of the 72 (4 of 6 KiB per token and layer), which leaves 0.81x.
    this.qProj = this.child('q_proj', new Linear(xavier([dk, d], 2 ** -2.5)));
    this.kProj = this.child('k_proj', new Linear(xavier([dk / this.groups, d], 2 ** -2.5), null, true));
    this.vProj = this.child('v_proj', new Linear(xavier([dv / this.groups, d], 2 ** -2.5 * deep)));
    this.gProj = config.outputGate ? this.child('g_proj', new Linear(xavier([dv, d], 2 ** -2.5), null, true)) : null;
    this.outProj = this.child('out_proj', new Linear(xavier([d, dv], 2 ** -1 * deep)));
    this.groupNorm = config.groupNormWeight
      ? this.child('group_norm', new RMSNorm(this.V, config.normEps, opts))
      : null;
  }

  /** [B, T, Hkv, W] -> [B, T, H, W]: each key/value head repeated for its `groups` query heads (fla's repeat). */
  private repeatHeads(t: Tensor): Tensor {
    if (this.groups === 1) return t;
    const [B, T, Hkv, W] = t.shape as [number, number, number, number];
    const one = reshape(t, [B, T, Hkv, 1, W]);
    release(t);
    const copies = concat(new Array<Tensor>(this.groups).fill(one), 3); // [B, T, Hkv, G, W]
    release(one);
    const out = reshape(copies, [B, T, Hkv * this.groups, W]);
    release(copies);
    return out;
  }

  /**
   * q, k, v of x: [B, T, D] as [B, T, H, K] (feature-mapped, rotated; the K^-½ factor on k, or on q in fla's
   * format) and [B, T, H, V].
   */
  private qkv(
    x: Tensor,
    cos: Tensor,
    sin: Tensor,
    given: [Tensor, Tensor, Tensor] | null = null,
  ): { q: Tensor; k: Tensor; v: Tensor } {
    const [B, T] = x.shape as [number, number];
    const c = this.config;
    const Hkv = c.kvHeads;
    const s = this.K ** -0.5;
    const scaled = c.format === 'fla' ? 'q' : 'k';
    const heads = (flat: Tensor, H: number, which: 'q' | 'k') => {
      let t = reshape(flat, [B, T, H, this.K]);
      release(flat);
      const steps = [
        (u: Tensor) => (c.featureMap ? activation(c.featureMap, u) : u),
        (u: Tensor) => (which === scaled ? scale(u, s) : u),
        (u: Tensor) => rotary(u, cos, sin, c.rotaryPairs),
      ];
      for (const step of steps) {
        const next = step(t);
        if (next !== t) release(t);
        t = next;
      }
      return t;
    };
    const q = heads(given?.[0] ?? this.qProj.forward(x), c.heads, 'q');
    const k = this.repeatHeads(heads(given?.[1] ?? this.kProj.forward(x), Hkv, 'k'));
    const vFlat = given?.[2] ?? this.vProj.forward(x);
    const v = this.repeatHeads(reshape(vFlat, [B, T, Hkv, this.V]));
    release(vFlat);
    return { q, k, v };
  }

  /**
   * The output: out_proj(silu(g) ⊙ groupnorm(o)) (or out_proj(groupnorm(o)) without the gate), o: [B, T, H, V]. The
   * gated norm is one op (per head, over V) that keeps only o and g for its backward.
   */
  private output(x: Tensor, o: Tensor, given: Tensor | null = null): Tensor {
    const [B, T, H, V] = o.shape as [number, number, number, number];
    const w = this.groupNorm?.weight ?? null;
    let normed: Tensor;
    if (this.gProj) {
      const gFlat = given ?? this.gProj.forward(x); // [B, T, H·V]
      const g = reshape(gFlat, [B, T, H, V]);
      release(gFlat);
      normed = gatedRmsNorm(o, g, w, this.config.normEps);
      release(g);
    } else normed = rmsNorm(o, w, this.config.normEps);
    release(o);
    const flat = reshape(normed, [B, T, H * V]);
    release(normed);
    const y = this.outProj.forward(flat);
    release(flat);
    return y;
  }

  /** Retention of x: [B, T, D] in the pass's form with the state options `run` -> [B, T, D] and the final state. */
  private mix(
    x: Tensor,
    rope: RotaryTables,
    pass: RetNetPass,
    run: Pick<RetentionOptions, 'initialState' | 'returnFinalState' | 'segments'> = {},
  ): { y: Tensor; finalState: RetentionState | null } {
    const { q, k, v } = this.qkv(x, rope.cos, rope.sin);
    const { o, finalState } = retentionForward(pass.form, q, k, v, this.gammas, {
      chunkSize: pass.chunkSize,
      normalize: this.normalize,
      ...run,
    });
    release(q, k, v);
    return { y: this.output(x, o), finalState };
  }

  forward(x: Tensor, rope: RotaryTables, pass: RetNetPass): Tensor {
    return this.mix(x, rope, pass).y;
  }

  /**
   * Prefill of packed prompts x: [1, ΣT, D] (tables at each token's position): one call over their `lengths` as
   * segments, each continuing its row of layer l's state (an empty state: none); the kernel leaves the state after
   * each prompt, which replaces layer l's.
   */
  prefill(
    x: Tensor,
    rope: RotaryTables,
    pass: RetNetPass,
    state: RetNetDecodeState,
    l: number,
    lengths: readonly number[],
  ): Tensor {
    const fresh = state.positions.every((p) => p === 0);
    // A 16-bit state (RetNetModel.stateDType) enters (unless empty) and leaves the kernel, which carries states in
    // x's dtype, as copies in that dtype.
    const held = state.states[l]!;
    const wide = fresh || held.dtype === x.dtype ? held : kernelsOf(held).cast(held, x.dtype);
    const { y, finalState } = this.mix(x, rope, pass, {
      initialState: fresh ? null : { state: wide, scale: state.scales[l]! },
      returnFinalState: true,
      segments: lengths.length > 1 ? lengths : null, // one prompt is the row itself
    });
    if (wide !== held) wide.dispose();
    let next = finalState!.state;
    if (next.dtype !== held.dtype) {
      next = kernelsOf(next).cast(next, held.dtype);
      finalState!.state.dispose();
    }
    state.replace(l, next, finalState!.scale);
    return y;
  }

  /** One recurrent step: x: [B, 1, D] with per-row tables [B, 1, K]; updates layer l of the state in place. */
  step(x: Tensor, rope: RotaryTables, state: RetNetDecodeState, l: number): Tensor {
    const B = x.shape[0]!;
    const H = this.config.heads;
    // The four projections of x in one call where sharedForward applies (one native job on the cpu device; the gate
    // computed before the retention instead of after), else each where it is used
    const shared = sharedForward(x, [this.qProj, this.kProj, this.vProj, ...(this.gProj ? [this.gProj] : [])]);
    const { q, k, v } = this.qkv(x, rope.cos, rope.sin, shared ? [shared[0]!, shared[1]!, shared[2]!] : null);
    const o = retentionStep(
      reshape(q, [B, H, this.K]),
      reshape(k, [B, H, this.K]),
      reshape(v, [B, H, this.V]),
      state.states[l]!,
      state.scales[l]!,
      this.gammas,
      this.normalize,
    ); // [B, H, V]
    return this.output(x, reshape(o, [B, 1, H, this.V]), shared?.[3] ?? null);
  }
}

/** A decode state's format as the CLI's `--state` names it (RetNetModel.setStateFormat). */
export type StateFormat = 'f32' | 'f16';

/** Recurrent decoding state: per layer S [B, H, K, V] and its decay-sum scale [B, H]; size independent of position. */
export class RetNetDecodeState implements TrunkState {
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
    for (const t of this.tensors()) n += t.storage.byteLength;
    return n;
  }

  tensors(): Tensor[] {
    return [...this.states, ...this.scales];
  }

  keepRows(rows: readonly number[]): () => void {
    const saved = this.rows(rows);
    return () => {
      this.setRows(rows, saved);
      saved.dispose();
    };
  }

  /** A copy of the given rows (valid row indices), as a new state. */
  private rows(rows: readonly number[]): RetNetDecodeState {
    const copy = (t: Tensor) => {
      const per = t.size / this.batch;
      const out = t.device.zeros([rows.length, ...t.shape.slice(1)], t.dtype);
      rows.forEach((r, i) => kernelsOf(t).copyBlocks(t, r * per, 0, out, i * per, 0, 1, per));
      return out;
    };
    return new RetNetDecodeState(
      this.states.map(copy),
      this.scales.map(copy),
      rows.map((r) => this.positions[r]!),
    );
  }

  /** In place: row rows[i] takes row i of `from` (a state of rows.length rows, e.g. from `rows`); positions too. */
  private setRows(rows: readonly number[], from: RetNetDecodeState): void {
    const put = (src: Tensor, dst: Tensor) => {
      const per = src.size / from.batch;
      rows.forEach((r, i) => kernelsOf(dst).copyBlocks(src, i * per, 0, dst, r * per, 0, 1, per));
    };
    from.states.forEach((t, l) => put(t, this.states[l]!));
    from.scales.forEach((t, l) => put(t, this.scales[l]!));
    rows.forEach((r, i) => (this.positions[r] = from.positions[i]!));
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
              ? t.device.zeros([0, ...t.shape.slice(1)], t.dtype)
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
  protected readonly staticStep = true;
  /** prefill(prompts, {state}) continues a state: the scheduler prefills long prompts in pieces with it. */
  readonly continuesPrefill = true as const;

  constructor(
    readonly config: RetNetConfig,
    opts: RetNetOptions = {},
  ) {
    validateRetNetConfig(config);
    const c = config;
    super(
      { ...c, activation: c.activation === 'swish' ? 'silu' : c.activation },
      {
        name: 'retention',
        normName: 'retention_layer_norm',
        build: (_l, rng, p) => new MultiScaleRetention(c, rng, p),
        angles: rotaryAngles(headDims(c).K, c),
      },
      opts,
    );
  }

  /**
   * Parameter names: torchscale's tree, or in fla's format fla's state-dict names (fla-spec §3); a tied head is then
   * only `model.embeddings.weight` (fla does not save lm_head when tied).
   */
  override namedParameters(prefix = ''): [string, Tensor][] {
    const ours = super.namedParameters(prefix);
    if (this.config.format !== 'fla') return ours;
    const c = this.config;
    return ours
      .filter(([n]) => !(c.tiedEmbeddings && n === `${prefix}output_projection.weight`))
      .map(([n, t]) => [prefix + flaParamName(c, n.slice(prefix.length)), t]);
  }

  /** As Module.loadValues; in fla's format the old fused `mlp.gate_proj` [2I, D] is accepted too (fla-spec §10). */
  override loadValues(
    values: Map<string, { shape: readonly number[]; data: ArrayLike<number> }>,
    source: string,
    ignore?: (name: string) => boolean,
  ): void {
    const v = this.config.format === 'fla' ? splitFusedGateProj(values, this.config.ffnDim, source) : values;
    super.loadValues(v, source, ignore);
  }

  /** Full sequences: the config's form (chunkwise_recurrent) and chunk size; prefill: chunkwise. */
  protected passOptions(opts: Partial<RetNetPass>, purpose: 'forward' | 'prefill'): RetNetPass {
    const form = opts.form ?? (purpose === 'prefill' ? 'chunkwise' : configuredForm(this.config));
    return { form, chunkSize: opts.chunkSize ?? this.config.chunkSize };
  }

  protected stepState(state: DecodeState, op: string): RetNetDecodeState {
    if (!(state instanceof RetNetDecodeState) || state.states.length !== this.layers.length)
      throw new ShapeError(`RetNet.${op}: the state is not a state of this RetNet`);
    return state;
  }

  /**
   * The dtype of the retention states S [B, H, K, V] that decoding keeps (states made after it is set): the model's
   * dtype (default), or float16, which halves the bytes a decode step reads and writes at a precision cost (each step
   * computes in float32 and stores S rounded to float16; BENCHMARKS.md has the logit error). The scales [B, H] stay
   * in the model's dtype.
   */
  get stateDType(): DType {
    return this.stateDTypeValue ?? this.dtype;
  }

  /** stateDType by the name the CLI and the benchmarks use: f32 (the model's dtype) or f16. */
  setStateFormat(format: StateFormat): void {
    this.stateDType = format === 'f16' ? 'float16' : this.dtype;
  }

  set stateDType(dtype: DType) {
    if (dtype !== this.dtype && dtype !== 'float16')
      throw new DTypeError(
        `RetNet.stateDType: the state is ${this.dtype} (the model's dtype) or float16, got ${dtype}`,
      );
    this.stateDTypeValue = dtype;
  }

  private stateDTypeValue: DType | null = null;

  /** An empty state for `batch` rows (positions 0). */
  emptyState(batch: number): RetNetDecodeState {
    const { K, V } = headDims(this.config);
    const H = this.config.heads;
    return new RetNetDecodeState(
      this.layers.map(() => this.backend.zeros([batch, H, K, V], this.stateDType)),
      this.layers.map(() => this.backend.zeros([batch, H], this.dtype)),
      new Array<number>(batch).fill(0),
    );
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
    const sums = this.layers[0]!.mixer.gammas.map((g) => (1 - g ** length) / (1 - g));
    for (const t of state.states) t.device.write(t, tiledNormal(rng, t.size, K ** -0.5));
    for (const t of state.scales) t.device.write(t, Array.from({ length: batch }, () => sums).flat());
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
      t.device.write(t, v.data);
    };
    this.layers.forEach((_, l) => {
      fill(`layers.${l}.state`, state.states[l]!);
      fill(`layers.${l}.scale`, state.scales[l]!);
    });
    return state;
  }
}
