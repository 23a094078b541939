// The decoder-only Transformer baseline, built from the same pieces as our RetNet: token embedding, L pre-RMSNorm
// blocks x + Attn(RMSNorm(x)), x + GLU(RMSNorm(x)), a final RMSNorm and the output projection. The token mixer is
// causal multi-head softmax attention with rotary positions (RoPE over interleaved pairs). Full sequences run the
// naive or the FlashAttention kernel; decoding keeps a KV cache per layer. Parameter names follow PyTorch/fairseq
// (`layers.0.self_attn.q_proj.weight`).

import type { Device } from '../../backend/device.js';
import type { AttentionAlgorithm } from '../../backend/kernels.js';
import { getBackend } from '../../backend/select.js';
import { gradEnabled, noGrad } from '../../autograd/tape.js';
import { ShapeError } from '../../errors.js';
import { attentionDecode, causalAttention } from '../../ops/attention.js';
import { add } from '../../ops/math.js';
import { dropout } from '../../ops/nn.js';
import { rotary } from '../../ops/retention.js';
import { reshape } from '../../ops/shape.js';
import { Module } from '../../nn/module.js';
import { Embedding, GLU, Linear, RMSNorm, normal, xavierUniform, type ParamOptions } from '../../nn/layers.js';
import type { DType } from '../../tensor/dtype.js';
import { Rng, tiledNormal } from '../../tensor/random.js';
import { keep, tidy } from '../../tensor/scope.js';
import type { Tensor } from '../../tensor/tensor.js';
import type { CausalLM, DecodeState } from '../lm.js';
import { release, rotaryTables } from '../retnet/model.js';
import { type TransformerConfig, validateTransformerConfig } from './config.js';
import { kernelsOf } from '../../backend/kernels.js';

export interface TransformerOptions {
  backend?: Device;
  dtype?: DType;
  /** Seed of the initial weights (and of dropout masks while training). */
  seed?: number;
  /** false: parameters start as zeros (a checkpoint fills them next). */
  init?: boolean;
}

export interface TransformerForwardOptions {
  /** Attention algorithm of this pass; default config.attention. */
  attention?: AttentionAlgorithm;
}

/** Standard RoPE angles: pair j of a head of K dims turns by θ^(−2j/K) per position (stored for both pair members). */
export function ropeAngles(K: number, theta: number): Float64Array {
  const angles = new Float64Array(K);
  for (let j = 0; j < K / 2; j++) angles[2 * j] = angles[2 * j + 1] = theta ** ((-2 * j) / K);
  return angles;
}

/** The KV cache grows in blocks of this many positions (copying costs ~1/64 of a step's cache reads). */
const CACHE_BLOCK = 64;

const capacityFor = (positions: number) => Math.ceil(positions / CACHE_BLOCK) * CACHE_BLOCK;

/**
 * A batch's KV cache: per layer keys and values [B, H, C, K] (rotated keys), C the capacity. Row b holds its
 * positions [0, positions[b]); entries past that are unused (a batched prefill leaves padding there, which later
 * steps overwrite). Bytes grow linearly with the longest row.
 */
export class TransformerDecodeState implements DecodeState {
  constructor(
    readonly keys: Tensor[],
    readonly values: Tensor[],
    public positions: number[],
  ) {
    for (const t of [...keys, ...values]) keep(t);
  }

  get batch(): number {
    return this.positions.length;
  }

  get capacity(): number {
    return this.keys[0]!.shape[2]!;
  }

  bytes(): number {
    let n = 0;
    for (const t of [...this.keys, ...this.values]) n += t.storage.byteLength;
    return n;
  }

  /** Copies rows (old indices, in order) into caches of capacity C, keeping each row's first positions. */
  private rebuild(rows: readonly number[], C: number): void {
    const copy = (t: Tensor) => {
      const [, H, oldC, K] = t.shape as [number, number, number, number];
      const out = keep(t.device.zeros([rows.length, H, C, K], t.dtype));
      const len = Math.min(oldC, C) * K;
      rows.forEach((r, i) => kernelsOf(t).copyBlocks(t, r * H * oldC * K, oldC * K, out, i * H * C * K, C * K, H, len));
      t.dispose();
      return out;
    };
    for (const list of [this.keys, this.values]) list.forEach((t, l) => (list[l] = copy(t)));
  }

  /** Makes room for one more position in every row (whole blocks at a time). */
  reserve(): void {
    const need = Math.max(0, ...this.positions) + 1;
    if (need > this.capacity)
      this.rebuild(
        this.positions.map((_, b) => b),
        capacityFor(need),
      );
  }

  /** Stores layer l's new keys and values k, v: [B, 1, H, K] at each row's position. */
  write(l: number, k: Tensor, v: Tensor): void {
    const C = this.capacity;
    for (const [src, cache] of [
      [k, this.keys[l]!],
      [v, this.values[l]!],
    ] as const) {
      const [B, , H, K] = src.shape as [number, number, number, number];
      for (let b = 0; b < B; b++)
        kernelsOf(src).copyBlocks(src, b * H * K, K, cache, b * H * C * K + this.positions[b]! * K, C * K, H, K);
    }
  }

  select(rows: readonly number[]): void {
    for (const r of rows)
      if (!Number.isInteger(r) || r < 0 || r >= this.batch)
        throw new ShapeError(`DecodeState.select: row ${r} is outside the batch of ${this.batch}`);
    const positions = rows.map((r) => this.positions[r]!);
    this.rebuild(rows, capacityFor(Math.max(0, ...positions)));
    this.positions = positions;
  }

  /** Appends the other cache's rows after these, at the larger capacity of the two; disposes the other. */
  append(other: DecodeState): void {
    if (!(other instanceof TransformerDecodeState) || other.keys.length !== this.keys.length)
      throw new ShapeError('DecodeState.append: the other state is not from the same Transformer');
    const C = Math.max(this.capacity, other.capacity);
    const join = (a: Tensor, b: Tensor) => {
      const [B1, H, , K] = a.shape as [number, number, number, number];
      const out = keep(a.device.zeros([B1 + b.shape[0]!, H, C, K], a.dtype));
      // Each source row (H blocks of its capacity · K) goes to its row of out, blocks C · K apart.
      [a, b].forEach((src, part) => {
        const [B, , Cs] = src.shape as [number, number, number];
        for (let r = 0; r < B; r++)
          kernelsOf(src).copyBlocks(src, r * H * Cs * K, Cs * K, out, (part * B1 + r) * H * C * K, C * K, H, Cs * K);
      });
      a.dispose();
      return out;
    };
    for (const [mine, theirs] of [
      [this.keys, other.keys],
      [this.values, other.values],
    ])
      mine.forEach((t, l) => (mine[l] = join(t, theirs[l]!)));
    this.positions = [...this.positions, ...other.positions];
    other.dispose();
  }

  dispose(): void {
    for (const t of [...this.keys, ...this.values]) t.dispose();
  }
}

/** Causal multi-head self-attention with rotary q, k; bias-free, initialised as torchscale's MultiheadAttention. */
export class SelfAttention extends Module {
  readonly qProj: Linear;
  readonly kProj: Linear;
  readonly vProj: Linear;
  readonly outProj: Linear;
  /** Head dim. */
  readonly K: number;

  constructor(
    readonly config: TransformerConfig,
    rng: Rng,
    opts: ParamOptions,
  ) {
    super();
    const d = config.embedDim;
    this.K = d / config.heads;
    const xavier = (gain: number) => xavierUniform([d, d], rng, gain, opts);
    this.qProj = this.child('q_proj', new Linear(xavier(Math.SQRT1_2)));
    this.kProj = this.child('k_proj', new Linear(xavier(Math.SQRT1_2)));
    this.vProj = this.child('v_proj', new Linear(xavier(Math.SQRT1_2)));
    this.outProj = this.child('out_proj', new Linear(xavier(1)));
  }

  /** q, k, v of x: [B, T, D] as [B, T, H, K] (the layout the projections produce), q and k rotated by the tables. */
  private qkv(x: Tensor, cos: Tensor, sin: Tensor): { q: Tensor; k: Tensor; v: Tensor } {
    const [B, T] = x.shape as [number, number];
    const heads = (proj: Linear, rotate: boolean) => {
      const y = proj.forward(x);
      const split = reshape(y, [B, T, this.config.heads, this.K]);
      release(y);
      if (!rotate) return split;
      const rotated = rotary(split, cos, sin);
      release(split);
      return rotated;
    };
    return { q: heads(this.qProj, true), k: heads(this.kProj, true), v: heads(this.vProj, false) };
  }

  /** out_proj of the concatenated heads of o: [B, T, H, K] -> [B, T, D]. */
  private output(o: Tensor): Tensor {
    const [B, T, H, K] = o.shape as [number, number, number, number];
    const flat = reshape(o, [B, T, H * K]);
    release(o);
    const y = this.outProj.forward(flat);
    release(flat);
    return y;
  }

  /** x: [B, T, D] -> [B, T, D]; with `keepKV`, also this layer's k and v [B, T, H, K] (else they are freed). */
  forward(
    x: Tensor,
    cos: Tensor,
    sin: Tensor,
    algorithm: AttentionAlgorithm,
    keepKV: boolean,
  ): { y: Tensor; kv: { k: Tensor; v: Tensor } | null } {
    const { q, k, v } = this.qkv(x, cos, sin);
    const o = causalAttention(q, k, v, { algorithm });
    release(q);
    if (!keepKV) release(k, v);
    return { y: this.output(o), kv: keepKV ? { k, v } : null };
  }

  /** One decoding step: x: [B, 1, D] with per-row tables [B, 1, K]; appends k, v to layer l of the cache. */
  step(x: Tensor, cos: Tensor, sin: Tensor, cache: TransformerDecodeState, l: number): Tensor {
    const B = x.shape[0]!;
    const H = this.config.heads;
    const { q, k, v } = this.qkv(x, cos, sin); // [B, 1, H, K]
    cache.write(l, k, v);
    release(k, v);
    const lengths = cache.positions.map((p) => p + 1);
    const o = attentionDecode(reshape(q, [B, H, this.K]), cache.keys[l]!, cache.values[l]!, lengths); // [B, H, K]
    return this.output(reshape(o, [B, 1, H, this.K]));
  }
}

/** One pre-RMSNorm block: x + Attn(RMSNorm(x)), then x + GLU(RMSNorm(x)). */
export class TransformerLayer extends Module {
  readonly selfAttn: SelfAttention;
  readonly selfAttnLayerNorm: RMSNorm;
  readonly ffn: GLU;
  readonly finalLayerNorm: RMSNorm;

  constructor(
    readonly config: TransformerConfig,
    private readonly rng: Rng,
    opts: ParamOptions,
  ) {
    super();
    const c = config;
    this.selfAttn = this.child('self_attn', new SelfAttention(c, rng, opts));
    this.selfAttnLayerNorm = this.child('self_attn_layer_norm', new RMSNorm(c.embedDim, c.normEps, opts));
    const act = c.activation === 'swish' ? 'silu' : 'gelu';
    this.ffn = this.child('ffn', new GLU(c.embedDim, c.ffnDim, act, rng, opts));
    this.finalLayerNorm = this.child('final_layer_norm', new RMSNorm(c.embedDim, c.normEps, opts));
  }

  /** x + dropout(h). */
  private residual(x: Tensor, h: Tensor): Tensor {
    const branch = this.training && this.config.dropout > 0 ? dropout(h, this.config.dropout, this.rng) : h;
    const out = add(x, branch);
    release(branch);
    if (branch !== h) release(h);
    return out;
  }

  /** Applies the block around an attention call (full sequence or one step). */
  run(x: Tensor, attend: (normed: Tensor) => Tensor): Tensor {
    const normed = this.selfAttnLayerNorm.forward(x);
    const h = attend(normed);
    release(normed);
    const x1 = this.residual(x, h);
    const normed2 = this.finalLayerNorm.forward(x1);
    const f = this.ffn.forward(normed2);
    release(normed2);
    const x2 = this.residual(x1, f);
    release(x1);
    return x2;
  }
}

export class TransformerModel extends Module implements CausalLM {
  readonly arch = 'transformer' as const;
  readonly embedTokens: Embedding;
  readonly layers: TransformerLayer[];
  readonly layerNorm: RMSNorm;
  readonly outputProjection: Linear;
  readonly backend: Device;
  readonly dtype: DType;
  private readonly angles: Float64Array;
  /** Draws dropout masks (training only). */
  private readonly rng: Rng;

  constructor(
    readonly config: TransformerConfig,
    opts: TransformerOptions = {},
  ) {
    super();
    validateTransformerConfig(config);
    const c = config;
    this.backend = opts.backend ?? getBackend();
    this.dtype = opts.dtype ?? 'float32';
    const p: ParamOptions = { backend: this.backend, dtype: this.dtype, init: opts.init };
    const rng = new Rng(opts.seed ?? 0);
    this.rng = rng;
    const embedding = () => normal([c.vocabSize, c.embedDim], rng, c.embedDim ** -0.5, p);
    this.embedTokens = this.child('embed_tokens', new Embedding(embedding()));
    this.layers = Array.from({ length: c.layers }, (_, i) =>
      this.child(`layers.${i}`, new TransformerLayer(c, rng, p)),
    );
    this.layerNorm = this.child('layer_norm', new RMSNorm(c.embedDim, c.normEps, p));
    this.outputProjection = this.child(
      'output_projection',
      new Linear(c.tiedEmbeddings ? this.embedTokens.weight : embedding()),
    );
    this.angles = ropeAngles(c.embedDim / c.heads, c.rotaryTheta);
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

  private embed(ids: Tensor): Tensor {
    const x = this.embedTokens.forward(ids);
    return this.training && this.config.dropout > 0 ? dropout(x, this.config.dropout, this.rng) : x;
  }

  private head(x: Tensor): Tensor {
    const normed = this.layerNorm.forward(x);
    release(x);
    const logits = this.outputProjection.forward(normed);
    release(normed);
    return logits;
  }

  /** Hidden states [B, T, D] of ids [B, T]; `onKV`, when given, receives each layer's k and v [B, T, H, K]. */
  private runLayers(ids: Tensor, algorithm: AttentionAlgorithm, onKV?: (k: Tensor, v: Tensor) => void): Tensor {
    const T = ids.shape[1]!;
    const { cos, sin } = rotaryTables(this.backend, this.dtype, this.angles, [...Array(T).keys()], false);
    let x = this.embed(ids);
    for (const layer of this.layers) {
      const next = layer.run(x, (normed) => {
        const { y, kv } = layer.selfAttn.forward(normed, cos, sin, algorithm, onKV !== undefined);
        if (kv) {
          onKV!(kv.k, kv.v);
          release(kv.k, kv.v);
        }
        return y;
      });
      release(x);
      x = next;
    }
    // The rotary tables are saved by the tape's rotary nodes when recording; otherwise free them now.
    if (!gradEnabled()) release(cos, sin);
    return x;
  }

  /** ids int32 [B, T] -> logits [B, T, V]. */
  forward(ids: Tensor, opts: TransformerForwardOptions = {}): Tensor {
    if (ids.dtype !== 'int32' || ids.rank !== 2)
      throw new ShapeError(`Transformer: token ids must be int32 [B, T], got ${ids.toString()}`);
    return this.head(this.runLayers(ids, opts.attention ?? this.config.attention));
  }

  /**
   * Runs all prompts as one batch, right-padded to the longest (causal attention never lets a position see the
   * padding after it), and returns each prompt's last logits [B, V] and a KV cache holding its positions.
   */
  prefill(
    prompts: readonly (readonly number[])[],
    opts: TransformerForwardOptions = {},
  ): { logits: Tensor; state: TransformerDecodeState } {
    for (const [i, p] of prompts.entries())
      if (p.length === 0) throw new ShapeError(`prefill: prompt ${i} is empty (every prompt needs at least one token)`);
    const B = prompts.length;
    const lengths = prompts.map((p) => p.length);
    const T = Math.max(0, ...lengths);
    const D = this.config.embedDim;
    return noGrad(() =>
      tidy(() => {
        const ids = new Int32Array(B * T); // padding: token 0
        prompts.forEach((p, b) => ids.set(p, b * T));
        // Each layer's k, v [B, T, H, K] move into a head-major cache [B, H, C, K] as soon as they exist: per (row,
        // head), T vectors H·K apart become contiguous.
        const C = capacityFor(T);
        const keys: Tensor[] = [];
        const values: Tensor[] = [];
        const cache = (t: Tensor) => {
          const [, , H, K] = t.shape as [number, number, number, number];
          const out = this.backend.zeros([B, H, C, K], this.dtype);
          for (let b = 0; b < B; b++)
            for (let h = 0; h < H; h++)
              kernelsOf(t).copyBlocks(t, (b * T * H + h) * K, H * K, out, (b * H + h) * C * K, K, T, K);
          return out;
        };
        const x = this.runLayers(
          this.backend.fromData(ids, [B, T], 'int32'),
          opts.attention ?? this.config.attention,
          (k, v) => {
            keys.push(cache(k));
            values.push(cache(v));
          },
        );
        const last = this.backend.zeros([B, 1, D], this.dtype);
        lengths.forEach((n, b) => kernelsOf(x).copyBlocks(x, (b * T + n - 1) * D, 0, last, b * D, 0, 1, D));
        release(x);
        const state = new TransformerDecodeState(keys, values, lengths);
        return { logits: reshape(this.head(last), [B, this.vocabSize]), state };
      }),
    );
  }

  /**
   * A KV cache as if each of `batch` rows had consumed `length` tokens, with random keys and values, and room for the
   * next token: for measuring the per-token decode cost at a context length, which depends on the cache's shape, not
   * on its values (benchmarks). Its bytes are those of a real cache once the next step has reserved its position
   * (capacity length + 1 rounded up to whole blocks of 64 positions).
   */
  syntheticState(batch: number, length: number, rng: Rng): TransformerDecodeState {
    const H = this.config.heads;
    const K = this.config.embedDim / H;
    const C = capacityFor(length + 1);
    const make = () => {
      const t = this.backend.zeros([batch, H, C, K], this.dtype);
      t.device.write(t, tiledNormal(rng, t.size, 1));
      return t;
    };
    const keys = this.layers.map(make);
    const values = this.layers.map(make);
    return new TransformerDecodeState(keys, values, new Array<number>(batch).fill(length));
  }

  /** One step for every row: tokens [B] -> logits [B, V]; appends to the KV cache. */
  step(tokens: readonly number[], state: DecodeState): Tensor {
    if (!(state instanceof TransformerDecodeState))
      throw new ShapeError('Transformer.step: the state is not a Transformer state');
    if (tokens.length !== state.batch)
      throw new ShapeError(`Transformer.step: ${tokens.length} tokens for a state of ${state.batch} rows`);
    state.reserve();
    const logits = noGrad(() =>
      tidy(() => {
        const B = tokens.length;
        const ids = this.backend.fromData(tokens, [B, 1], 'int32');
        const { cos, sin } = rotaryTables(this.backend, this.dtype, this.angles, state.positions, true);
        let x = this.embed(ids);
        this.layers.forEach((layer, l) => {
          const next = layer.run(x, (normed) => layer.selfAttn.step(normed, cos, sin, state, l));
          release(x);
          x = next;
        });
        return reshape(this.head(x), [B, this.vocabSize]);
      }),
    );
    state.positions = state.positions.map((p) => p + 1);
    return logits;
  }
}
