// Continuous batching for a server: requests arrive at any time and each gets its own event stream. At the start of
// every round the waiting requests that fit are prefilled, one model call each, and join the batch already decoding
// when the model's state can append rows (DecodeState.append; else each decodes as a batch of its own). Every round
// then steps each batch once, so every running sequence gets one token per round whatever its arrival time or length.
// Between model calls the loop yields to the event loop, so HTTP keeps being served while generation runs.

import { setImmediate as nextMacrotask } from 'node:timers/promises';

import { RetnetError } from '../errors.js';
import type { CausalLM } from '../models/lm.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { DecodeBatch } from './batch.js';
import { eitherSignal } from './generate.js';
import { type GenerationEvent, type GenerationRequest, Sequence } from './sequence.js';

/** The waiting queue is full; the client should retry later. */
export class QueueFullError extends RetnetError {}

/** The scheduler is shutting down and takes no new requests. */
export class ShuttingDownError extends RetnetError {}

export interface SchedulerOptions {
  /** Most sequences decoding at once (over all batches). */
  maxActive: number;
  /** Most requests waiting for admission; more are refused with QueueFullError. */
  maxQueued: number;
}

/** A single-consumer queue of events with an async iterator over it. */
class EventStream implements AsyncIterable<GenerationEvent> {
  private readonly items: GenerationEvent[] = [];
  private wake: (() => void) | null = null;
  private closed = false;
  private error: unknown = null;

  push(e: GenerationEvent): void {
    this.items.push(e);
    if (e.type === 'end') this.closed = true;
    this.wake?.();
  }

  fail(error: unknown): void {
    this.error = error;
    this.closed = true;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<GenerationEvent> {
    for (;;) {
      while (this.items.length > 0) yield this.items.shift()!;
      if (this.error !== null) throw this.error;
      if (this.closed) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = null;
    }
  }
}

interface Entry {
  sequence: Sequence;
  stream: EventStream;
}

export class Scheduler {
  private readonly queue: Entry[] = [];
  private batches: DecodeBatch[] = [];
  /** Streams of the admitted, unfinished sequences, by sequence index. */
  private readonly running = new Map<number, EventStream>();
  private nextIndex = 0;
  private loop: Promise<void> | null = null;
  private closing = false;
  /** Aborted at shutdown once the grace period is over: cancels every running sequence. */
  private readonly shutdownAbort = new AbortController();

  constructor(
    private readonly model: CausalLM,
    private readonly tokenizer: Tokenizer,
    private readonly opts: SchedulerOptions,
  ) {}

  get activeCount(): number {
    return this.running.size;
  }

  get queuedCount(): number {
    return this.queue.length;
  }

  /**
   * Queues a request and returns its event stream. Throws ConfigError for an invalid request, QueueFullError when
   * the queue is full and ShuttingDownError after shutdown() began. Aborting request.signal cancels it, queued or not.
   */
  submit(request: GenerationRequest, where = 'request'): AsyncIterable<GenerationEvent> {
    if (this.closing) throw new ShuttingDownError('the server is shutting down');
    const signal = eitherSignal(request.signal, this.shutdownAbort.signal);
    const sequence = new Sequence(
      this.nextIndex++,
      { ...request, signal },
      this.tokenizer,
      this.model.vocabSize,
      where,
    );
    if (this.queue.length >= this.opts.maxQueued)
      throw new QueueFullError(`${this.queue.length} requests are already waiting; try again later`);
    const entry: Entry = { sequence, stream: new EventStream() };
    this.queue.push(entry);
    // A request cancelled while it waits leaves the queue at once rather than at admission.
    request.signal?.addEventListener('abort', () => this.dequeue(entry), { once: true });
    this.loop ??= this.run().finally(() => (this.loop = null));
    return entry.stream;
  }

  /**
   * Stops taking requests, cancels the waiting ones, lets the running ones finish for up to graceMs, then cancels
   * them too. Resolves once no model call is in progress and all state is freed.
   */
  async shutdown(graceMs: number): Promise<void> {
    this.closing = true;
    for (const entry of [...this.queue]) this.dequeue(entry);
    if (this.loop) {
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)));
      await Promise.race([this.loop, grace]);
      clearTimeout(timer);
    }
    this.shutdownAbort.abort();
    await this.loop;
  }

  private dequeue(entry: Entry): void {
    const at = this.queue.indexOf(entry);
    if (at < 0) return; // already admitted: the batch drops it at its next step
    this.queue.splice(at, 1);
    entry.stream.push(entry.sequence.abort());
  }

  private dispatch(events: GenerationEvent[]): void {
    for (const e of events) {
      this.running.get(e.index)?.push(e);
      if (e.type === 'end') this.running.delete(e.index);
    }
  }

  private async run(): Promise<void> {
    // Start on a later turn: submit() returns at once, and requests of the same turn share one batch.
    await nextMacrotask();
    try {
      while (this.queue.length > 0 || this.batches.length > 0) {
        // Admit what fits, one prefill per request (a model call is the longest the loop holds the thread, so the
        // longest block is one prompt's prefill); each joins the batch already decoding when the state allows it.
        const room = this.opts.maxActive - this.running.size;
        for (const { sequence, stream } of this.queue.splice(0, Math.max(room, 0))) {
          this.running.set(sequence.index, stream);
          const batch = new DecodeBatch(this.model, this.tokenizer, [sequence]);
          this.dispatch(await batch.start());
          if (batch.size > 0 && !this.batches.some((b) => b.size > 0 && b.absorb(batch))) this.batches.push(batch);
          await nextMacrotask();
        }
        for (const batch of this.batches) {
          if (batch.size === 0) continue;
          this.dispatch(await batch.step());
          await nextMacrotask();
        }
        for (const b of this.batches) if (b.size === 0) b.dispose();
        this.batches = this.batches.filter((b) => b.size > 0);
      }
    } catch (e) {
      // A failing model call: every stream gets the error and all state is freed, so later requests start clean.
      for (const b of this.batches) b.dispose();
      this.batches = [];
      for (const stream of this.running.values()) stream.fail(e);
      this.running.clear();
      for (const { stream } of this.queue.splice(0)) stream.fail(e);
    }
  }
}
