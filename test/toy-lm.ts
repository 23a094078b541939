// A tiny causal LM for generation and serving tests, independent of RetNet and the Transformer: the logits at t are
// Wm·mean(x_0..x_t) + Wl·x_t of the token embeddings x. forward() computes every position at once (an averaging
// matrix); prefill() and step() carry the running sum, so the incremental path is a different computation that must
// agree with the full one — what the "decoding equals argmax over forward" tests check.

import type { Device } from '../src/backend/device.js';
import { noGrad } from '../src/autograd/tape.js';
import { ShapeError } from '../src/errors.js';
import type { CausalLM, DecodeState } from '../src/models/lm.js';
import { Embedding, Linear, normal } from '../src/nn/layers.js';
import { Module } from '../src/nn/module.js';
import { add, matmul } from '../src/ops/math.js';
import { concat, reshape, slice, transpose } from '../src/ops/shape.js';
import type { DType } from '../src/tensor/dtype.js';
import { Rng } from '../src/tensor/random.js';
import { keep, tidy } from '../src/tensor/scope.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { createModel } from '../src/models/registry.js';
import { ref } from './helpers.js';

class RunningSumState implements DecodeState {
  constructor(
    /** [B, D]: the sum of the embeddings of every token consumed. */
    public sum: Tensor,
    public positions: number[],
  ) {
    keep(sum);
  }

  get batch(): number {
    return this.positions.length;
  }

  bytes(): number {
    return this.sum.storage.byteLength;
  }

  select(rows: readonly number[]): void {
    const picked = noGrad(() =>
      tidy(() =>
        concat(
          rows.map((r) => slice(this.sum, 0, r, r + 1)),
          0,
        ),
      ),
    );
    this.sum.dispose();
    this.sum = keep(picked);
    this.positions = rows.map((r) => this.positions[r]!);
  }

  append(other: DecodeState): void {
    if (!(other instanceof RunningSumState)) throw new ShapeError('append: not a ToyLM state');
    const joined = keep(noGrad(() => tidy(() => concat([this.sum, other.sum], 0))));
    this.sum.dispose();
    this.sum = joined;
    this.positions = [...this.positions, ...other.positions];
    other.dispose();
  }

  dispose(): void {
    this.sum.dispose();
  }
}

export class ToyLM extends Module implements CausalLM {
  /** The interface knows two architectures; this model is neither, and nothing here depends on the label. */
  readonly arch = 'transformer' as const;
  readonly embed: Embedding;
  readonly meanHead: Linear;
  readonly lastHead: Linear;

  constructor(
    readonly vocabSize: number,
    readonly dim: number,
    readonly backend: Device,
    readonly dtype: DType = 'float64',
    seed = 0,
  ) {
    super();
    const rng = new Rng(seed);
    const opts = { backend, dtype };
    this.embed = this.child('embed', new Embedding(normal([vocabSize, dim], rng, 1, opts)));
    this.meanHead = this.child('mean_head', new Linear(normal([vocabSize, dim], rng, 1, opts)));
    this.lastHead = this.child('last_head', new Linear(normal([vocabSize, dim], rng, 1, opts)));
  }

  /** h: [..., D] running means, x: [..., D] last embeddings -> logits [..., V]. */
  private head(h: Tensor, x: Tensor): Tensor {
    return add(this.meanHead.forward(h), this.lastHead.forward(x));
  }

  forward(ids: Tensor): Tensor {
    const T = ids.shape[1]!;
    const avg = new Float64Array(T * T); // avg[t, s] = 1/(t+1) for s <= t
    for (let t = 0; t < T; t++) for (let s = 0; s <= t; s++) avg[t * T + s] = 1 / (t + 1);
    const A = this.backend.fromData(avg, [T, T], this.dtype);
    const x = this.embed.forward(ids); // [B, T, D]
    const h = transpose(matmul(transpose(x, 1, 2), A, { transB: true }), 1, 2); // [B, T, D]
    return this.head(h, x); // [B, T, V]
  }

  prefill(prompts: readonly (readonly number[])[]): { logits: Tensor; state: DecodeState } {
    return noGrad(() =>
      tidy(() => {
        const sums: Tensor[] = [];
        const last: Tensor[] = [];
        for (const [i, p] of prompts.entries()) {
          if (p.length === 0) throw new ShapeError(`prefill: prompt ${i} is empty`);
          const ids = this.backend.fromData(p, [1, p.length], 'int32');
          const logits = this.forward(ids); // [1, T, V]
          last.push(reshape(slice(logits, 1, p.length - 1, p.length), [1, this.vocabSize]));
          const x = reshape(this.embed.forward(ids), [p.length, this.dim]);
          sums.push(matmul(this.backend.fromData(new Array(p.length).fill(1), [1, p.length], this.dtype), x));
        }
        const state = new RunningSumState(
          concat(sums, 0),
          prompts.map((p) => p.length),
        );
        return { logits: concat(last, 0), state };
      }),
    );
  }

  step(tokens: readonly number[], state: DecodeState): Tensor {
    if (!(state instanceof RunningSumState)) throw new ShapeError('ToyLM.step: not a ToyLM state');
    const B = tokens.length;
    const logits = noGrad(() =>
      tidy(() => {
        const x = this.embed.forward(this.backend.fromData(tokens, [B], 'int32')); // [B, D]
        const sum = keep(add(state.sum, x));
        state.sum.dispose();
        state.sum = sum;
        const inv = new Float64Array(B * B); // diag(1 / count)
        state.positions.forEach((p, r) => (inv[r * B + r] = 1 / (p + 1)));
        const h = matmul(this.backend.fromData(inv, [B, B], this.dtype), sum);
        return this.head(h, x);
      }),
    );
    state.positions = state.positions.map((p) => p + 1);
    return logits;
  }
}

/** Without `append`: a server decodes each admission as a batch of its own. */
class ScriptState implements DecodeState {
  constructor(
    public positions: number[],
    /** Prompt length of each row: the script restarts after every prompt. */
    public starts: number[],
  ) {}

  get batch(): number {
    return this.positions.length;
  }

  bytes(): number {
    return 0;
  }

  select(rows: readonly number[]): void {
    this.positions = rows.map((r) => this.positions[r]!);
    this.starts = rows.map((r) => this.starts[r]!);
  }

  dispose(): void {}
}

/**
 * A model that, after any prompt, generates the tokens of `script` in order (and repeats them): its logits are 0 on
 * the scripted token and -10000 elsewhere, so any sampling settings pick it. For tests of the text path (UTF-8, stop
 * strings, HTTP) with a known output.
 */
export class ScriptedLM extends Module implements CausalLM {
  readonly arch = 'transformer' as const;

  constructor(
    readonly vocabSize: number,
    readonly script: readonly number[],
    readonly backend: Device,
  ) {
    super();
  }

  private logits(indices: readonly number[]): Tensor {
    const V = this.vocabSize;
    const data = new Float32Array(indices.length * V).fill(-10000);
    indices.forEach((i, r) => (data[r * V + this.script[i % this.script.length]!] = 0));
    return this.backend.fromData(data, [indices.length, V], 'float32');
  }

  forward(): Tensor {
    throw new Error('ScriptedLM has no full-sequence form; it is only decoded');
  }

  prefill(prompts: readonly (readonly number[])[]): { logits: Tensor; state: DecodeState } {
    const lengths = prompts.map((p) => p.length);
    return { logits: this.logits(prompts.map(() => 0)), state: new ScriptState([...lengths], lengths) };
  }

  step(tokens: readonly number[], state: DecodeState): Tensor {
    if (!(state instanceof ScriptState) || tokens.length !== state.batch)
      throw new ShapeError('ScriptedLM.step: state and tokens do not match');
    state.positions = state.positions.map((p) => p + 1);
    return this.logits(state.positions.map((p, r) => p - state.starts[r]!));
  }
}

/**
 * A ToyLM whose prefill can continue a state (`opts.state`: each row's prompt follows what it consumed), as the
 * scheduler's piecewise prefill expects: the running sum just keeps growing.
 */
export class ContinuingToyLM extends ToyLM {
  readonly continuesPrefill = true;

  override prefill(
    prompts: readonly (readonly number[])[],
    opts: { state?: DecodeState } = {},
  ): { logits: Tensor; state: DecodeState } {
    const given = opts.state;
    if (!given) return super.prefill(prompts);
    if (!(given instanceof RunningSumState) || given.batch !== prompts.length)
      throw new ShapeError('ContinuingToyLM.prefill: state and prompts do not match');
    // Feed each piece token by token through step(): the same sums, whatever the split.
    let logits: Tensor | null = null;
    const longest = Math.max(...prompts.map((p) => p.length));
    if (prompts.some((p) => p.length !== longest))
      throw new ShapeError('ContinuingToyLM.prefill: continued pieces must have one length');
    for (let j = 0; j < longest; j++) {
      logits?.dispose();
      logits = this.step(
        prompts.map((p) => p[j]!),
        given,
      );
    }
    return { logits: logits!, state: given };
  }
}

/** The small float64 RetNet and Transformer the server tests serve, on the byte tokenizer's vocabulary (259). */
export function tinyServingModel(arch: 'retnet' | 'transformer'): CausalLM {
  const dims = arch === 'retnet' ? { embedDim: 16, valueDim: 32, ffnDim: 32 } : { embedDim: 16, ffnDim: 32 };
  return createModel(
    arch,
    'tiny',
    { vocabSize: 259, ...dims, heads: 2, layers: 2 },
    { backend: ref, dtype: 'float64', seed: 2 },
  );
}
