// The HTTP server (fastify): OpenAI's POST /v1/completions and /v1/chat/completions, streamed as server-sent events
// or answered whole, GET /v1/models[/{id}], POST /tokenize and /detokenize, GET /metrics (Prometheus) and GET
// /health. Generation runs on a continuous-batching Scheduler in this process; it yields to the event loop between
// model calls, so requests keep being accepted and streamed while it works.

import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import type { ServerResponse } from 'node:http';

import type { FastifyBaseLogger, FastifyInstance, FastifyReply } from 'fastify';

import { ConfigError } from '../errors.js';
import type { TokenLogprob } from '../generate/sampler.js';
import { QueueFullError, Scheduler, ShuttingDownError } from '../generate/scheduler.js';
import type { EndEvent, GenerationEvent, PromptLogprobs } from '../generate/sequence.js';
import type { CausalLM } from '../models/lm.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';
import { chatRenderer, type TemplateTokens } from './chat.js';
import { guardHttp } from './http.js';
import { ServerMetrics } from './metrics.js';
import {
  ApiError,
  type CompletionLimits,
  type GenerationJob,
  type LegacyLogprobs,
  type Usage,
  chatLogprob,
  checkModel,
  finishReason,
  joinLegacy,
  legacyLogprobs,
  parseChatRequest,
  parseCompletionRequest,
} from './openai.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Served without the API key (every other route, present or future, requires it when one is set). */
    public?: boolean;
  }
}

export const LOG_LEVELS = ['silent', 'fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The response header that lists the request fields the server ignored. */
export const IGNORED_FIELDS_HEADER = 'x-retnet-ignored-fields';

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
  /** Most sequences decoding at once (default 16); also the largest n. */
  maxActive?: number;
  /** Most requests waiting to start (default 64); beyond, 429. */
  maxQueued?: number;
  /** Most prompt tokens in one prefill call (default PREFILL_CHUNK). */
  prefillChunk?: number;
  /** Refuse unknown request fields with 400 (default: ignore them, and say so in a header and the log). */
  strict?: boolean;
  /** Browser origins allowed by CORS ('*' for any); default none (no CORS headers, preflights refused). */
  corsOrigins?: readonly string[];
  /** The model's chat template (tokenizer_config.json's chat_template); default DEFAULT_CHAT_TEMPLATE. */
  chatTemplate?: string;
  /** bos_token / eos_token strings for the chat template. */
  templateTokens?: TemplateTokens;
  /** The ids that end a generation (default: the tokenizer's end-of-text; `loadForGeneration` gives a directory's). */
  eosIds?: readonly number[];
  /** pino level of the request log (default 'info': one line per request and response; 'silent' for none). */
  logLevel?: LogLevel;
  /** Where the log's JSON lines go (default stderr). */
  logStream?: { write(line: string): unknown };
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

/** Everything one choice produced, for a whole (non-streamed) response. */
interface ChoiceResult {
  text: string;
  tokens: { token: number; logprob: TokenLogprob | null }[];
  prompt: { token: number; logprob: TokenLogprob | null }[] | null;
  end: EndEvent | null;
}

type Kind = 'completion' | 'chat';

export async function startServer(model: CausalLM, tokenizer: Tokenizer, opts: ServerOptions): Promise<RunningServer> {
  const maxBodyBytes = opts.maxBodyBytes ?? 1 << 20;
  const maxActive = opts.maxActive ?? 16;
  const limits: CompletionLimits = {
    maxPromptTokens: opts.maxPromptTokens ?? 2048,
    maxTokens: opts.maxTokens ?? 2048,
    maxPrompts: opts.maxPrompts ?? 8,
    maxN: maxActive,
    strict: opts.strict ?? false,
  };
  const render = chatRenderer(opts.chatTemplate, opts.templateTokens);
  let metrics: ServerMetrics | null = null;
  const scheduler = new Scheduler(model, tokenizer, {
    maxActive,
    maxQueued: opts.maxQueued ?? 64,
    prefillChunk: opts.prefillChunk,
    onModelCall: (kind, ms) => metrics?.modelCall.observe({ kind }, ms / 1000),
  });
  metrics = new ServerMetrics(
    () => scheduler.queuedCount,
    () => scheduler.activeCount,
  );
  const vocabSize = Math.min(model.vocabSize, tokenizer.vocabSize);
  const tokenText = (token: number) => tokenizer.decode([token]);
  const created = Math.floor(Date.now() / 1000);
  let closing = false;
  // Generation responses not yet closed; close() waits for them so that it finds their connections idle.
  let openResponses = 0;
  let allClosed: (() => void) | null = null;

  // Loaded here: `import 'retnet'` does not load the HTTP server.
  const { default: Fastify } = await import('fastify');
  const app: FastifyInstance = Fastify({
    bodyLimit: maxBodyBytes,
    logger: { level: opts.logLevel ?? 'info', stream: opts.logStream ?? process.stderr },
    return503OnClosing: true,
  });

  guardHttp(app, maxBodyBytes);
  // CORS before the key check: a browser's preflight (OPTIONS) carries no Authorization, and @fastify/cors answers it
  // in its own onRequest hook. Without origins, no CORS headers are sent and a browser refuses the response.
  if (opts.corsOrigins && opts.corsOrigins.length > 0)
    await app.register((await import('@fastify/cors')).default, {
      origin: opts.corsOrigins.includes('*') ? '*' : [...opts.corsOrigins],
      methods: ['GET', 'POST', 'OPTIONS'],
      allowedHeaders: ['authorization', 'content-type'],
      exposedHeaders: [IGNORED_FIELDS_HEADER],
    });

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
  app.addHook('onResponse', async (request, reply) => {
    metrics.requests.inc({ route: request.routeOptions.url ?? 'unknown', status: String(reply.statusCode) });
  });

  app.get('/health', { config: { public: true } }, async () => ({
    status: closing ? 'shutting_down' : 'ok',
    model: opts.modelId,
    active: scheduler.activeCount,
    queued: scheduler.queuedCount,
  }));

  app.get('/metrics', async (_request, reply) => {
    void reply.header('content-type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });

  const modelObject = { id: opts.modelId, object: 'model', created, owned_by: 'retnet' };
  app.get('/v1/models', async () => ({ object: 'list', data: [modelObject] }));
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (request) => {
    checkModel({ model: request.params.id }, opts.modelId);
    return modelObject;
  });

  app.post('/tokenize', async (request) => {
    const b = (request.body ?? {}) as Record<string, unknown>;
    checkModel(b, opts.modelId);
    let tokens: number[];
    if (typeof b.prompt === 'string') tokens = tokenizer.encode(b.prompt);
    else if (Array.isArray(b.messages))
      // The ids a chat completion would prefill (the template's own special tokens, none added).
      tokens = [
        ...parseChatRequest(b, opts.modelId, tokenizer, vocabSize, { ...limits, strict: false }, render).prompts[0]!
          .ids,
      ];
    else throw new ApiError(400, "'prompt': required (a string), or 'messages' (a chat to render)", 'prompt');
    return { tokens, count: tokens.length, max_model_len: limits.maxPromptTokens };
  });

  app.post('/detokenize', async (request) => {
    const b = (request.body ?? {}) as Record<string, unknown>;
    checkModel(b, opts.modelId);
    const ids = b.tokens;
    if (!Array.isArray(ids) || ids.some((t) => !Number.isInteger(t) || t < 0 || t >= vocabSize))
      throw new ApiError(400, `'tokens': expected an array of token ids in [0, ${vocabSize})`, 'tokens');
    return { prompt: tokenizer.decode(ids as number[]) };
  });

  app.post('/v1/completions', async (request, reply) =>
    serve(
      'completion',
      parseCompletionRequest(request.body, opts.modelId, tokenizer, vocabSize, limits),
      request.log,
      reply,
    ),
  );

  app.post('/v1/chat/completions', async (request, reply) =>
    serve(
      'chat',
      parseChatRequest(request.body, opts.modelId, tokenizer, vocabSize, limits, render),
      request.log,
      reply,
    ),
  );

  /** Runs a parsed request: queues its choices, then streams them or answers with the whole response. */
  async function serve(kind: Kind, job: GenerationJob, log: FastifyBaseLogger, reply: FastifyReply) {
    if (closing) throw new ApiError(503, 'the server is shutting down');
    if (job.ignored.length > 0) {
      log.info({ ignored: job.ignored }, 'unknown request fields ignored');
      void reply.header(IGNORED_FIELDS_HEADER, job.ignored.join(', '));
    }
    // A client that goes away cancels its generation: 'close' before the response finished means a disconnect.
    const disconnect = new AbortController();
    openResponses++;
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) disconnect.abort();
      if (--openResponses === 0) allClosed?.();
    });
    const streams = submit(job, disconnect);
    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID()}`;
    const now = Math.floor(Date.now() / 1000);
    if (job.stream) {
      reply.hijack();
      await stream(kind, reply, streams, job, id, now, disconnect.signal, log);
      metrics?.requests.inc({ route: reply.request.routeOptions.url ?? 'unknown', status: '200' });
      return;
    }
    const results: ChoiceResult[] = streams.map(() => ({ text: '', tokens: [], prompt: null, end: null }));
    for await (const { choice, event } of merge(streams)) {
      const r = results[choice]!;
      if (event.promptLogprobs) r.prompt = promptEntries(job, choice, event.promptLogprobs);
      r.text += event.text;
      if (event.type === 'token') r.tokens.push({ token: event.token, logprob: event.logprob ?? null });
      else r.end = event;
    }
    const ends = results.map((r) => r.end!);
    // Cancelled by a disconnect (then nobody reads this) or by shutdown.
    if (ends.some((e) => e.finishReason === 'abort'))
      throw new ApiError(503, 'the server is shutting down; the generation was cancelled');
    const choices = results.map((r, index) =>
      kind === 'chat'
        ? {
            index,
            message: { role: 'assistant', content: r.text },
            logprobs:
              job.logprobs === undefined ? null : { content: r.tokens.map((t) => chatLogprob(t.logprob!, tokenText)) },
            finish_reason: finishReason(r.end!.finishReason),
          }
        : {
            text: (job.echo ? prompts(job, index).text : '') + r.text,
            index,
            logprobs: job.logprobs === undefined ? null : wholeLegacy(r),
            finish_reason: finishReason(r.end!.finishReason),
          },
    );
    return {
      id,
      object: kind === 'chat' ? 'chat.completion' : 'text_completion',
      created: now,
      model: opts.modelId,
      choices,
      usage: usage(job, ends),
    };
  }

  /** The prompt of a choice. */
  const prompts = (job: GenerationJob, choice: number) => job.prompts[Math.floor(choice / job.n)]!;
  /** A choice's prompt tokens with their logprobs. */
  const promptEntries = (job: GenerationJob, choice: number, logprobs: PromptLogprobs) =>
    prompts(job, choice).ids.map((token, j) => ({ token, logprob: logprobs[j]! }));

  /** A whole completion's legacy logprobs: the prompt's (echo) then the generated tokens'. */
  function wholeLegacy(r: ChoiceResult): LegacyLogprobs {
    const head = legacyLogprobs(r.prompt ?? [], tokenText, 0);
    return joinLegacy(head.logprobs, legacyLogprobs(r.tokens, tokenText, head.offset).logprobs);
  }

  /** Usage: each prompt counted once (however many samples share it), every generated token. */
  function usage(job: GenerationJob, ends: readonly EndEvent[]): Usage {
    const prompt = job.prompts.reduce((n, p) => n + p.ids.length, 0);
    const completion = ends.reduce((n, e) => n + e.completionTokens, 0);
    return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
  }

  /** Queues n samples of every prompt (choice i·n + j); a refused one cancels those already queued. */
  function submit(job: GenerationJob, disconnect: AbortController): AsyncIterable<GenerationEvent>[] {
    try {
      return job.prompts.flatMap((prompt, i) =>
        scheduler
          .submitSamples(
            {
              prompt: prompt.ids,
              maxNewTokens: job.maxTokens,
              sampling: job.sampling,
              stop: job.stop,
              ignoreEos: job.ignoreEos,
              eosIds: opts.eosIds,
              signal: disconnect.signal,
              logprobs: job.logprobs,
              promptLogprobs: job.echo ? job.logprobs : undefined,
            },
            job.n,
            `prompt[${i}]`,
          )
          .map(observed),
      );
    } catch (e) {
      disconnect.abort();
      if (e instanceof QueueFullError) throw new ApiError(429, e.message, null, 'queue_full');
      if (e instanceof ShuttingDownError) throw new ApiError(503, e.message);
      if (e instanceof ConfigError) throw new ApiError(400, e.message);
      throw e;
    }
  }

  /** A choice's events, counted into the metrics on the way (time to first token, tokens). */
  async function* observed(events: AsyncIterable<GenerationEvent>): AsyncGenerator<GenerationEvent> {
    const queued = performance.now();
    let first = true;
    for await (const e of events) {
      if (e.type === 'token') {
        if (first) metrics?.timeToFirstToken.observe((performance.now() - queued) / 1000);
        first = false;
        metrics?.generatedTokens.inc();
      } else if (e.type === 'end' && e.finishReason !== 'abort') metrics?.promptTokens.inc(e.promptTokens);
      yield e;
    }
  }

  async function stream(
    kind: Kind,
    reply: FastifyReply,
    streams: AsyncIterable<GenerationEvent>[],
    job: GenerationJob,
    id: string,
    now: number,
    disconnected: AbortSignal,
    log: FastifyBaseLogger,
  ): Promise<void> {
    const res: ServerResponse = reply.raw;
    // Headers set on the reply so far (CORS, ignored fields) go out with the hijacked response.
    res.writeHead(200, {
      ...(reply.getHeaders() as Record<string, string>),
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
    });
    const send = (data: unknown) => {
      if (!disconnected.aborted) res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
    };
    const object = kind === 'chat' ? 'chat.completion.chunk' : 'text_completion';
    const chunk = (choices: unknown[], extra: object = {}) =>
      send({ id, object, created: now, model: opts.modelId, choices, ...extra });
    const wantLogprobs = job.logprobs !== undefined;
    // Per choice: whether its opening (chat: the role; echo: the prompt) was sent, and the text offset (completions).
    const opened = streams.map(() => false);
    const offsets = streams.map(() => 0);
    const open = (index: number, promptEntries: { token: number; logprob: TokenLogprob | null }[] | null) => {
      opened[index] = true;
      if (kind === 'chat')
        chunk([{ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }]);
      else if (job.echo) {
        const text = prompts(job, index).text;
        let logprobs: LegacyLogprobs | null = null;
        if (promptEntries) ({ logprobs, offset: offsets[index] } = legacyLogprobs(promptEntries, tokenText, 0));
        else offsets[index] = text.length;
        chunk([{ text, index, logprobs, finish_reason: null }]);
      }
    };
    const ends: EndEvent[] = [];
    try {
      for await (const { choice: index, event } of merge(streams)) {
        if (!opened[index]) open(index, event.promptLogprobs ? promptEntries(job, index, event.promptLogprobs) : null);
        if (event.type === 'token') {
          if (event.text === '' && !wantLogprobs) continue;
          const entry = { token: event.token, logprob: event.logprob ?? null };
          if (kind === 'chat')
            chunk([
              {
                index,
                delta: { content: event.text },
                logprobs: wantLogprobs ? { content: [chatLogprob(event.logprob!, tokenText)] } : null,
                finish_reason: null,
              },
            ]);
          else {
            let logprobs: LegacyLogprobs | null = null;
            if (wantLogprobs)
              ({ logprobs, offset: offsets[index] } = legacyLogprobs([entry], tokenText, offsets[index]!));
            chunk([{ text: event.text, index, logprobs, finish_reason: null }]);
          }
          continue;
        }
        ends.push(event);
        if (event.finishReason === 'abort') continue;
        const reason = finishReason(event.finishReason);
        if (kind === 'chat')
          chunk([
            { index, delta: event.text === '' ? {} : { content: event.text }, logprobs: null, finish_reason: reason },
          ]);
        else chunk([{ text: event.text, index, logprobs: null, finish_reason: reason }]);
      }
      if (ends.some((e) => e.finishReason === 'abort'))
        send(new ApiError(503, 'the server is shutting down; the generation was cancelled').toJSON());
      else if (job.includeUsage) chunk([], { usage: usage(job, ends) });
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
