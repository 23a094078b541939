// The decoder trunk every architecture shares (torchscale's RetNetDecoder / a pre-norm Transformer decoder): token
// embedding (optionally scaled and normed), L blocks of a token mixer and a feed-forward with residuals, a final
// RMSNorm and the output projection (tied to the embedding or not), the rotary tables, the dropout generator, and
// the skeletons of forward (with padding masks), hiddenStates, prefill and step (with masked rows). An architecture
// supplies only its mixer (retention, attention), its decode state and its pass options. Parameter names are
// torchscale's state_dict keys: `embed_tokens`, `layers.<l>.<mixer>`, `layers.<l>.<mixer norm>`, `layers.<l>.ffn`,
// `layers.<l>.final_layer_norm`, `layer_norm`, `output_projection`.

import type { Device } from '../backend/device.js';
import { type ActivationKind, kernelsOf } from '../backend/kernels.js';
import { getBackend } from '../backend/select.js';
import { gradEnabled, noGrad, release } from '../autograd/tape.js';
import { ShapeError } from '../errors.js';
import { add, scale } from '../ops/math.js';
import { dropout } from '../ops/nn.js';
import { concat, reshape, slice } from '../ops/shape.js';
import { Module } from '../nn/module.js';
import { Embedding, GLU, Linear, RMSNorm, normal, type ParamOptions } from '../nn/layers.js';
import { Rotary, type RotaryTables } from '../nn/rotary.js';
import type { DType } from '../tensor/dtype.js';
import { Rng } from '../tensor/random.js';
import { tidy } from '../tensor/scope.js';
import type { Storage } from '../tensor/storage.js';
import type { Tensor } from '../tensor/tensor.js';
import { StepGraphs } from './step-graph.js';
import type { CausalLM, DecodeState } from './lm.js';

/** The trunk's hyper-parameters; each architecture's config maps onto them. */
export interface TrunkConfig {
  vocabSize: number;
  /** D: model width. */
  embedDim: number;
  layers: number;
  ffnDim: number;
  activation: ActivationKind;
  /** Gated feed-forward fc2(act(fc1 x) ⊙ gate x), or fc2(act(fc1 x)). */
  glu: boolean;
  normEps: number;
  /** Pre-norm (x + f(norm(x))) or post-norm (norm(x + f(x))) blocks; pre-norm adds the final norm. */
  normalizeBefore: boolean;
  /** Multiply the embeddings by sqrt(D). */
  scaleEmbedding: boolean;
  /** RMSNorm on the embeddings. */
  layernormEmbedding: boolean;
  /** DeepNet residual scaling α = (2L)^¼ and the feed-forward init gain (8L)^-¼. */
  deepnorm: boolean;
  /** Dropout on the embeddings and each residual branch while training. */
  dropout: number;
  /** Dropout on the feed-forward's hidden activations while training. */
  activationDropout: number;
  /** Stochastic depth: layer l drops its branches with probability dropPathRate · l / (L − 1). */
  dropPathRate: number;
  tiedEmbeddings: boolean;
}

/** The decode state every architecture's state extends: the trunk advances `positions`. */
export interface TrunkState extends DecodeState {
  positions: number[];
  /**
   * Saves what a step would change in the given rows and returns the function that puts it back: the rows of a
   * masked step (padding) keep their state.
   */
  keepRows(rows: readonly number[]): () => void;
  /** The tensors a step reads or writes in place (what a graph of the step must find where it was). */
  tensors(): Tensor[];
}

/**
 * A layer's token mixer. `P` is the architecture's pass options (RetNet: form and chunk size; Transformer: the
 * attention algorithm), `S` its decode state.
 */
export interface Mixer<S extends TrunkState, P> {
  /**
   * Full sequences: x [B, T, D] with the tables of positions 0..T−1 -> [B, T, D] (a padded batch: each row's real
   * tokens, [1, n_b, D], one call per row). Differentiable.
   */
  forward(x: Tensor, rope: RotaryTables, pass: P): Tensor;
  /**
   * Prefill of layer l: x holds the prompts in the architecture's prefill layout (`packed`: [1, ΣT, D], prompt b's
   * tokens after prompt b−1's, tables at each token's position; padded: [B, max T, D]); leaves layer l's part of
   * the state after each prompt in `state`.
   */
  prefill(x: Tensor, rope: RotaryTables, pass: P, state: S, layer: number, lengths: readonly number[]): Tensor;
  /** One step of every row: x [B, 1, D] with per-row tables [B, 1, K]; advances layer l of the state in place. */
  step(x: Tensor, rope: RotaryTables, state: S, layer: number): Tensor;
}

/** Frees intermediates the model is done with (the tape keeps what a backward needs: autograd/tape.ts). */
export { release };

/** Frees tables the caller owns (not the Rotary cache's) once no tape node can need them. */
function releaseTables(rope: RotaryTables): void {
  if (rope.owned && !gradEnabled()) release(rope.cos, rope.sin);
}

/**
 * Options of a full-sequence pass: the architecture's pass options and a padding mask [B][T] (1 = token, 0 = padding;
 * Hugging Face's attention_mask). Each row's real tokens mix alone, at positions 0, 1, … of that row (a token's
 * position is the number of real tokens before it), so a row's logits at its real positions equal those of its real
 * tokens alone, with left, right or inner padding (fla's convention, fla-spec §6). Logits at padded positions are
 * computed (embedding, norms and feed-forward run there, the mixer gives 0) but mean nothing.
 */
export type ForwardOptions<P> = Partial<P> & { mask?: readonly (readonly number[])[] };

/** The real tokens of a padded batch: per row the runs [start, end) of mask 1. */
export interface Padding {
  runs: [number, number][][];
}

/** The padding described by `mask` for B rows of T tokens, or null when every token is real. `op` names the caller. */
export function paddingOf(mask: readonly (readonly number[])[], B: number, T: number, op: string): Padding | null {
  if (mask.length !== B) throw new ShapeError(`${op}: mask has ${mask.length} rows for a batch of ${B}`);
  let padded = false;
  const runs = mask.map((row, b) => {
    if (row.length !== T) throw new ShapeError(`${op}: mask row ${b} has ${row.length} entries for ${T} tokens`);
    const mine: [number, number][] = [];
    row.forEach((m, t) => {
      if (m !== 0 && m !== 1) throw new ShapeError(`${op}: mask[${b}][${t}] is ${m}, expected 0 or 1`);
      if (m === 0) return void (padded = true);
      const last = mine[mine.length - 1];
      if (last && last[1] === t) last[1] = t + 1;
      else mine.push([t, t + 1]);
    });
    return mine;
  });
  return padded ? { runs } : null;
}

/** Row b's real tokens of x: [B, T, D] as [1, n_b, D]. */
function gatherRow(x: Tensor, b: number, runs: readonly [number, number][]): Tensor {
  const row = slice(x, 0, b, b + 1);
  if (runs.length === 1 && runs[0]![0] === 0 && runs[0]![1] === x.shape[1]) return row;
  const parts = runs.map(([s, e]) => slice(row, 1, s, e));
  const out = parts.length === 1 ? parts[0]! : concat(parts, 1);
  release(row);
  if (parts.length > 1) release(...parts);
  return out;
}

/** The inverse of gatherRow for every row: rows [1, n_b, D] back into [B, T, D], zeros at padded positions. */
function scatterRows(rows: readonly Tensor[], padding: Padding, T: number): Tensor {
  const first = rows[0]!;
  const D = first.shape[2]!;
  const pieces: Tensor[] = [];
  const out = concat(
    rows.map((r, b) => {
      const parts: Tensor[] = [];
      let t = 0;
      let at = 0;
      for (const [s, e] of [...padding.runs[b]!, [T, T] as [number, number]]) {
        if (s > t) parts.push(first.device.zeros([1, s - t, D], first.dtype));
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

export interface DecoderOptions {
  backend?: Device;
  dtype?: DType;
  /** Seed of the initial weights, then of the dropout masks while training. */
  seed?: number;
  /** false: parameters start as zeros, not random draws (a checkpoint fills them next). Default true. */
  init?: boolean;
}

/** How an architecture names and builds its mixer. */
export interface MixerSpec<M> {
  /** Parameter prefix of the mixer and of its norm (torchscale: `retention`, `retention_layer_norm`). */
  name: string;
  normName: string;
  /** Builds layer l's mixer; it draws its initial weights from rng (before the layer's feed-forward). */
  build(layer: number, rng: Rng, opts: ParamOptions): M;
  /** Rotary angles θ of a head [K]. */
  angles: Float64Array;
}

/** One block: mixer and feed-forward with their norms, dropout, drop path and the residual scale. */
export class DecoderLayer<M extends Module> extends Module {
  readonly mixer: M;
  readonly mixerNorm: RMSNorm;
  readonly ffn: GLU;
  readonly finalLayerNorm: RMSNorm;
  /** DeepNet residual scale α = (2L)^¼, else 1. */
  readonly alpha: number;
  private readonly dropPath: number;

  constructor(
    readonly config: TrunkConfig,
    readonly index: number,
    spec: MixerSpec<M>,
    private readonly rng: Rng,
    opts: ParamOptions,
  ) {
    super();
    const c = config;
    this.alpha = c.deepnorm ? (2 * c.layers) ** 0.25 : 1;
    this.dropPath = c.layers > 1 ? (c.dropPathRate * index) / (c.layers - 1) : 0;
    this.mixer = this.child(spec.name, spec.build(index, rng, opts));
    this.mixerNorm = this.child(spec.normName, new RMSNorm(c.embedDim, c.normEps, opts));
    this.ffn = this.child(
      'ffn',
      new GLU(c.embedDim, c.ffnDim, c.activation, rng, opts, {
        gated: c.glu,
        // DeepNet init: fc1/fc2 (and the mixer's value and output projections) scaled by (8L)^-¼; the gate is not.
        gain: c.deepnorm ? (8 * c.layers) ** -0.25 : 1,
        activationDropout: c.activationDropout,
        rng,
      }),
    );
    this.finalLayerNorm = this.child('final_layer_norm', new RMSNorm(c.embedDim, c.normEps, opts));
  }

  /** Dropout, drop path and α·residual + branch, as torchscale orders them. */
  private residual(residual: Tensor, h: Tensor): Tensor {
    let branch = h;
    if (this.training) {
      if (this.config.dropout > 0) branch = dropout(branch, this.config.dropout, this.rng);
      if (this.dropPath > 0) branch = dropout(branch, this.dropPath, this.rng, true);
    }
    const base = this.alpha === 1 ? residual : scale(residual, this.alpha);
    const out = add(base, branch);
    if (base !== residual) release(base);
    release(branch);
    if (branch !== h) release(h);
    return out;
  }

  /** The block around one mixer call (full sequence, prefill or step); x: [B, T, D] -> [B, T, D]. */
  run(x: Tensor, mix: (normed: Tensor) => Tensor): Tensor {
    const pre = this.config.normalizeBefore;
    const normed = pre ? this.mixerNorm.forward(x) : x;
    const h = mix(normed);
    if (normed !== x) release(normed);
    let x1 = this.residual(x, h);
    if (!pre) {
      const n = this.mixerNorm.forward(x1);
      release(x1);
      x1 = n;
    }
    const normed2 = pre ? this.finalLayerNorm.forward(x1) : x1;
    const f = this.ffn.forward(normed2);
    if (normed2 !== x1) release(normed2);
    let x2 = this.residual(x1, f);
    release(x1);
    if (!pre) {
      const n = this.finalLayerNorm.forward(x2);
      release(x2);
      x2 = n;
    }
    return x2;
  }
}

export abstract class Decoder<M extends Module & Mixer<S, P>, S extends TrunkState, P>
  extends Module
  implements CausalLM
{
  abstract readonly arch: CausalLM['arch'];
  readonly embedTokens: Embedding;
  readonly layernormEmbedding: RMSNorm | null;
  readonly layers: DecoderLayer<M>[];
  readonly layerNorm: RMSNorm | null;
  readonly outputProjection: Linear;
  readonly backend: Device;
  readonly dtype: DType;
  protected readonly rotary: Rotary;
  /** Draws the initial weights, then the dropout masks (training only). */
  private readonly rng: Rng;

  /**
   * Prefill layout: packed (the prompts one after another in one row of ΣT tokens, for mixers that take sequence
   * lengths) or padded (B rows right-padded to the longest prompt; a fresh state only).
   */
  protected abstract readonly packedPrefill: boolean;
  /**
   * Whether a step is the same launches at every position (RetNet: the state does not grow; a Transformer's cache
   * does), so that a device with graphs may replay it as one (step-graph.ts).
   */
  protected abstract readonly staticStep: boolean;
  /**
   * Replay decode steps as a device graph where the device has them (cuda) and the architecture allows
   * (`staticStep`); false runs every step kernel by kernel (a graph already captured is kept, and used again when
   * this is set back, until the state or the weights change or the model is disposed). Results are the same.
   */
  stepGraphs = true;
  private graphCache: StepGraphs | null = null;

  constructor(
    private readonly trunk: TrunkConfig,
    spec: MixerSpec<M>,
    opts: DecoderOptions,
  ) {
    super();
    const c = trunk;
    this.backend = opts.backend ?? getBackend();
    this.dtype = opts.dtype ?? 'float32';
    const p: ParamOptions = { backend: this.backend, dtype: this.dtype, init: opts.init };
    const rng = new Rng(opts.seed ?? 0);
    this.rng = rng;
    const table = () => normal([c.vocabSize, c.embedDim], rng, c.embedDim ** -0.5, p);
    this.embedTokens = this.child('embed_tokens', new Embedding(table()));
    this.layernormEmbedding = c.layernormEmbedding
      ? this.child('layernorm_embedding', new RMSNorm(c.embedDim, c.normEps, p))
      : null;
    this.layers = Array.from({ length: c.layers }, (_, i) =>
      this.child(`layers.${i}`, new DecoderLayer(c, i, spec, rng, p)),
    );
    this.layerNorm = c.normalizeBefore ? this.child('layer_norm', new RMSNorm(c.embedDim, c.normEps, p)) : null;
    this.outputProjection = this.child(
      'output_projection',
      new Linear(c.tiedEmbeddings ? this.embedTokens.weight : table()),
    );
    this.rotary = new Rotary(spec.angles, this.backend, this.dtype);
  }

  get vocabSize(): number {
    return this.trunk.vocabSize;
  }

  /** The pass options of a call: the given ones over the config's defaults. */
  protected abstract passOptions(opts: Partial<P>, purpose: 'forward' | 'prefill'): P;
  /** An empty state of `batch` rows at position 0. */
  abstract emptyState(batch: number): S;
  /** `state` as this architecture's state (throws naming `op` if it is not), made ready for one more position. */
  protected abstract stepState(state: DecodeState, op: string): S;

  /** The state of the generator behind dropout masks (the trainer saves it so a resumed run continues exactly). */
  rngState(): number[] {
    return this.rng.getState();
  }

  setRngState(state: readonly number[]): void {
    this.rng.setState(state);
  }

  private embed(ids: Tensor): Tensor {
    const c = this.trunk;
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

  /**
   * Hidden states [B, T, D] of ids int32 [B, T], each layer mixing through `mix`; with `inputs`, each layer's input
   * is kept there (0: the embeddings) rather than freed.
   */
  private hidden(
    ids: Tensor,
    mix: (layer: DecoderLayer<M>, l: number, normed: Tensor) => Tensor,
    inputs?: Tensor[],
  ): Tensor {
    let x = this.embed(ids);
    this.layers.forEach((layer, l) => {
      const next = layer.run(x, (normed) => mix(layer, l, normed));
      if (inputs) inputs.push(x);
      else release(x);
      x = next;
    });
    return x;
  }

  /** The mixer over each row's real tokens alone (positions 0..n_b−1), zeros at padded positions; x: [B, T, D]. */
  private mixRows(mixer: M, x: Tensor, padding: Padding, pass: P): Tensor {
    const [, T, D] = x.shape as [number, number, number];
    const rows = padding.runs.map((runs, b) => {
      const n = runs.reduce((a, [s, e]) => a + e - s, 0);
      if (n === 0) return x.device.zeros([1, 0, D], x.dtype);
      const xb = gatherRow(x, b, runs);
      const rope = this.rotary.at([...Array(n).keys()], false);
      const y = mixer.forward(xb, rope, pass);
      release(xb);
      releaseTables(rope);
      return y;
    });
    const out = scatterRows(rows, padding, T);
    release(...rows);
    return out;
  }

  /** The last layer's output [B, T, D] of a full-sequence pass over ids int32 [B, T] (see forward). */
  private sequence(ids: Tensor, opts: ForwardOptions<P>, op: string, inputs?: Tensor[]): Tensor {
    if (ids.dtype !== 'int32' || ids.rank !== 2)
      throw new ShapeError(`${this.arch}: token ids must be int32 [B, T], got ${ids.toString()}`);
    const [B, T] = ids.shape as [number, number];
    const { mask, ...rest } = opts;
    const pass = this.passOptions(rest as Partial<P>, 'forward');
    const padding = mask ? paddingOf(mask, B, T, `${this.arch}.${op}`) : null;
    if (padding)
      return this.hidden(ids, (layer, _l, normed) => this.mixRows(layer.mixer, normed, padding, pass), inputs);
    const rope = this.rotary.prefix(T);
    return this.hidden(ids, (layer, _l, normed) => layer.mixer.forward(normed, rope, pass), inputs);
  }

  /** ids int32 [B, T] -> logits [B, T, V] (with `opts.mask`, a padded batch: see ForwardOptions). Differentiable. */
  forward(ids: Tensor, opts: ForwardOptions<P> = {}): Tensor {
    return this.head(this.sequence(ids, opts, 'forward'));
  }

  /**
   * The residual stream of ids [B, T] (opts as forward): the input of each layer (0: the embeddings), the output of
   * the last layer, and that output after the final norm; each [B, T, D]. Not differentiable.
   */
  hiddenStates(ids: Tensor, opts: ForwardOptions<P> = {}): { layers: Tensor[]; final: Tensor } {
    return noGrad(() => {
      const layers: Tensor[] = [];
      const x = this.sequence(ids, opts, 'hiddenStates', layers);
      layers.push(x);
      return { layers, final: this.layerNorm ? this.layerNorm.forward(x) : x };
    });
  }

  /**
   * Consumes one prompt per row (each at least one token) and returns the logits after each prompt's last token
   * [B, V] and the state after it. With `opts.state`, the prompts continue that state (row b's prompt follows what
   * row b consumed, e.g. the next piece of a long prompt) and it is advanced in place and returned. Not differentiable.
   */
  prefill(
    prompts: readonly (readonly number[])[],
    opts: Partial<P> & { state?: DecodeState } = {},
  ): { logits: Tensor; state: S } {
    for (const [i, p] of prompts.entries())
      if (p.length === 0) throw new ShapeError(`prefill: prompt ${i} is empty (every prompt needs at least one token)`);
    const B = prompts.length;
    const { state: given, ...rest } = opts;
    const pass = this.passOptions(rest as Partial<P>, 'prefill');
    if (given && given.batch !== B) throw new ShapeError(`prefill: ${B} prompts for a state of ${given.batch} rows`);
    const state = given ? this.stepState(given, 'prefill') : this.emptyState(B);
    const lengths = prompts.map((p) => p.length);
    const D = this.trunk.embedDim;
    const logits = noGrad(() =>
      tidy(() => {
        let ids: Tensor;
        let rope: RotaryTables;
        let lastRow: (b: number) => number; // the row of x, seen as [rows, D], after prompt b
        if (this.packedPrefill) {
          const flat = prompts.flat();
          ids = this.backend.fromData(flat, [1, flat.length], 'int32');
          rope = this.rotary.at(
            prompts.flatMap((p, b) => p.map((_, j) => state.positions[b]! + j)),
            false,
          );
          const ends: number[] = [];
          lengths.reduce((end, n) => (ends.push(end + n - 1), end + n), 0);
          lastRow = (b) => ends[b]!;
        } else {
          if (state.positions.some((p) => p !== 0))
            throw new ShapeError(`prefill: a ${this.arch} prefill starts from an empty state (no opts.state)`);
          const T = Math.max(...lengths);
          const padded = new Int32Array(B * T); // padding: token 0
          prompts.forEach((p, b) => padded.set(p, b * T));
          ids = this.backend.fromData(padded, [B, T], 'int32');
          rope = this.rotary.at([...Array(T).keys()], false); // owned: generation leaves no tables behind
          lastRow = (b) => b * T + lengths[b]! - 1;
        }
        const x = this.hidden(ids, (layer, l, normed) => layer.mixer.prefill(normed, rope, pass, state, l, lengths));
        releaseTables(rope);
        const last = this.backend.zeros([B, 1, D], this.dtype);
        for (let b = 0; b < B; b++) kernelsOf(x).copyBlocks(x, lastRow(b) * D, 0, last, b * D, 0, 1, D);
        release(x);
        return reshape(this.head(last), [B, this.vocabSize]);
      }),
    );
    state.positions = state.positions.map((p, b) => p + lengths[b]!);
    return { logits, state };
  }

  /**
   * One step for every row: tokens [B] -> logits [B, V]; advances the state in place. `mask` [B] (1 = token,
   * 0 = padding) marks rows whose token is padding: their state and position stay as they were (their logits mean
   * nothing).
   */
  step(tokens: readonly number[], given: DecodeState, mask?: readonly number[]): Tensor {
    const state = this.stepState(given, 'step');
    const B = tokens.length;
    if (B !== state.batch) throw new ShapeError(`${this.arch}.step: ${B} tokens for a state of ${state.batch} rows`);
    if (mask) paddingOf([mask], 1, B, `${this.arch}.step`);
    const checked = this.tokenIds(tokens);
    const held = mask ? mask.flatMap((m, b) => (m === 0 ? [b] : [])) : [];
    const restore = held.length > 0 ? state.keepRows(held) : null;
    const body = (ids: Tensor, rope: RotaryTables): Tensor => {
      const x = this.hidden(ids, (layer, l, normed) => layer.mixer.step(normed, rope, state, l));
      return reshape(this.head(x), [B, this.vocabSize]);
    };
    const graph = held.length === 0 ? this.graphCacheFor() : null;
    const logits =
      graph?.step(this.stepKey(state), checked, this.rotary.values(state.positions), body) ??
      noGrad(() =>
        tidy(() => {
          const ids = this.backend.fromData(checked, [B, 1], 'int32');
          const rope = this.rotary.at(state.positions, true);
          const out = body(ids, rope);
          releaseTables(rope);
          return out;
        }),
      );
    restore?.();
    state.positions = state.positions.map((p, b) => (mask?.[b] === 0 ? p : p + 1));
    return logits;
  }

  /** The step graphs, made on first use; null where steps run kernel by kernel. */
  private graphCacheFor(): StepGraphs | null {
    const device = this.backend;
    if (!this.stepGraphs || !this.staticStep || !device.capture) return null;
    this.graphCache ??= new StepGraphs(
      device as Device & Required<Pick<Device, 'capture'>>,
      this.dtype,
      this.rotary.angles.length,
    );
    return this.graphCache;
  }

  /** What a step reads that a graph of it must find where it was: every parameter and the state's tensors. */
  private stepKey(state: S): Storage[] {
    return [...this.parameters(), ...state.tensors()].map((t) => t.storage);
  }

  /** tokens as int32 ids, each checked against the vocabulary (a graph's embedding could not report a bad one). */
  private tokenIds(tokens: readonly number[]): Int32Array {
    const V = this.vocabSize;
    tokens.forEach((t, b) => {
      if (!Number.isInteger(t) || t < 0 || t >= V)
        throw new ShapeError(`${this.arch}.step: token ${t} of row ${b} is outside the vocabulary [0, ${V})`);
    });
    return Int32Array.from(tokens);
  }

  override dispose(): void {
    this.graphCache?.dispose();
    this.graphCache = null;
    this.rotary.clear();
    super.dispose();
  }
}
