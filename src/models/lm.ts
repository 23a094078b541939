// The interface every language model of the project implements (RetNet and the Transformer baseline), so that the
// trainer, generation, server and benchmarks work on either.

import type { Device } from '../backend/device.js';
import type { Module } from '../nn/module.js';
import type { Tensor } from '../tensor/tensor.js';

/** Incremental decoding state for a batch of sequences (RetNet: recurrent states; Transformer: KV cache). */
export interface DecodeState {
  readonly batch: number;
  /** Tokens consumed so far by each row (the next token's position). */
  readonly positions: readonly number[];
  /** Tensor bytes held by the state (engine accounting units). */
  bytes(): number;
  /** Keeps only the given rows, in that order (rows that finished generating are dropped). In place. */
  select(rows: readonly number[]): void;
  /**
   * Optional: appends the rows of another state of the same model after this one's, and disposes it. Lets a server
   * add newly prefilled requests to the batch already decoding (continuous batching).
   */
  append?(other: DecodeState): void;
  dispose(): void;
}

export interface CausalLM extends Module {
  readonly arch: 'retnet' | 'transformer';
  readonly vocabSize: number;
  /** Where its weights live (and token-id tensors for forward are made). */
  readonly backend: Device;
  /** ids int32 [B, T] -> logits [B, T, V]. Differentiable. */
  forward(ids: Tensor): Tensor;
  /**
   * Consumes one prompt per row (lengths may differ, each at least 1) and returns the logits after each prompt's last
   * token [B, V] plus the state to continue from. Not differentiable.
   */
  prefill(prompts: readonly (readonly number[])[]): { logits: Tensor; state: DecodeState };
  /** Feeds one token per row and returns the next-token logits [B, V]; advances the state in place. */
  step(tokens: readonly number[], state: DecodeState): Tensor;
}
