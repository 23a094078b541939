// Continuous batching for a server: requests arrive at any time and each gets its own event stream. Each round does
// one piece of prefill work, then steps the running batch once, so a decode step never waits longer than one piece:
//  - a long prompt is prefilled in pieces of at most `prefillChunk` tokens, each continuing the state of the last
//    (one prefill call when the model's prefill can continue a state, else the piece's tokens fed through step()), and
//  - prompts admitted together, while they fit in one piece, are prefilled together in one call (one GEMM over all
//    their tokens beats several small ones); the n samples of a request share their prompt's prefill.
// A prefilled prompt joins the batch already decoding when the model's state can append rows (DecodeState.append;
// else it decodes as a batch of its own). Between model calls the loop yields to the event loop, so HTTP keeps being
// served while generation runs.

import { setImmediate as nextMacrotask } from 'node:timers/promises';

import { ConfigError, RetnetError } from '../errors.js';
import type { CausalLM, DecodeState } from '../models/lm.js';
import type { Tensor } from '../tensor/tensor.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { DecodeBatch, scorePrompts } from './batch.js';
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
  /** Most prompt tokens in one prefill call (default 512): the longest a decode step waits for prefill work. */
  prefillChunk?: number;
  /** Called after each model call with its kind and duration (for metrics). */
  onModelCall?: (kind: 'prefill' | 'score' | 'step', ms: number, rows: number) => void;
}

/** Default SchedulerOptions.prefillChunk. */
export const PREFILL_CHUNK = 512;

/**
 * How many times a prompt token costs more fed through step() than through a prefill: the piece of a model whose
 * prefill cannot continue a state is prefillChunk / this many tokens, so that it takes about as long. Measured on the
 * tiny RetNet (2 cores, loaded): step() at batch 1 8.2 ms/token, prefill of 512 or 8192 tokens 0.66-0.77 ms/token.
 */
export const STEP_PREFILL_COST = 12;

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

/** The n sequences of one request (they share its prompt) and their streams. */
interface Entry {
  sequences: Sequence[];
  streams: EventStream[];
}

/** A prompt being prefilled for its sequences: `done` tokens consumed so far, the state after them. */
interface PrefillJob {
  sequences: Sequence[];
  done: number;
  state: DecodeState | null;
  /** Whether its prompt logprobs (if asked for) have been computed. */
  scored: boolean;
}

/**
 * A model whose prefill can continue a state (`opts.state`: each row's prompt follows what the row consumed, the state
 * is advanced in place and returned), and says so with `continuesPrefill`.
 */
interface ContinuingPrefill {
  readonly continuesPrefill: true;
  prefill(
    prompts: readonly (readonly number[])[],
    opts: { state?: DecodeState },
  ): { logits: Tensor; state: DecodeState };
}

function continuesPrefill(model: CausalLM): model is CausalLM & ContinuingPrefill {
  return (model as Partial<ContinuingPrefill>).continuesPrefill === true;
}

/**
 * The next piece of one row's prompt after `state`: one prefill call when the model continues a state, else one
 * step() per token (the recurrent form / the KV cache consume a token exactly as a prefill would, only slower, so a
 * piece still bounds the wait of the decode steps between pieces). Returns the logits after the piece's last token.
 */
function continuePrefill(
  model: CausalLM,
  piece: readonly number[],
  state: DecodeState,
): { logits: Tensor; state: DecodeState } {
  if (continuesPrefill(model)) return model.prefill([piece], { state });
  let logits: Tensor | null = null;
  for (const token of piece) {
    logits?.dispose();
    logits = model.step([token], state);
  }
  return { logits: logits!, state };
}

export class Scheduler {
  private readonly queue: Entry[] = [];
  private prefilling: PrefillJob[] = [];
  private batches: DecodeBatch[] = [];
  /** Streams of the admitted, unfinished sequences, by sequence index. */
  private readonly running = new Map<number, EventStream>();
  private nextIndex = 0;
  private loop: Promise<void> | null = null;
  private closing = false;
  /** Aborted at shutdown once the grace period is over: cancels every running sequence. */
  private readonly shutdownAbort = new AbortController();
  private readonly prefillChunk: number;
  private readonly vocabLimit: number;

  constructor(
    private readonly model: CausalLM,
    private readonly tokenizer: Tokenizer,
    private readonly opts: SchedulerOptions,
  ) {
    this.prefillChunk = opts.prefillChunk ?? PREFILL_CHUNK;
    if (!Number.isInteger(this.prefillChunk) || this.prefillChunk < 1)
      throw new ConfigError(`Scheduler: prefillChunk must be an integer >= 1, got ${String(opts.prefillChunk)}`);
    this.vocabLimit = Math.min(model.vocabSize, tokenizer.vocabSize);
  }

  /** Sequences admitted and not finished (prefilling or decoding). */
  get activeCount(): number {
    return this.running.size;
  }

  /** Requests waiting for admission. */
  get queuedCount(): number {
    return this.queue.length;
  }

  /**
   * Queues a request and returns its event stream. Throws ConfigError for an invalid request, QueueFullError when
   * the queue is full and ShuttingDownError after shutdown() began. Aborting request.signal cancels it, queued or not.
   */
  submit(request: GenerationRequest, where = 'request'): AsyncIterable<GenerationEvent> {
    return this.submitSamples(request, 1, where)[0]!;
  }

  /**
   * Queues n independent samples of one request (one prefill of its prompt, then n rows); returns their streams.
   * A seeded request's sample j has the seed seed + j (mod 2^32), so the samples differ and each is reproducible.
   */
  submitSamples(request: GenerationRequest, n: number, where = 'request'): AsyncIterable<GenerationEvent>[] {
    if (this.closing) throw new ShuttingDownError('the server is shutting down');
    if (!Number.isInteger(n) || n < 1) throw new ConfigError(`${where}: n must be an integer >= 1, got ${String(n)}`);
    const signal = eitherSignal(request.signal, this.shutdownAbort.signal);
    const seed = request.sampling?.seed;
    const sequences = Array.from(
      { length: n },
      (_, j) =>
        new Sequence(
          this.nextIndex + j,
          {
            ...request,
            signal,
            sampling: { ...request.sampling, ...(seed === undefined ? {} : { seed: (seed + j) % 2 ** 32 }) },
          },
          this.tokenizer,
          this.model.vocabSize,
          where,
        ),
    );
    if (this.queue.length >= this.opts.maxQueued)
      throw new QueueFullError(`${this.queue.length} requests are already waiting; try again later`);
    this.nextIndex += n;
    const entry: Entry = { sequences, streams: sequences.map(() => new EventStream()) };
    this.queue.push(entry);
    // A request cancelled while it waits leaves the queue at once rather than at admission.
    request.signal?.addEventListener('abort', () => this.dequeue(entry), { once: true });
    this.loop ??= this.run().finally(() => (this.loop = null));
    return entry.streams;
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
    if (at < 0) return; // already admitted: the prefill or the batch drops it at its next piece or step
    this.queue.splice(at, 1);
    entry.sequences.forEach((s, j) => entry.streams[j]!.push(s.abort()));
  }

  private dispatch(events: GenerationEvent[]): void {
    for (const e of events) {
      this.running.get(e.index)?.push(e);
      if (e.type === 'end') this.running.delete(e.index);
    }
  }

  /** Runs a model call, reporting its duration. */
  private async timed<T>(kind: 'prefill' | 'score' | 'step', rows: number, call: () => T | Promise<T>): Promise<T> {
    const start = performance.now();
    const result = await call();
    this.opts.onModelCall?.(kind, performance.now() - start, rows);
    return result;
  }

  private async run(): Promise<void> {
    // Start on a later turn: submit() returns at once, and requests of the same turn are admitted together.
    await nextMacrotask();
    try {
      while (this.queue.length > 0 || this.prefilling.length > 0 || this.batches.length > 0) {
        this.admit();
        if (this.prefilling.length > 0) {
          this.dispatch(await this.prefillWork());
          await nextMacrotask();
        }
        for (const batch of this.batches) {
          if (batch.size === 0) continue;
          this.dispatch(await this.timed('step', batch.size, () => batch.step()));
          await nextMacrotask();
        }
        for (const b of this.batches) if (b.size === 0) b.dispose();
        this.batches = this.batches.filter((b) => b.size > 0);
      }
    } catch (e) {
      // A failing model call: every stream gets the error and all state is freed, so later requests start clean.
      for (const b of this.batches) b.dispose();
      this.batches = [];
      for (const job of this.prefilling) job.state?.dispose();
      this.prefilling = [];
      for (const stream of this.running.values()) stream.fail(e);
      this.running.clear();
      for (const { streams } of this.queue.splice(0)) for (const stream of streams) stream.fail(e);
    }
  }

  /** Moves waiting requests into prefill while their samples fit in maxActive (one at least, when idle). */
  private admit(): void {
    while (this.queue.length > 0) {
      const { sequences, streams } = this.queue[0]!;
      if (this.running.size > 0 && this.running.size + sequences.length > this.opts.maxActive) return;
      this.queue.shift();
      sequences.forEach((s, j) => this.running.set(s.index, streams[j]!));
      const scoring = sequences.some((s) => s.promptLogprobs !== undefined || s.promptOnly);
      this.prefilling.push({ sequences, done: 0, state: null, scored: !scoring });
    }
  }

  /**
   * One piece of prefill work, at most one model call: the prompt logprobs of the first job that asks for them, or
   * the next piece of the first job's prompt, or (fresh short prompts) several whole prompts in one call. Jobs whose
   * prefill completes start decoding.
   */
  private async prefillWork(): Promise<GenerationEvent[]> {
    const events: GenerationEvent[] = [];
    for (const job of this.prefilling) for (const s of job.sequences) if (s.signal?.aborted) events.push(s.abort());
    this.keepJobs((job) => job.sequences.some((s) => !s.finished));
    const first = this.prefilling[0];
    if (!first) return events;
    if (!first.scored) {
      first.scored = true;
      const rows = first.sequences.filter((s) => s.promptLogprobs !== undefined).length;
      events.push(
        ...(await this.timed('score', rows, () => scorePrompts(this.model, this.vocabLimit, first.sequences))),
      );
      this.keepJobs((job) => job.sequences.some((s) => !s.finished));
      return events;
    }
    const chunk = this.prefillChunk;
    const ids = (job: PrefillJob) => job.sequences[0]!.promptIds;
    let jobs: PrefillJob[];
    if (first.done > 0 || ids(first).length > chunk) jobs = [first];
    else {
      // Fresh prompts in arrival order while their tokens fit in one piece (and are ready: scored if need be).
      jobs = [];
      let total = 0;
      for (const job of this.prefilling) {
        const n = ids(job).length;
        if (job.done > 0 || !job.scored || total + n > chunk) break;
        jobs.push(job);
        total += n;
      }
    }
    // A piece that continues a state without a continuing prefill goes through step(): fewer tokens, same time.
    const continued = first.done > 0 && !continuesPrefill(this.model);
    const size = continued ? Math.max(1, Math.floor(chunk / STEP_PREFILL_COST)) : chunk;
    const pieces = jobs.map((job) => ids(job).slice(job.done, job.done + size));
    const state = jobs[0]!.state;
    const { logits, state: after } = await this.timed('prefill', jobs.length, () =>
      state ? continuePrefill(this.model, pieces[0]!, state) : this.model.prefill(pieces),
    );
    first.state = null; // advanced in place into `after`
    jobs.forEach((job, i) => (job.done += pieces[i]!.length));
    if (first.done < ids(first).length) {
      // A long prompt, part way: keep its state for the next piece.
      logits.dispose();
      first.state = after;
      return events;
    }
    this.keepJobs((job) => !jobs.includes(job));
    const sequences = jobs.flatMap((job) => job.sequences.filter((s) => !s.finished));
    const rowOf = jobs.flatMap((job, row) => job.sequences.filter((s) => !s.finished).map(() => row));
    const batch = new DecodeBatch(this.model, this.tokenizer, sequences);
    events.push(...(await batch.begin(logits, after, rowOf)));
    if (batch.size > 0 && !this.batches.some((b) => b.size > 0 && b.absorb(batch))) this.batches.push(batch);
    return events;
  }

  /** Keeps the prefill jobs that pass; frees the state of the others. */
  private keepJobs(keep: (job: PrefillJob) => boolean): void {
    for (const job of this.prefilling) if (!keep(job)) job.state?.dispose();
    this.prefilling = this.prefilling.filter(keep);
  }
}
