// Reverse-mode autograd on a tape of coarse ops. Each op that has an input requiring a gradient appends one node:
// its inputs, outputs and a closure that maps output gradients to input gradients through the op's backward kernel.
// `backward(loss)` walks the tape in reverse, sums gradients per tensor, and leaves each leaf's total in `leaf.grad`.

import { RetnetError, ShapeError, formatShape } from '../errors.js';
import { keep, onScopeExit } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import { kernelsOf } from '../backend/kernels.js';

export type BackwardFn = (grads: (Tensor | null)[]) => (Tensor | null)[];

/** What a node keeps for its backward beyond the identity of its inputs and outputs. */
export interface SavedTensors {
  /** The tensors its backward reads (default: all inputs and outputs). Others may be freed once their owner is done. */
  saved?: Tensor[];
  /**
   * Recomputes the node's single output from the saved tensors and `recomputeFrom` (a cheap elementwise or norm
   * kernel, a view, or a product the caller chose to redo): such an output is freed as soon as its owner releases
   * it, and recomputed when a later node's backward needs it.
   */
  recompute?: () => Tensor;
  /** What `recompute` reads beyond `saved`: kept like it, but given its values only when the recompute runs. */
  recomputeFrom?: Tensor[];
}

interface TapeNode {
  op: string;
  inputs: Tensor[];
  outputs: Tensor[];
  backward: BackwardFn;
  /** What the backward reads (given its values before it runs). */
  saved: Tensor[];
  /** saved and what the recompute reads: what this node keeps from being freed for good. */
  kept: Tensor[];
  recompute: (() => Tensor) | null;
}

let tape: TapeNode[] = [];
let gradDepthDisabled = 0;
/** The node that produced each recomputable output (its recompute reads what that node keeps). */
const producers = new WeakMap<Tensor, TapeNode>();

/** True while ops record on the tape (not inside `noGrad`). */
export function gradEnabled(): boolean {
  return gradDepthDisabled === 0;
}

/** Runs fn without recording: for inference and for the optimizer's own arithmetic. */
export function noGrad<T>(fn: () => T): T {
  gradDepthDisabled++;
  try {
    return fn();
  } finally {
    gradDepthDisabled--;
  }
}

/** Whether an op with these inputs must record a node. */
export function needsGrad(...inputs: (Tensor | null | undefined)[]): boolean {
  if (gradDepthDisabled > 0) return false;
  for (const t of inputs) if (t?.requiresGrad) return true;
  return false;
}

/**
 * Appends a node; marks the outputs as requiring gradients. Call only when `needsGrad(...)` is true. `keep.saved`
 * lists what the backward reads (default: every input and output), so that the rest can be freed early; see
 * `release`.
 */
export function record(
  op: string,
  inputs: Tensor[],
  outputs: Tensor[],
  backward: BackwardFn,
  keep: SavedTensors = {},
): void {
  for (const o of outputs) {
    o.requiresGrad = true;
    o.fromOp = true;
  }
  const saved = [...new Set(keep.saved ?? [...inputs, ...outputs])];
  const kept = [...new Set([...saved, ...(keep.recomputeFrom ?? [])])];
  for (const t of kept) t.tapeRefs++;
  const node: TapeNode = { op, inputs, outputs, backward, saved, kept, recompute: keep.recompute ?? null };
  if (node.recompute) {
    if (outputs.length !== 1) throw new RetnetError(`record: ${op} recomputes one output, it has ${outputs.length}`);
    producers.set(outputs[0]!, node);
  }
  tape.push(node);
}

/** Whether t's producer can recompute it (SavedTensors.recompute) while its backward has yet to run. */
export function recomputable(t: Tensor): boolean {
  return producers.has(t);
}

/** Frees t if its owner released it and no node keeps it for a backward that has yet to run. */
function freeIfUnneeded(t: Tensor): void {
  if (t.released && t.tapeRefs === 0) t.drop();
}

/** A node is done (its backward ran, or it left the tape): what it kept may go. */
function retire(node: TapeNode): void {
  for (const t of node.kept) {
    t.tapeRefs--;
    freeIfUnneeded(t);
  }
  for (const o of node.outputs) producers.delete(o);
}

/**
 * Frees intermediates their owner (model code) is done with. Outside the graph (no gradient) a tensor is disposed at
 * once. A graph member keeps its place in the graph (its identity routes gradients) but loses its storage: at once
 * when no recorded node reads it in its backward or it can be recomputed (SavedTensors.recompute), else when the last
 * node that reads it has run its backward. So a training step holds only what its backward needs.
 */
export function release(...ts: Tensor[]): void {
  for (const t of ts) {
    if (!t.requiresGrad) {
      if (t.tapeRefs === 0) t.dispose();
      else t.released = true;
      continue;
    }
    if (!t.fromOp || t.disposed) continue; // a leaf (parameter) belongs to its module
    t.released = true;
    if (t.tapeRefs === 0 || producers.has(t)) t.drop();
  }
}

/** Gives a dropped tensor its values back by rerunning its producer's recompute (after what that reads). */
function materialize(t: Tensor): void {
  if (!t.dropped) return;
  const node = producers.get(t);
  if (!node)
    throw new RetnetError(`backward: a tensor of shape ${formatShape(t.shape)} was freed and cannot be recomputed`);
  for (const s of node.kept) materialize(s);
  t.refill(noGrad(node.recompute!));
}

/** Number of nodes on the tape (for tests and diagnostics). */
export function tapeLength(): number {
  return tape.length;
}

/** The nodes on the tape, oldest first (diagnostics: bench trainmem attributes live memory to the ops). */
export function tapeNodes(): readonly { op: string; inputs: readonly Tensor[]; outputs: readonly Tensor[] }[] {
  return tape;
}

/** Drops every node: a forward pass that will not be differentiated leaves nothing behind. */
export function clearTape(): void {
  const nodes = tape;
  tape = [];
  nodes.forEach(retire);
}

// Nodes whose outputs a scope disposed (not merely dropped by the tape) can never take part in a backward pass.
onScopeExit(() => {
  if (tape.length === 0) return;
  const dead = (n: TapeNode) => n.outputs.some((o) => o.disposed && !o.dropped);
  const gone = tape.filter(dead);
  if (gone.length === 0) return;
  tape = tape.filter((n) => !dead(n));
  gone.forEach(retire);
});

/**
 * Backpropagates from `loss` (a tensor of size 1, unless `seed` gives its gradient) through the tape, then clears it.
 * Leaf tensors with `requiresGrad` receive `grad` (added to an existing one). Intermediate gradients are disposed.
 * A node's backward returns fresh tensors (a pass-through gradient is returned as a view), one per input.
 */
export function backward(loss: Tensor, seed?: Tensor): void {
  if (!loss.requiresGrad) throw new RetnetError('backward: the loss does not depend on any tensor that requires grad');
  if (seed === undefined && loss.size !== 1)
    throw new ShapeError(`backward: loss of shape ${formatShape(loss.shape)} is not a scalar; pass its gradient`);
  if (seed !== undefined && !sameShape(seed.shape, loss.shape))
    throw new ShapeError(`backward: seed ${formatShape(seed.shape)} does not match loss ${formatShape(loss.shape)}`);
  const release = (g: Tensor) => {
    if (g !== seed) g.dispose();
  };
  const grads = new Map<Tensor, Tensor>();
  const add = (t: Tensor, g: Tensor) => {
    if (!sameShape(g.shape, t.shape))
      throw new ShapeError(`backward: gradient ${formatShape(g.shape)} does not match tensor ${formatShape(t.shape)}`);
    const prev = grads.get(t);
    if (prev === undefined) grads.set(t, g);
    else {
      grads.set(t, kernelsOf(t).binary('add', prev, g));
      release(prev);
      release(g);
    }
  };
  add(loss, seed ?? loss.device.fromData([1], loss.shape, loss.dtype));
  const nodes = tape;
  tape = [];
  for (let i = nodes.length - 1; i >= 0; i--) {
    const node = nodes[i]!;
    const outGrads = node.outputs.map((o) => grads.get(o) ?? null);
    if (outGrads.every((g) => g === null)) {
      retire(node);
      continue;
    }
    for (const t of node.saved) materialize(t);
    const inGrads = node.backward(outGrads);
    retire(node);
    for (const o of node.outputs) {
      const g = grads.get(o);
      if (g) release(g);
      grads.delete(o);
    }
    node.inputs.forEach((input, k) => {
      const g = inGrads[k];
      if (!g) return;
      if (input.requiresGrad) add(input, g);
      else release(g);
    });
  }
  for (const [t, g] of grads) {
    if (t.fromOp) {
      release(g);
      continue;
    }
    keep(g);
    if (t.grad === null) t.grad = g;
    else {
      const sum = keep(kernelsOf(t).binary('add', t.grad, g));
      t.grad.dispose();
      release(g);
      t.grad = sum;
    }
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
