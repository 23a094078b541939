// Reverse-mode autograd on a tape of coarse ops. Each op that has an input requiring a gradient appends one node:
// its inputs, outputs and a closure that maps output gradients to input gradients through the op's backward kernel.
// `backward(loss)` walks the tape in reverse, sums gradients per tensor, and leaves each leaf's total in `leaf.grad`.

import { RetnetError, ShapeError, formatShape } from '../errors.js';
import { keep, onScopeExit } from '../tensor/scope.js';
import type { Tensor } from '../tensor/tensor.js';
import { kernelsOf } from '../backend/kernels.js';

export type BackwardFn = (grads: (Tensor | null)[]) => (Tensor | null)[];

interface TapeNode {
  op: string;
  inputs: Tensor[];
  outputs: Tensor[];
  backward: BackwardFn;
}

let tape: TapeNode[] = [];
let gradDepthDisabled = 0;

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

/** Appends a node; marks the outputs as requiring gradients. Call only when `needsGrad(...)` is true. */
export function record(op: string, inputs: Tensor[], outputs: Tensor[], backward: BackwardFn): void {
  for (const o of outputs) {
    o.requiresGrad = true;
    o.fromOp = true;
  }
  tape.push({ op, inputs, outputs, backward });
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
  tape = [];
}

// Nodes whose outputs a scope disposed can never take part in a backward pass.
onScopeExit(() => {
  if (tape.length > 0) tape = tape.filter((n) => !n.outputs.some((o) => o.disposed));
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
    if (outGrads.every((g) => g === null)) continue;
    const inGrads = node.backward(outGrads);
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
