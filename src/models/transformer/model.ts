// The decoder-only Transformer baseline: the decoder trunk (src/models/decoder.ts) with causal multi-head softmax
// attention as its token mixer, rotary positions (RoPE over interleaved pairs), pre-RMSNorm blocks and a GLU
// feed-forward. Full sequences run the naive or the FlashAttention kernel; decoding keeps a KV cache per layer.
// Parameter names follow PyTorch/fairseq (`layers.0.self_attn.q_proj.weight`).

import type { AttentionAlgorithm } from '../../backend/kernels.js';
import { ShapeError } from '../../errors.js';
import { attentionDecode, causalAttention } from '../../ops/attention.js';
import { rotary } from '../../ops/rotary.js';
import { reshape } from '../../ops/shape.js';
import { Module } from '../../nn/module.js';
import { Linear, xavierUniform, type ParamOptions } from '../../nn/layers.js';
import { ropeAngles, type RotaryTables } from '../../nn/rotary.js';
import { Rng, tiledNormal } from '../../tensor/random.js';
import { keep } from '../../tensor/scope.js';
import type { Tensor } from '../../tensor/tensor.js';
import { Decoder, type DecoderOptions, type Mixer, type TrunkState, release } from '../decoder.js';
import type { DecodeState } from '../lm.js';
import { type TransformerConfig, validateTransformerConfig } from './config.js';
import { kernelsOf } from '../../backend/kernels.js';

export type TransformerOptions = DecoderOptions;

export interface TransformerForwardOptions {
  /** Attention algorithm of this pass; default config.attention. */
  attention?: AttentionAlgorithm;
}

/** The KV cache grows in blocks of this many positions (copying costs ~1/64 of a step's cache reads). */
const CACHE_BLOCK = 64;

const capacityFor = (positions: number) => Math.ceil(positions / CACHE_BLOCK) * CACHE_BLOCK;

/**
 * A batch's KV cache: per layer keys and values [B, H, C, K] (rotated keys), C the capacity. Row b holds its
 * positions [0, positions[b]); entries past that are unused (a batched prefill leaves padding there, which later
 * steps overwrite). Bytes grow linearly with the longest row.
 */
export class TransformerDecodeState implements TrunkState {
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
    for (const t of this.tensors()) n += t.storage.byteLength;
    return n;
  }

  tensors(): Tensor[] {
    return [...this.keys, ...this.values];
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

  /** Layer l's cache from the prompts' keys and values k, v: [B, T, H, K] (T padded positions; capacity ≥ T). */
  fill(l: number, k: Tensor, v: Tensor): void {
    const [B, T, H, K] = k.shape as [number, number, number, number];
    const C = capacityFor(T);
    // Per (row, head), T vectors H·K apart become contiguous.
    const cache = (t: Tensor) => {
      const out = keep(t.device.zeros([B, H, C, K], t.dtype));
      for (let b = 0; b < B; b++)
        for (let h = 0; h < H; h++)
          kernelsOf(t).copyBlocks(t, (b * T * H + h) * K, H * K, out, (b * H + h) * C * K, K, T, K);
      return out;
    };
    this.keys[l]!.dispose();
    this.values[l]!.dispose();
    this.keys[l] = cache(k);
    this.values[l] = cache(v);
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

  /**
   * Nothing to save: a step writes a padded row's key and value at its position, which stays past the row's end (the
   * position does not advance) until the row's next real token overwrites it.
   */
  keepRows(): () => void {
    return () => {};
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

type TransformerPass = Required<TransformerForwardOptions>;

/** Causal multi-head self-attention with rotary q, k; bias-free, initialised as torchscale's MultiheadAttention. */
export class SelfAttention extends Module implements Mixer<TransformerDecodeState, TransformerPass> {
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
  private qkv(x: Tensor, rope: RotaryTables): { q: Tensor; k: Tensor; v: Tensor } {
    const [B, T] = x.shape as [number, number];
    const heads = (proj: Linear, rotate: boolean) => {
      const y = proj.forward(x);
      const split = reshape(y, [B, T, this.config.heads, this.K]);
      release(y);
      if (!rotate) return split;
      const rotated = rotary(split, rope.cos, rope.sin);
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

  forward(x: Tensor, rope: RotaryTables, pass: TransformerPass): Tensor {
    const { q, k, v } = this.qkv(x, rope);
    const o = causalAttention(q, k, v, { algorithm: pass.attention });
    release(q, k, v);
    return this.output(o);
  }

  /** Padded prompts x: [B, T, D]; layer l's keys and values [B, T, H, K] become its cache [B, H, C, K]. */
  prefill(x: Tensor, rope: RotaryTables, pass: TransformerPass, state: TransformerDecodeState, layer: number): Tensor {
    const { q, k, v } = this.qkv(x, rope);
    const o = causalAttention(q, k, v, { algorithm: pass.attention });
    release(q);
    state.fill(layer, k, v);
    release(k, v);
    return this.output(o);
  }

  step(x: Tensor, rope: RotaryTables, cache: TransformerDecodeState, l: number): Tensor {
    const B = x.shape[0]!;
    const H = this.config.heads;
    const { q, k, v } = this.qkv(x, rope); // [B, 1, H, K]
    cache.write(l, k, v);
    release(k, v);
    const lengths = cache.positions.map((p) => p + 1);
    const o = attentionDecode(reshape(q, [B, H, this.K]), cache.keys[l]!, cache.values[l]!, lengths); // [B, H, K]
    return this.output(reshape(o, [B, 1, H, this.K]));
  }
}

export class TransformerModel extends Decoder<SelfAttention, TransformerDecodeState, TransformerPass> {
  readonly arch = 'transformer' as const;
  protected readonly packedPrefill = false;
  protected readonly staticStep = false; // the cache grows: attentionDecode's lengths change every step

  constructor(
    readonly config: TransformerConfig,
    opts: TransformerOptions = {},
  ) {
    validateTransformerConfig(config);
    const c = config;
    super(
      {
        ...c,
        activation: c.activation === 'swish' ? 'silu' : 'gelu',
        glu: true,
        normalizeBefore: true,
        scaleEmbedding: false,
        layernormEmbedding: false,
        deepnorm: false,
        activationDropout: 0,
        dropPathRate: 0,
      },
      {
        name: 'self_attn',
        normName: 'self_attn_layer_norm',
        build: (_l, rng, p) => new SelfAttention(c, rng, p),
        angles: ropeAngles(c.embedDim / c.heads, c.rotaryTheta),
      },
      opts,
    );
  }

  protected passOptions(opts: TransformerForwardOptions): TransformerPass {
    return { attention: opts.attention ?? this.config.attention };
  }

  /** An empty cache of `batch` rows (capacity 0; a prefill or the first step makes room). */
  emptyState(batch: number): TransformerDecodeState {
    const H = this.config.heads;
    const K = this.config.embedDim / H;
    const make = () => this.backend.zeros([batch, H, 0, K], this.dtype);
    return new TransformerDecodeState(this.layers.map(make), this.layers.map(make), new Array<number>(batch).fill(0));
  }

  protected stepState(state: DecodeState, op: string): TransformerDecodeState {
    if (!(state instanceof TransformerDecodeState) || state.keys.length !== this.layers.length)
      throw new ShapeError(`Transformer.${op}: the state is not a state of this Transformer`);
    if (op === 'step') state.reserve();
    return state;
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
}
