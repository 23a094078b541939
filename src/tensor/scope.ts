// Deterministic lifetimes: `tidy(fn)` disposes every tensor created while fn runs, except the ones it returns (and
// those passed to `keep`). Large buffers are therefore freed at a known point, not when the garbage collector runs.

import type { Tensor } from './tensor.js';

const scopes: Set<Tensor>[] = [];
const exitListeners: (() => void)[] = [];

/** Called by the Tensor constructor. */
export function trackTensor(t: Tensor): void {
  if (scopes.length > 0) scopes[scopes.length - 1]!.add(t);
}

/** Lets a subsystem (the autograd tape) drop references to tensors a scope has just disposed. */
export function onScopeExit(listener: () => void): void {
  exitListeners.push(listener);
}

function collectTensors(value: unknown, into: Set<Tensor>, depth = 0): void {
  if (value === null || typeof value !== 'object' || depth > 4) return;
  if ((value as { isTensor?: boolean }).isTensor === true) {
    into.add(value as Tensor);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collectTensors(v, into, depth + 1);
    return;
  }
  if (Object.getPrototypeOf(value) === Object.prototype)
    for (const v of Object.values(value as Record<string, unknown>)) collectTensors(v, into, depth + 1);
}

/**
 * Runs fn and disposes the tensors it created, except those reachable from its result (a tensor, or arrays and plain
 * objects holding tensors). Kept tensors move to the enclosing scope. fn must be synchronous.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of scope) t.dispose();
    for (const l of exitListeners) l();
    throw e;
  }
  scopes.pop();
  const kept = new Set<Tensor>();
  collectTensors(result, kept);
  const parent = scopes.length > 0 ? scopes[scopes.length - 1]! : null;
  for (const t of scope) {
    if (kept.has(t)) parent?.add(t);
    else t.dispose();
  }
  for (const l of exitListeners) l();
  return result;
}

/** Removes a tensor from every open scope, so no `tidy` will dispose it; its owner must dispose it. */
export function keep<T extends Tensor>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}
