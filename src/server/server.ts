// The HTTP server (fastify): POST /v1/completions in the OpenAI format, streamed as server-sent events or answered
// whole, GET /v1/models and GET /health. Generation runs on a continuous-batching Scheduler in this process; it
// yields to the event loop between model calls, so requests keep being accepted and streamed while it works.

import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import type { ServerResponse } from 'node:http';

import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';

import { ConfigError } from '../errors.js';
import { QueueFullError, Scheduler, ShuttingDownError } from '../generate/scheduler.js';
import type { EndEvent, GenerationEvent } from '../generate/sequence.js';
import type { CausalLM } from '../models/lm.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { guardHttp } from './http.js';
import {
  ApiError,
  type Choice,
  type CompletionLimits,
  type CompletionRequest,
  completionObject,
  finishReason,
  parseCompletionRequest,
} from './openai.js';

export interface ServerOptions {
  /** Name clients use in "model"; /v1/models lists it. */
  modelId: string;
  /** Default 127.0.0.1: reachable from this machine only unless told otherwise. */
  host?: string;
  /** Default 8000; 0 picks a free port. */
  port?: number;
  /** When set, every route but /health requires "Authorization: Bearer <apiKey>" (unknown routes too). */
  apiKey?: string;
  /** Largest request body in bytes (default 1 MiB); larger ones get 413. */
  maxBodyBytes?: number;
  /** Default 2048. */
  maxPromptTokens?: number;
  /** Largest max_tokens (default 2048). */
  maxTokens?: number;
  /** Most prompts in one request (default 8). */
  maxPrompts?: number;
  /** Most sequences decoding at once (default 16). */
  maxActive?: number;
  /** Most sequences waiting to start (default 64); beyond, 429. */
  maxQueued?: number;
  /** pino level of the request log (default 'info': one line per request and response; 'silent' for none). */
  logLevel?: LogLevel;
  /** Where the log's JSON lines go (default stderr). */
  logStream?: { write(line: string): unknown };
}

export const LOG_LEVELS = ['silent', 'fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Served without the API key (every other route, present or future, requires it when one is set). */
    public?: boolean;
  }
}

/** A route the server answers, and whether it is served without the API key. */
export interface RouteInfo {
  method: string;
  url: string;
  public: boolean;
}

export interface RunningServer {
  /** http://host:port */
  url: string;
  /** Every route registered (HEAD routes included). */
  routes: readonly RouteInfo[];
  scheduler: Scheduler;
  /**
   * Stops accepting requests, lets generations in flight finish for up to graceMs, cancels the rest (their clients
   * get an error), and resolves once every connection is closed and all model state is freed.
   */
  close(graceMs?: number): Promise<void>;
}

/** How long close() waits for responses to reach their clients once generation has stopped. */
const FLUSH_WAIT_MS = 2000;

const sha256 = (s: string) => createHash('sha256').update(s).digest();

/** Constant-time check of an Authorization header against the key (hashes make the lengths equal). */
function authorized(header: string | undefined, apiKey: string): boolean {
  const match = /^Bearer (.+)$/.exec(header ?? '');
  return match !== null && timingSafeEqual(sha256(match[1]!), sha256(apiKey));
}

/** Interleaves several event streams, tagging each event with the stream's position. */
async function* merge(
  streams: AsyncIterable<GenerationEvent>[],
): AsyncGenerator<{ choice: number; event: GenerationEvent }> {
  const iterators = streams.map((s) => s[Symbol.asyncIterator]());
  const next = (choice: number) => iterators[choice]!.next().then((result) => ({ choice, result }));
  const pending = new Map(iterators.map((_, i) => [i, next(i)]));
  while (pending.size > 0) {
    const { choice, result } = await Promise.race(pending.values());
    if (result.done) pending.delete(choice);
    else {
      pending.set(choice, next(choice));
      yield { choice, event: result.value };
    }
  }
}

export async function startServer(model: CausalLM, tokenizer: Tokenizer, opts: ServerOptions): Promise<RunningServer> {
  const maxBodyBytes = opts.maxBodyBytes ?? 1 << 20;
  const limits: CompletionLimits = {
    maxPromptTokens: opts.maxPromptTokens ?? 2048,
    maxTokens: opts.maxTokens ?? 2048,
    maxPrompts: opts.maxPrompts ?? 8,
  };
  const scheduler = new Scheduler(model, tokenizer, {
    maxActive: opts.maxActive ?? 16,
    maxQueued: opts.maxQueued ?? 64,
  });
  const created = Math.floor(Date.now() / 1000);
  let closing = false;
  // Completion responses not yet closed; close() waits for them so that it finds their connections idle.
  let openResponses = 0;
  let allClosed: (() => void) | null = null;

  const app: FastifyInstance = Fastify({
    bodyLimit: maxBodyBytes,
    logger: { level: opts.logLevel ?? 'info', stream: opts.logStream ?? process.stderr },
    return503OnClosing: true,
  });

  guardHttp(app, maxBodyBytes);

  // Authorisation is decided on the routed request: find-my-way has already decoded the path, stripped an absolute-form
  // target and picked the route, so "/%76%31/completions" and "http://host/v1/completions" reach this check as the
  // completions route. Every route, the 404 handler included, needs the key unless it says `config: { public: true }`.
  const routes: RouteInfo[] = [];
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) routes.push({ method, url: route.url, public: route.config?.public === true });
  });
  app.addHook('onRequest', async (request) => {
    if (opts.apiKey === undefined || request.routeOptions.config.public === true) return;
    if (!authorized(request.headers.authorization, opts.apiKey))
      throw new ApiError(
        401,
        'missing or invalid API key (send "Authorization: Bearer <key>")',
        null,
        'invalid_api_key',
      );
  });

  app.get('/health', { config: { public: true } }, async () => ({
    status: closing ? 'shutting_down' : 'ok',
    model: opts.modelId,
    active: scheduler.activeCount,
    queued: scheduler.queuedCount,
  }));

  app.get('/v1/models', async () => ({
    object: 'list',
    data: [{ id: opts.modelId, object: 'model', created, owned_by: 'retnet' }],
  }));

  app.post('/v1/completions', async (request, reply) => {
    if (closing) throw new ApiError(503, 'the server is shutting down');
    const req = parseCompletionRequest(request.body, opts.modelId, tokenizer, limits);
    // A client that goes away cancels its generation: 'close' before the response finished means a disconnect.
    const disconnect = new AbortController();
    openResponses++;
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) disconnect.abort();
      if (--openResponses === 0) allClosed?.();
    });
    const streams = submit(req, disconnect);
    const id = `cmpl-${randomUUID()}`;
    const now = Math.floor(Date.now() / 1000);
    if (req.stream) {
      reply.hijack();
      await streamCompletion(reply.raw, streams, req, id, now, disconnect.signal, request.log);
      return;
    }
    const choices: Choice[] = req.prompts.map((_, index) => ({ text: '', index, logprobs: null, finish_reason: null }));
    const ends: EndEvent[] = [];
    for await (const { choice, event } of merge(streams)) {
      choices[choice]!.text += event.text;
      if (event.type === 'end') {
        choices[choice]!.finish_reason = finishReason(event.finishReason);
        ends.push(event);
      }
    }
    // Cancelled by a disconnect (then nobody reads this) or by shutdown.
    if (ends.some((e) => e.finishReason === 'abort'))
      throw new ApiError(503, 'the server is shutting down; the generation was cancelled');
    return completionObject(id, now, opts.modelId, choices, usageOf(ends));
  });

  /** Queues one sequence per prompt; a refused one cancels those already queued. */
  function submit(req: CompletionRequest, disconnect: AbortController): AsyncIterable<GenerationEvent>[] {
    try {
      return req.prompts.map((prompt, i) =>
        scheduler.submit(
          {
            prompt,
            maxNewTokens: req.maxTokens,
            sampling: req.sampling,
            stop: req.stop,
            ignoreEos: req.ignoreEos,
            signal: disconnect.signal,
          },
          `prompt[${i}]`,
        ),
      );
    } catch (e) {
      disconnect.abort();
      if (e instanceof QueueFullError) throw new ApiError(429, e.message, null, 'queue_full');
      if (e instanceof ShuttingDownError) throw new ApiError(503, e.message);
      if (e instanceof ConfigError) throw new ApiError(400, e.message);
      throw e;
    }
  }

  async function streamCompletion(
    res: ServerResponse,
    streams: AsyncIterable<GenerationEvent>[],
    req: CompletionRequest,
    id: string,
    now: number,
    disconnected: AbortSignal,
    log: FastifyBaseLogger,
  ): Promise<void> {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    const send = (data: unknown) => {
      if (!disconnected.aborted) res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
    };
    const chunk = (choice: Choice) => completionObject(id, now, opts.modelId, [choice]);
    const ends: EndEvent[] = [];
    try {
      for await (const { choice: index, event } of merge(streams)) {
        if (event.type === 'token') {
          if (event.text !== '') send(chunk({ text: event.text, index, logprobs: null, finish_reason: null }));
          continue;
        }
        ends.push(event);
        if (event.finishReason !== 'abort')
          send(chunk({ text: event.text, index, logprobs: null, finish_reason: finishReason(event.finishReason) }));
      }
      if (ends.some((e) => e.finishReason === 'abort'))
        send(new ApiError(503, 'the server is shutting down; the generation was cancelled').toJSON());
      else if (req.includeUsage) send(completionObject(id, now, opts.modelId, [], usageOf(ends)));
    } catch (e) {
      log.error({ error: (e as Error).message }, 'internal error during generation');
      log.debug({ stack: (e as Error).stack }, 'internal error during generation: stack');
      send(new ApiError(500, 'internal server error during generation').toJSON());
    }
    send('[DONE]');
    res.end();
  }

  const address = await app.listen({ host: opts.host ?? '127.0.0.1', port: opts.port ?? 8000 });
  return {
    url: address,
    routes,
    scheduler,
    async close(graceMs = 5000) {
      closing = true;
      await scheduler.shutdown(graceMs);
      // Every generation is over, so the responses are ending; once they have, their keep-alive connections are idle
      // and app.close() ends them. A client too slow to take its last bytes is cut off after a short wait.
      if (openResponses > 0) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          new Promise<void>((resolve) => (allClosed = resolve)),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, FLUSH_WAIT_MS))),
        ]);
        clearTimeout(timer);
        if (openResponses > 0) app.server.closeAllConnections();
      }
      await app.close();
    },
  };
}

function usageOf(ends: readonly EndEvent[]) {
  const prompt = ends.reduce((n, e) => n + e.promptTokens, 0);
  const completion = ends.reduce((n, e) => n + e.completionTokens, 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}
