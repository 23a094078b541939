// A test-only CausalLM, so the trainer is tested without RetNet: each position predicts the next token from an
// embedding of the current one through an MLP with an RMSNorm and dropout,
//   logits = head(gelu(fc(dropout(norm(embed(ids)))))).
// It has biases and a norm gain (not decayed), matrices (decayed), and a dropout RNG whose state a checkpoint must
// carry for an exact resume. Incremental decoding is not needed by the trainer and is not implemented.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

import type { Device } from '../src/backend/device.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { type TensorToSave, writeSafetensors } from '../src/io/safetensors.js';
import type { CausalLM, DecodeState } from '../src/models/lm.js';
import { Module } from '../src/nn/module.js';
import { Embedding, Linear, RMSNorm, linearDefault, normal } from '../src/nn/layers.js';
import { dropout, gelu } from '../src/ops/nn.js';
import { Rng } from '../src/tensor/random.js';
import type { Tensor } from '../src/tensor/tensor.js';

export class TinyLM extends Module implements CausalLM {
  readonly arch = 'retnet' as const;
  readonly embed: Embedding;
  readonly norm: RMSNorm;
  readonly fc: Linear;
  readonly head: Linear;
  private readonly rng: Rng;

  constructor(
    readonly vocabSize: number,
    readonly dim: number,
    readonly dropoutRate: number,
    seed: number,
    readonly backend: Device,
  ) {
    super();
    const opts = { backend, dtype: 'float32' as const };
    const init = new Rng(seed);
    this.rng = new Rng(seed + 1);
    this.embed = this.child('embed', new Embedding(normal([vocabSize, dim], init, 0.5, opts)));
    this.norm = this.child('norm', new RMSNorm(dim, 1e-6, opts));
    const bias = (n: number) => normal([n], init, 0.01, opts);
    this.fc = this.child('fc', new Linear(linearDefault([dim, dim], init, opts), bias(dim)));
    this.head = this.child('head', new Linear(linearDefault([vocabSize, dim], init, opts), bias(vocabSize)));
  }

  forward(ids: Tensor): Tensor {
    let x = this.norm.forward(this.embed.forward(ids));
    if (this.training && this.dropoutRate > 0) x = dropout(x, this.dropoutRate, this.rng);
    return this.head.forward(gelu(this.fc.forward(x)));
  }

  rngState(): number[] {
    return this.rng.getState();
  }

  setRngState(state: readonly number[]): void {
    this.rng.setState(state);
  }

  prefill(): { logits: Tensor; state: DecodeState } {
    throw new Error('TinyLM: decoding is not implemented (test model)');
  }

  step(): Tensor {
    throw new Error('TinyLM: decoding is not implemented (test model)');
  }

  /** A model directory of this test model: model.safetensors and a small config.json. */
  writeDir(dir: string): void {
    writeParameters(this, dir);
    writeFileAtomic(
      join(dir, 'config.json'),
      JSON.stringify({ arch: 'tiny-test', vocabSize: this.vocabSize, dim: this.dim }),
    );
  }
}

/** model.safetensors of any module's parameters (for trainer tests of models the registry cannot save). */
export function writeParameters(model: Module, dir: string): void {
  mkdirSync(dir, { recursive: true });
  const tensors = new Map<string, TensorToSave>();
  for (const [name, t] of model.namedParameters()) tensors.set(name, { dtype: 'F32', shape: t.shape, data: t.data() });
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
}
