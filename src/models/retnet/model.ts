// RetNet as torchscale's RetNetDecoder defines it (spec §5-§6): embedding, L blocks of multi-scale retention and a
// GLU feed-forward with pre-RMSNorm residuals, a final RMSNorm and the LM head. Parameter names are torchscale's
// state_dict keys, so checkpoints move both ways. Full sequences run in the parallel or chunkwise form; decoding runs
// the recurrent form from a DecodeState whose size depends only on the config.

import type { Device } from '../../backend/device.js';
import { getBackend } from '../../backend/select.js';
import { retentionGammas } from '../../backend/reference/retention-math.js';
import { type RetentionForm, type RotaryPairs, kernelsOf } from '../../backend/kernels.js';
import { gradEnabled, noGrad } from '../../autograd/tape.js';
import { ShapeError } from '../../errors.js';
import type { DType } from '../../tensor/dtype.js';
import { Rng, tiledNormal } from '../../tensor/random.js';
import { tidy, keep } from '../../tensor/scope.js';
import type { Tensor } from '../../tensor/tensor.js';
import { add, mul, scale } from '../../ops/math.js';
import { activation, dropout, rmsNorm, silu } from '../../ops/nn.js';
import { type RetentionState, retentionForward, retentionStep } from '../../ops/retention.js';
import { rotary } from '../../ops/rotary.js';
import { concat, reshape, slice } from '../../ops/shape.js';
import { Module } from '../../nn/module.js';
import { Embedding, GLU, Linear, RMSNorm, normal, xavierUniform, type ParamOptions } from '../../nn/layers.js';
import { release } from '../decoder.js';
import type { CausalLM, DecodeState } from '../lm.js';
import { type RetNetConfig, headDims, validateRetNetConfig } from './config.js';
import { flaParamName, splitFusedGateProj } from './fla.js';

export interface RetNetOptions {
  backend?: Device;
  dtype?: DType;
  /** Seed of the initial weights. */
  seed?: number;
  /** false: parameters start as zeros (a checkpoint fills them next). */
  init?: boolean;
}

export interface ForwardOptions {
  /** Default: chunkwise when config.chunkwiseRecurrent, else parallel. */
  form?: RetentionForm;
  /** Default: config.chunkSize. */
  chunkSize?: number;
  /**
   * Padding mask [B][T] (1 = token, 0 = padding; Hugging Face's attention_mask). Padded tokens neither enter the
   * retention state nor advance positions (a token's position is the number of real tokens before it in its row), so
   * each row's logits at its real positions equal those of its real tokens alone, with left, right or inner padding
   * (fla's convention, fla-spec §6). Logits at padded positions are computed (embedding, norms and feed-forward run
   * there, retention gives 0) but mean nothing.
   */
  mask?: readonly (readonly number[])[];
}

/** The real tokens of a padded batch: per row the runs [start, end) of mask 1, and every token's position [B·T]. */
export interface Padding {
  runs: [number, number][][];
  positions: number[];
}

/** The padding described by `mask` for ids [B, T], or null when every token is real. `op` names the caller in errors. */
export function paddingOf(mask: readonly (readonly number[])[], B: number, T: number, op: string): Padding | null {
  if (mask.length !== B) throw new ShapeError(`${op}: mask has ${mask.length} rows for a batch of ${B}`);
  const runs: [number, number][][] = [];
  const positions: number[] = [];
  let padded = false;
  mask.forEach((row, b) => {
    if (row.length !== T) throw new ShapeError(`${op}: mask row ${b} has ${row.length} entries for ${T} tokens`);
    const mine: [number, number][] = [];
    let seen = 0;
    row.forEach((m, t) => {
      if (m !== 0 && m !== 1) throw new ShapeError(`${op}: mask[${b}][${t}] is ${m}, expected 0 or 1`);
      positions.push(seen);
      if (m === 0) return void (padded = true);
      seen++;
      const last = mine[mine.length - 1];
      if (last && last[1] === t) last[1] = t + 1;
      else mine.push([t, t + 1]);
    });
    runs.push(mine);
  });
  return padded ? { runs, positions } : null;
}

/** Row b's real tokens of t: [B, T, ...] as [1, n_b, ...]. */
function gatherRow(t: Tensor, b: number, runs: readonly [number, number][]): Tensor {
  const row = slice(t, 0, b, b + 1);
  if (runs.length === 1 && runs[0]![0] === 0 && runs[0]![1] === t.shape[1]) return row;
  const parts = runs.map(([s, e]) => slice(row, 1, s, e));
  const out = parts.length === 0 ? slice(row, 1, 0, 0) : parts.length === 1 ? parts[0]! : concat(parts, 1);
  release(row);
  if (parts.length > 1) release(...parts);
  return out;
}

/** The inverse of gatherRow for every row: rows [1, n_b, ...] back into [B, T, ...], zeros at padded positions. */
function scatterRows(rows: readonly Tensor[], padding: Padding, T: number): Tensor {
  const first = rows[0]!;
  const tail = first.shape.slice(2);
  const be = first.device;
  const pieces: Tensor[] = [];
  const out = concat(
    rows.map((r, b) => {
      const parts: Tensor[] = [];
      let t = 0;
      let at = 0;
      for (const [s, e] of [...padding.runs[b]!, [T, T] as [number, number]]) {
        if (s > t) parts.push(be.zeros([1, s - t, ...tail], first.dtype));
        if (e > s) parts.push(slice(r, 1, at, at + e - s));
        at += e - s;
        t = e;
      }
      pieces.push(...parts);
      return parts.length === 1 ? parts[0]! : concat(parts, 1);
    }),
    0,
  );
  release(...pieces);
  return out;
}

/**
 * The rotary angle of every element of a head of K dims (the table layout the rotary op reads: each pair's angle at
 * both of its elements). Angles θ_j: torchscale's 10000^(−j/(K/2−1)) (spec §4, linspace including 1) or RoPE's
 * 10000^(−2j/K) (fla-spec §4.3); pair j is (2j, 2j+1) when interleaved, (j, j+K/2) for halves.
 */
export function rotaryAngles(
  K: number,
  kind: RetNetConfig['rotaryAngles'] = 'retnet',
  pairs: RotaryPairs = 'interleaved',
): Float64Array {
  const half = K / 2;
  const angles = new Float64Array(K);
  for (let j = 0; j < half; j++) {
    const a = kind === 'rope' ? 10000 ** ((-2 * j) / K) : 1 / 10000 ** (half === 1 ? 0 : j / (half - 1));
    const [i0, i1] = pairs === 'halves' ? [j, j + half] : [2 * j, 2 * j + 1];
    angles[i0] = a;
    angles[i1] = a;
  }
  return angles;
}

/** cos/sin tables for the given positions: [N, K], or [B, N/B, K] per row when `perRow` (default B = N). */
export function rotaryTables(
  be: Device,
  dtype: DType,
  angles: Float64Array,
  positions: readonly number[],
  perRow: boolean,
  rows = positions.length,
): { cos: Tensor; sin: Tensor } {
  const K = angles.length;
  const c = new Float64Array(positions.length * K);
  const s = new Float64Array(positions.length * K);
  positions.forEach((p, i) => {
    for (let x = 0; x < K; x++) {
      c[i * K + x] = Math.cos(p * angles[x]!);
      s[i * K + x] = Math.sin(p * angles[x]!);
    }
  });
  const shape = perRow ? [rows, positions.length / rows, K] : [positions.length, K];
  return { cos: be.fromData(c, shape, dtype), sin: be.fromData(s, shape, dtype) };
}

/**
 * Multi-scale retention (paper §2.2, spec §5; fla-spec §4.3): projections, optional feature map, rotation, grouped
 * key/value heads, retention, per-head RMSNorm (optionally with a learned weight), optional swish gate.
 */
export class MultiScaleRetention extends Module {
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
    this.qProj = this.child('q_proj', new Linear(xavier([dk, d], 2 ** -2.5)));
    this.kProj = this.child('k_proj', new Linear(xavier([dk / this.groups, d], 2 ** -2.5)));
    this.vProj = this.child('v_proj', new Linear(xavier([dv / this.groups, d], 2 ** -2.5 * deep)));
    this.gProj = config.outputGate ? this.child('g_proj', new Linear(xavier([dv, d], 2 ** -2.5))) : null;
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
  private qkv(x: Tensor, cos: Tensor, sin: Tensor): { q: Tensor; k: Tensor; v: Tensor } {
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
    const q = heads(this.qProj.forward(x), c.heads, 'q');
    const k = this.repeatHeads(heads(this.kProj.forward(x), Hkv, 'k'));
    const vFlat = this.vProj.forward(x);
    const v = this.repeatHeads(reshape(vFlat, [B, T, Hkv, this.V]));
    release(vFlat);
    return { q, k, v };
  }

  /** The output: out_proj(silu(g) ⊙ groupnorm(o)) (or out_proj(groupnorm(o)) without the gate), o: [B, T, H, V]. */
  private output(x: Tensor, o: Tensor): Tensor {
    const [B, T, H, V] = o.shape as [number, number, number, number];
    const normed = rmsNorm(o, this.groupNorm?.weight ?? null, this.config.normEps); // per head, over V
    release(o);
    const flat = reshape(normed, [B, T, H * V]);
    release(normed);
    let gated = flat;
    if (this.gProj) {
      const g = this.gProj.forward(x);
      const gate = silu(g);
      release(g);
      gated = mul(gate, flat);
      release(gate, flat);
    }
    const y = this.outProj.forward(gated);
    release(gated);
    return y;
  }

  /**
   * x: [B, T, D] -> [B, T, D]; with `capture`, also the recurrent state after the last position. With `padding`,
   * each row's real tokens run alone (the tables hold their positions) and padded positions get retention output 0.
   */
  forward(
    x: Tensor,
    cos: Tensor,
    sin: Tensor,
    form: RetentionForm,
    chunkSize: number,
    capture: boolean,
    padding: Padding | null = null,
    initial: RetentionState | null = null,
  ): { y: Tensor; state: { state: Tensor; scale: Tensor } | null } {
    const { q, k, v } = this.qkv(x, cos, sin);
    // The forward kernel walks the state: with `capture` it also returns the state after the last position.
    const run = (q: Tensor, k: Tensor, v: Tensor) => {
      const r = retentionForward(form, q, k, v, this.gammas, {
        chunkSize,
        normalize: this.normalize,
        initialState: initial,
        returnFinalState: capture,
      });
      return { o: r.o, state: r.finalState };
    };
    let o: Tensor;
    let state: { state: Tensor; scale: Tensor } | null;
    if (!padding) ({ o, state } = run(q, k, v));
    else {
      const rows = padding.runs.map((runs, b) => {
        const [qb, kb, vb] = [q, k, v].map((t) => gatherRow(t, b, runs)) as [Tensor, Tensor, Tensor];
        const out = run(qb, kb, vb);
        release(qb, kb, vb);
        return out;
      });
      o = scatterRows(
        rows.map((r) => r.o),
        padding,
        x.shape[1]!,
      );
      release(...rows.map((r) => r.o));
      state = capture
        ? {
            state: concat(
              rows.map((r) => r.state!.state),
              0,
            ),
            scale: concat(
              rows.map((r) => r.state!.scale),
              0,
            ),
          }
        : null;
      if (capture) release(...rows.flatMap((r) => [r.state!.state, r.state!.scale]));
    }
    release(q, k, v);
    return { y: this.output(x, o), state };
  }

  /** One recurrent step: x: [B, 1, D] with per-row tables [B, 1, K]; updates state/scale in place. */
  step(x: Tensor, cos: Tensor, sin: Tensor, state: Tensor, scaleT: Tensor): Tensor {
    const B = x.shape[0]!;
    const H = this.config.heads;
    const { q, k, v } = this.qkv(x, cos, sin); // [B, 1, H, *]
    const o = retentionStep(
      reshape(q, [B, H, this.K]),
      reshape(k, [B, H, this.K]),
      reshape(v, [B, H, this.V]),
      state,
      scaleT,
      this.gammas,
      this.normalize,
    ); // [B, H, V]
    return this.output(x, reshape(o, [B, 1, H, this.V]));
  }
}

/** One RetNet block (torchscale's RetNetDecoderLayer). */
export class RetNetLayer extends Module {
  readonly retention: MultiScaleRetention;
  readonly retentionLayerNorm: RMSNorm;
  readonly ffn: GLU;
  readonly finalLayerNorm: RMSNorm;
  /** DeepNet residual scale α = (2L)^¼, else 1. */
  readonly alpha: number;

  constructor(
    readonly config: RetNetConfig,
    readonly index: number,
    private readonly rng: Rng,
    opts: ParamOptions,
  ) {
    super();
    const c = config;
    this.alpha = c.deepnorm ? (2 * c.layers) ** 0.25 : 1;
    this.retention = this.child('retention', new MultiScaleRetention(c, rng, opts));
    this.retentionLayerNorm = this.child('retention_layer_norm', new RMSNorm(c.embedDim, c.normEps, opts));
    const act = c.activation === 'swish' ? 'silu' : c.activation;
    this.ffn = this.child(
      'ffn',
      new GLU(c.embedDim, c.ffnDim, act, rng, opts, {
        gated: c.glu,
        // DeepNet init: fc1/fc2 (and out_proj/v_proj above) scaled by (8L)^-¼ at initialisation; the gate is not.
        gain: c.deepnorm ? (8 * c.layers) ** -0.25 : 1,
        activationDropout: c.activationDropout,
        rng,
      }),
    );
    this.finalLayerNorm = this.child('final_layer_norm', new RMSNorm(c.embedDim, c.normEps, opts));
  }

  private dropPath(): number {
    return this.config.layers > 1 ? (this.config.dropPathRate * this.index) / (this.config.layers - 1) : 0;
  }

  /** Dropout, drop path and the residual α·residual + h, as torchscale orders them. */
  private residual(residual: Tensor, h: Tensor, withDropout: boolean): Tensor {
    let branch = h;
    if (this.training) {
      if (withDropout && this.config.dropout > 0) branch = dropout(branch, this.config.dropout, this.rng);
      if (this.dropPath() > 0) branch = dropout(branch, this.dropPath(), this.rng, true);
    }
    const base = this.alpha === 1 ? residual : scale(residual, this.alpha);
    const out = add(base, branch);
    if (base !== residual) release(base);
    release(branch);
    if (branch !== h) release(h);
    return out;
  }

  private ffnForward(x: Tensor): Tensor {
    const y = this.ffn.forward(x);
    return this.training && this.config.dropout > 0 ? dropout(y, this.config.dropout, this.rng) : y;
  }

  /** Applies the block around a retention call (full sequence or one step). */
  run(x: Tensor, msr: (normed: Tensor) => Tensor): Tensor {
    const pre = this.config.normalizeBefore;
    const normed = pre ? this.retentionLayerNorm.forward(x) : x;
    const h = msr(normed);
    if (normed !== x) release(normed);
    let x1 = this.residual(x, h, true);
    if (!pre) {
      const n = this.retentionLayerNorm.forward(x1);
      release(x1);
      x1 = n;
    }
    const normed2 = pre ? this.finalLayerNorm.forward(x1) : x1;
    const f = this.ffnForward(normed2);
    if (normed2 !== x1) release(normed2);
    let x2 = this.residual(x1, f, false);
    release(x1);
    if (!pre) {
      const n = this.finalLayerNorm.forward(x2);
      release(x2);
      x2 = n;
    }
    return x2;
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

  /** A copy of the given rows (valid row indices), as a new state. */
  rows(rows: readonly number[]): RetNetDecodeState {
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
  setRows(rows: readonly number[], from: RetNetDecodeState): void {
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

export class RetNetModel extends Module implements CausalLM {
  readonly arch = 'retnet' as const;
  /** prefill(prompts, {state}) continues a state: the scheduler prefills long prompts in pieces with it. */
  readonly continuesPrefill = true as const;
  readonly embedTokens: Embedding;
  readonly layernormEmbedding: RMSNorm | null;
  readonly layers: RetNetLayer[];
  readonly layerNorm: RMSNorm | null;
  readonly outputProjection: Linear;
  readonly backend: Device;
  readonly dtype: DType;
  private readonly angles: Float64Array;
  /** Draws dropout masks (training only). */
  private readonly rng: Rng;

  constructor(
    readonly config: RetNetConfig,
    opts: RetNetOptions = {},
  ) {
    super();
    validateRetNetConfig(config);
    const c = config;
    this.backend = opts.backend ?? getBackend();
    this.dtype = opts.dtype ?? 'float32';
    const p: ParamOptions = { backend: this.backend, dtype: this.dtype, init: opts.init };
    const rng = new Rng(opts.seed ?? 0);
    this.rng = rng;
    this.embedTokens = this.child(
      'embed_tokens',
      new Embedding(normal([c.vocabSize, c.embedDim], rng, c.embedDim ** -0.5, p)),
    );
    this.layernormEmbedding = c.layernormEmbedding
      ? this.child('layernorm_embedding', new RMSNorm(c.embedDim, c.normEps, p))
      : null;
    this.layers = Array.from({ length: c.layers }, (_, i) => this.child(`layers.${i}`, new RetNetLayer(c, i, rng, p)));
    this.layerNorm = c.normalizeBefore ? this.child('layer_norm', new RMSNorm(c.embedDim, c.normEps, p)) : null;
    this.outputProjection = this.child(
      'output_projection',
      new Linear(
        c.tiedEmbeddings ? this.embedTokens.weight : normal([c.vocabSize, c.embedDim], rng, c.embedDim ** -0.5, p),
      ),
    );
    this.angles = rotaryAngles(headDims(c).K, c.rotaryAngles, c.rotaryPairs);
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

  get vocabSize(): number {
    return this.config.vocabSize;
  }

  /** The state of the generator behind dropout masks (the trainer saves it so a resumed run continues exactly). */
  rngState(): number[] {
    return this.rng.getState();
  }

  setRngState(state: readonly number[]): void {
    this.rng.setState(state);
  }

  private checkIds(ids: Tensor): void {
    if (ids.dtype !== 'int32' || ids.rank !== 2)
      throw new ShapeError(`RetNet: token ids must be int32 [B, T], got ${ids.toString()}`);
  }

  private embed(ids: Tensor): Tensor {
    const c = this.config;
    let x = this.embedTokens.forward(ids);
    if (c.scaleEmbedding) {
      const s = scale(x, Math.sqrt(c.embedDim));
      release(x);
      x = s;
    }
    if (this.layernormEmbedding) {
      const n = this.layernormEmbedding.forward(x);
      release(x);
      x = n;
    }
    if (this.training && c.dropout > 0) x = dropout(x, c.dropout, this.rng);
    return x;
  }

  private head(x: Tensor): Tensor {
    const normed = this.layerNorm ? this.layerNorm.forward(x) : x;
    if (normed !== x) release(x);
    const logits = this.outputProjection.forward(normed);
    release(normed);
    return logits;
  }

  private runLayers(
    ids: Tensor,
    form: RetentionForm,
    chunkSize: number,
    capture: boolean,
    padding: Padding | null = null,
    inputs: Tensor[] | null = null,
    start: { position: number; states: RetentionState[] } | null = null,
  ): { x: Tensor; states: { state: Tensor; scale: Tensor }[] } {
    const [B, T] = ids.shape as [number, number];
    const from = start?.position ?? 0;
    const { cos, sin } = padding
      ? rotaryTables(this.backend, this.dtype, this.angles, padding.positions, true, B)
      : rotaryTables(
          this.backend,
          this.dtype,
          this.angles,
          [...Array(T).keys()].map((t) => from + t),
          false,
        );
    let x = this.embed(ids);
    const states: { state: Tensor; scale: Tensor }[] = [];
    for (const [l, layer] of this.layers.entries()) {
      inputs?.push(x);
      const next = layer.run(x, (normed) => {
        const initial = start?.states[l] ?? null;
        const { y, state } = layer.retention.forward(normed, cos, sin, form, chunkSize, capture, padding, initial);
        if (state) states.push(state);
        return y;
      });
      if (!inputs) release(x);
      x = next;
    }
    // The rotary tables are saved by the tape's rotary nodes when recording; otherwise free them now.
    if (!gradEnabled()) release(cos, sin);
    return { x, states };
  }

  /** ids int32 [B, T] -> logits [B, T, V] (with `opts.mask`, a padded batch: see ForwardOptions.mask). */
  forward(ids: Tensor, opts: ForwardOptions = {}): Tensor {
    this.checkIds(ids);
    const form = opts.form ?? (this.config.chunkwiseRecurrent ? 'chunkwise' : 'parallel');
    const chunkSize = opts.chunkSize ?? this.config.chunkSize;
    const [B, T] = ids.shape as [number, number];
    const padding = opts.mask ? paddingOf(opts.mask, B, T, 'RetNet.forward') : null;
    return this.head(this.runLayers(ids, form, chunkSize, false, padding).x);
  }

  /**
   * The residual stream of ids [B, T] (opts as forward): the input of each layer (0: the embeddings), the output of
   * the last layer, and that output after the final norm; each [B, T, D]. Not differentiable.
   */
  hiddenStates(ids: Tensor, opts: ForwardOptions = {}): { layers: Tensor[]; final: Tensor } {
    this.checkIds(ids);
    const form = opts.form ?? (this.config.chunkwiseRecurrent ? 'chunkwise' : 'parallel');
    const [B, T] = ids.shape as [number, number];
    const padding = opts.mask ? paddingOf(opts.mask, B, T, 'RetNet.hiddenStates') : null;
    return noGrad(() => {
      const layers: Tensor[] = [];
      const { x } = this.runLayers(ids, form, opts.chunkSize ?? this.config.chunkSize, false, padding, layers);
      layers.push(x);
      return { layers, final: this.layerNorm ? this.layerNorm.forward(x) : x };
    });
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

  /**
   * A state as if each of `batch` rows had consumed `length` tokens, with random contents: for measuring the per-token
   * decode cost at a context length, which depends on the state's shape, not on its values (benchmarks). Each scale
   * holds the decay sum Σ_{i<length} γ^i that a real prefill leaves; the states hold normal(0, 1/K) values.
   */
  syntheticState(batch: number, length: number, rng: Rng): RetNetDecodeState {
    const { K } = headDims(this.config);
    const state = this.emptyState(batch);
    state.positions = new Array<number>(batch).fill(length);
    const sums = this.layers[0]!.retention.gammas.map((g) => (1 - g ** length) / (1 - g));
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

  /**
   * Prefills each prompt with the chunkwise form (or `opts.form`) and returns the last logits [B, V] and the state.
   * With `opts.state`, row b's prompt continues row b of that state (e.g. the next piece of a long prompt: chunked
   * prefill), which is advanced in place and returned.
   */
  prefill(
    prompts: readonly (readonly number[])[],
    opts: ForwardOptions & { state?: DecodeState } = {},
  ): { logits: Tensor; state: RetNetDecodeState } {
    const form = opts.form ?? 'chunkwise';
    const chunkSize = opts.chunkSize ?? this.config.chunkSize;
    for (const [i, p] of prompts.entries())
      if (p.length === 0) throw new ShapeError(`prefill: prompt ${i} is empty (every prompt needs at least one token)`);
    const given = opts.state;
    if (given && !(given instanceof RetNetDecodeState && given.states.length === this.layers.length))
      throw new ShapeError('RetNet.prefill: the state is not a state of this RetNet');
    if (given && given.batch !== prompts.length)
      throw new ShapeError(`prefill: ${prompts.length} prompts for a state of ${given.batch} rows`);
    const result = noGrad(() =>
      tidy(() => {
        const lastLogits: Tensor[] = [];
        const perPrompt = prompts.map((p, b) => {
          const ids = this.backend.fromData(p, [1, p.length], 'int32');
          const start = given
            ? {
                position: given.positions[b]!,
                states: given.states.map((st, l) => ({
                  state: slice(st, 0, b, b + 1),
                  scale: slice(given.scales[l]!, 0, b, b + 1),
                })),
              }
            : null;
          const { x, states } = this.runLayers(ids, form, chunkSize, true, null, null, start);
          const last = slice(x, 1, p.length - 1, p.length); // [1, 1, D]
          lastLogits.push(reshape(this.head(last), [1, this.vocabSize]));
          return states;
        });
        const join = (pick: (s: { state: Tensor; scale: Tensor }) => Tensor) =>
          this.layers.map((_, l) =>
            concat(
              perPrompt.map((states) => pick(states[l]!)),
              0,
            ),
          );
        const positions = prompts.map((p, b) => (given?.positions[b] ?? 0) + p.length);
        return { logits: concat(lastLogits, 0), states: join((s) => s.state), scales: join((s) => s.scale), positions };
      }),
    );
    if (!given)
      return { logits: result.logits, state: new RetNetDecodeState(result.states, result.scales, result.positions) };
    result.states.forEach((t, l) => given.replace(l, t, result.scales[l]!));
    given.positions = result.positions;
    return { logits: result.logits, state: given };
  }

  /**
   * One recurrent step for every row: tokens [B] -> logits [B, V]. `mask` [B] (1 = token, 0 = padding) marks rows
   * whose token is padding: their state and position stay as they were (their logits mean nothing).
   */
  step(tokens: readonly number[], state: DecodeState, mask?: readonly number[]): Tensor {
    if (!(state instanceof RetNetDecodeState)) throw new ShapeError('RetNet.step: the state is not a RetNet state');
    if (tokens.length !== state.batch)
      throw new ShapeError(`RetNet.step: ${tokens.length} tokens for a state of ${state.batch} rows`);
    const padded = mask ? paddingOf([mask], 1, tokens.length, 'RetNet.step') : null;
    const keepRows = padded ? mask!.flatMap((m, b) => (m === 0 ? [b] : [])) : [];
    // The padded rows' states, put back after the step.
    const saved = keepRows.length > 0 ? state.rows(keepRows) : null;
    const logits = noGrad(() =>
      tidy(() => {
        const B = tokens.length;
        const ids = this.backend.fromData(tokens, [B, 1], 'int32');
        const { cos, sin } = rotaryTables(this.backend, this.dtype, this.angles, state.positions, true);
        let x = this.embed(ids);
        this.layers.forEach((layer, l) => {
          const next = layer.run(x, (normed) =>
            layer.retention.step(normed, cos, sin, state.states[l]!, state.scales[l]!),
          );
          release(x);
          x = next;
        });
        return reshape(this.head(x), [B, this.vocabSize]);
      }),
    );
    if (saved) {
      state.setRows(keepRows, saved);
      saved.dispose();
    }
    state.positions = state.positions.map((p, b) => (mask && mask[b] === 0 ? p : p + 1));
    return logits;
  }
}
