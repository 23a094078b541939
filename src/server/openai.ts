// The OpenAI API as this server speaks it: validating /v1/completions and /v1/chat/completions bodies into generation
// requests, the response and stream-chunk objects (with logprobs in the legacy completions shape and in the chat
// shape), and errors in OpenAI's shape ({"error": {message, type, param, code}}). Unknown fields are ignored and
// reported back to the caller (or, strict, refused).

import type { SamplingOptions, TokenLogprob } from '../generate/sampler.js';
import { encodePrompt, type EndEvent, type FinishReason, MAX_TOP_LOGPROBS } from '../generate/sequence.js';
import type { Tokenizer } from '../tokenizer/tokenizer.js';

/** An error answered as JSON in OpenAI's error shape with an HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  get type(): string {
    if (this.status === 401) return 'authentication_error';
    if (this.status === 429) return 'rate_limit_error';
    return this.status >= 500 ? 'server_error' : 'invalid_request_error';
  }

  toJSON(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export interface CompletionLimits {
  /** Most tokens in one prompt (a chat's rendered prompt included). */
  maxPromptTokens: number;
  /** Largest accepted max_tokens. */
  maxTokens: number;
  /** Most prompts in one request (prompt as an array). */
  maxPrompts: number;
  /** Largest n (samples per prompt). */
  maxN: number;
  /** Refuse unknown fields (400) instead of ignoring them. */
  strict: boolean;
}

/** One prompt of a request: its token ids and, for echo, its text. */
export interface Prompt {
  ids: number[];
  text: string;
}

/** What a completions or chat request asks the scheduler for, however it was phrased. */
export interface GenerationJob {
  /** One choice per prompt and sample: choice index = prompt index · n + sample. */
  prompts: Prompt[];
  n: number;
  maxTokens: number;
  sampling: SamplingOptions;
  stop: string[];
  ignoreEos: boolean;
  stream: boolean;
  /** stream_options.include_usage: a last chunk with the token counts. */
  includeUsage: boolean;
  /** Alternatives per generated token when logprobs were asked for (0 = the chosen token's alone); else undefined. */
  logprobs: number | undefined;
  /** completions' echo: the prompt's text (and, with logprobs, its tokens' logprobs) come before the completion. */
  echo: boolean;
  /** Fields of the body this server does not know (ignored unless strict). */
  ignored: string[];
}

const MAX_STOP_STRINGS = 4;
const DEFAULT_MAX_TOKENS = 16;
/** The legacy completions API caps logprobs at 5; the chat API's top_logprobs at 20. We allow 20 for both. */
const MAX_LOGPROBS = MAX_TOP_LOGPROBS;

const SAMPLING_FIELDS = [
  'model',
  'max_tokens',
  'temperature',
  'top_p',
  'top_k',
  'min_p',
  'repetition_penalty',
  'presence_penalty',
  'frequency_penalty',
  'logit_bias',
  'seed',
  'stop',
  'stream',
  'stream_options',
  'ignore_eos',
  'user',
  'n',
];
const COMPLETION_FIELDS = new Set([...SAMPLING_FIELDS, 'prompt', 'echo', 'logprobs', 'best_of', 'suffix']);
const CHAT_FIELDS = new Set([...SAMPLING_FIELDS, 'messages', 'max_completion_tokens', 'logprobs', 'top_logprobs']);

function bad(param: string, message: string): ApiError {
  return new ApiError(400, `'${param}': ${message}`, param);
}

const show = (v: unknown) => JSON.stringify(v) ?? String(v);
const given = (v: unknown) => v !== undefined && v !== null;

function number(body: Record<string, unknown>, key: string, lo: number, hi: number, integer: boolean): number | null {
  const v = body[key];
  if (!given(v)) return null;
  if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < lo || v > hi)
    throw bad(key, `expected ${integer ? 'an integer' : 'a number'} in [${lo}, ${hi}], got ${show(v)}`);
  return v;
}

function boolean(body: Record<string, unknown>, key: string): boolean {
  const v = body[key];
  if (!given(v)) return false;
  if (typeof v !== 'boolean') throw bad(key, `expected true or false, got ${show(v)}`);
  return v;
}

function object(body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    throw new ApiError(
      400,
      `the request body must be a JSON object, got ${Array.isArray(body) ? 'an array' : show(body)}`,
    );
  return body as Record<string, unknown>;
}

/** The body's fields outside `known`: refused when strict, else returned to be reported. */
function unknownFields(b: Record<string, unknown>, known: ReadonlySet<string>, strict: boolean): string[] {
  const unknown = Object.keys(b).filter((key) => !known.has(key));
  if (strict && unknown.length > 0) throw bad(unknown[0]!, 'unknown field (the server runs with --strict)');
  return unknown;
}

/** Checks "model" against the served id (404 when it names another). */
export function checkModel(b: Record<string, unknown>, modelId: string): void {
  if (!given(b.model)) return;
  if (typeof b.model !== 'string') throw bad('model', `expected a string, got ${show(b.model)}`);
  if (b.model !== modelId)
    throw new ApiError(
      404,
      `the model '${b.model}' does not exist; this server serves '${modelId}'`,
      'model',
      'model_not_found',
    );
}

/** The fields completions and chat share: limits, sampling, stop strings, streaming, n. */
function common(
  b: Record<string, unknown>,
  limits: CompletionLimits,
  vocabSize: number,
  maxTokensKey: string,
  minTokens: number,
) {
  const maxTokens =
    number(b, maxTokensKey, minTokens, limits.maxTokens, true) ?? Math.min(DEFAULT_MAX_TOKENS, limits.maxTokens);
  const sampling: SamplingOptions = {
    temperature: number(b, 'temperature', 0, 2, false) ?? 1,
    topP: number(b, 'top_p', Number.MIN_VALUE, 1, false) ?? 1,
    topK: number(b, 'top_k', 0, Number.MAX_SAFE_INTEGER, true) ?? 0,
    minP: number(b, 'min_p', 0, 1, false) ?? 0,
    repetitionPenalty: number(b, 'repetition_penalty', Number.MIN_VALUE, 100, false) ?? 1,
    presencePenalty: number(b, 'presence_penalty', -2, 2, false) ?? 0,
    frequencyPenalty: number(b, 'frequency_penalty', -2, 2, false) ?? 0,
  };
  const seed = number(b, 'seed', 0, 2 ** 32 - 1, true);
  if (seed !== null) sampling.seed = seed;
  if (given(b.logit_bias)) {
    const lb = b.logit_bias;
    if (typeof lb !== 'object' || Array.isArray(lb))
      throw bad('logit_bias', `expected an object of token id -> bias, got ${show(lb)}`);
    const bias = new Map<number, number>();
    for (const [key, value] of Object.entries(lb as Record<string, unknown>)) {
      const token = /^(0|[1-9]\d*)$/.test(key) ? Number(key) : NaN;
      if (!(token < vocabSize))
        throw bad('logit_bias', `key ${show(key)} is not a token id of the vocabulary [0, ${vocabSize})`);
      if (typeof value !== 'number' || !Number.isFinite(value) || value < -100 || value > 100)
        throw bad('logit_bias', `the bias of token ${key} must be a number in [-100, 100], got ${show(value)}`);
      bias.set(token, value);
    }
    sampling.logitBias = bias;
  }

  let stop: string[] = [];
  if (given(b.stop)) {
    stop = typeof b.stop === 'string' ? [b.stop] : (b.stop as string[]);
    if (!Array.isArray(stop) || stop.some((s) => typeof s !== 'string' || s === '') || stop.length > MAX_STOP_STRINGS)
      throw bad('stop', `expected a non-empty string or an array of at most ${MAX_STOP_STRINGS} non-empty strings`);
  }

  const stream = boolean(b, 'stream');
  let includeUsage = false;
  const so = b.stream_options;
  if (given(so)) {
    if (!stream) throw bad('stream_options', 'only allowed with "stream": true');
    if (typeof so !== 'object' || Array.isArray(so))
      throw bad('stream_options', `expected an object such as {"include_usage": true}, got ${show(so)}`);
    includeUsage = boolean(so as Record<string, unknown>, 'include_usage');
  }
  if (given(b.user) && typeof b.user !== 'string') throw bad('user', `expected a string, got ${show(b.user)}`);
  const n = number(b, 'n', 1, limits.maxN, true) ?? 1;
  return { maxTokens, sampling, stop, stream, includeUsage, n, ignoreEos: boolean(b, 'ignore_eos') };
}

function encodeChecked(ids: number[], limits: CompletionLimits, where: string): number[] {
  if (ids.length > limits.maxPromptTokens)
    throw new ApiError(
      400,
      `'${where}': ${ids.length} tokens, more than the limit of ${limits.maxPromptTokens}`,
      where.replace(/\[.*$/, ''),
      'context_length_exceeded',
    );
  return ids;
}

/** The prompts of "prompt": a string, an array of strings, an array of token ids, or an array of such arrays. */
function prompts(p: unknown, tokenizer: Tokenizer, vocabSize: number, limits: CompletionLimits): Prompt[] {
  if (!given(p)) throw bad('prompt', 'required (a string, an array of strings, or token ids)');
  const isIds = (x: unknown): x is number[] =>
    Array.isArray(x) && x.length > 0 && x.every((t) => typeof t === 'number');
  let list: (string | number[])[];
  if (typeof p === 'string' || isIds(p)) list = [p];
  else if (Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === 'string' || isIds(x))) list = p;
  else
    throw bad(
      'prompt',
      'expected a string, a non-empty array of strings, an array of token ids, or a non-empty array of such arrays',
    );
  if (list.length > limits.maxPrompts)
    throw bad('prompt', `${list.length} prompts in one request, more than the limit of ${limits.maxPrompts}`);
  return list.map((x, i) => {
    const where = list.length > 1 ? `prompt[${i}]` : 'prompt';
    if (typeof x === 'string') return { ids: encodeChecked(encodePrompt(x, tokenizer), limits, where), text: x };
    const badAt = x.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= vocabSize);
    if (badAt >= 0)
      throw bad(
        'prompt',
        `${where}[${badAt}] = ${show(x[badAt])} is not a token id of the vocabulary [0, ${vocabSize})`,
      );
    return { ids: encodeChecked([...x], limits, where), text: tokenizer.decode(x) };
  });
}

/** Validates a /v1/completions body. Errors say which field is wrong and why (400), or name the unknown model (404). */
export function parseCompletionRequest(
  body: unknown,
  modelId: string,
  tokenizer: Tokenizer,
  vocabSize: number,
  limits: CompletionLimits,
): GenerationJob {
  const b = object(body);
  const ignored = unknownFields(b, COMPLETION_FIELDS, limits.strict);
  checkModel(b, modelId);
  const echo = boolean(b, 'echo');
  // max_tokens 0 only makes sense with echo (lm-eval-harness scores a prompt's tokens that way).
  const c = common(b, limits, vocabSize, 'max_tokens', echo ? 0 : 1);
  if (given(b.best_of) && b.best_of !== c.n)
    throw bad('best_of', `only best_of = n is supported (n = ${c.n}), got ${show(b.best_of)}`);
  if (given(b.suffix) && b.suffix !== '') throw bad('suffix', 'not supported (only "" is accepted)');
  const lp = number(b, 'logprobs', 0, MAX_LOGPROBS, true);
  return {
    ...c,
    prompts: prompts(b.prompt, tokenizer, vocabSize, limits),
    logprobs: lp ?? undefined,
    echo,
    ignored,
  };
}

/** A chat message as the template sees it: role and text content. */
export interface ChatMessage {
  role: string;
  content: string;
}

const ROLES = new Set(['system', 'developer', 'user', 'assistant', 'tool']);

function messages(m: unknown): ChatMessage[] {
  if (!Array.isArray(m) || m.length === 0) throw bad('messages', 'required: a non-empty array of {role, content}');
  return m.map((msg, i) => {
    const where = `messages[${i}]`;
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg))
      throw bad('messages', `${where} must be an object {role, content}, got ${show(msg)}`);
    const { role, content } = msg as Record<string, unknown>;
    if (typeof role !== 'string' || !ROLES.has(role))
      throw bad('messages', `${where}.role must be one of ${[...ROLES].join(', ')}, got ${show(role)}`);
    // Content: a string, or an array of parts of which only text parts are understood.
    if (typeof content === 'string') return { role, content };
    if (!given(content) && role === 'assistant') return { role, content: '' };
    if (Array.isArray(content)) {
      const texts = content.map((part, j) => {
        const p = part as Record<string, unknown> | null;
        if (p?.type !== 'text' || typeof p.text !== 'string')
          throw bad('messages', `${where}.content[${j}] must be {"type": "text", "text": string}, got ${show(part)}`);
        return p.text;
      });
      return { role, content: texts.join('') };
    }
    throw bad('messages', `${where}.content must be a string or an array of text parts, got ${show(content)}`);
  });
}

/**
 * Validates a /v1/chat/completions body; `render` turns the messages into the prompt text (the chat template).
 * max_completion_tokens (the current name) wins over max_tokens (the older one).
 */
export function parseChatRequest(
  body: unknown,
  modelId: string,
  tokenizer: Tokenizer,
  vocabSize: number,
  limits: CompletionLimits,
  render: (messages: ChatMessage[]) => string,
): GenerationJob {
  const b = object(body);
  const ignored = unknownFields(b, CHAT_FIELDS, limits.strict);
  checkModel(b, modelId);
  const c = common(b, limits, vocabSize, given(b.max_completion_tokens) ? 'max_completion_tokens' : 'max_tokens', 1);
  const logprobs = boolean(b, 'logprobs');
  const top = number(b, 'top_logprobs', 0, MAX_LOGPROBS, true);
  if (top !== null && !logprobs) throw bad('top_logprobs', 'only allowed with "logprobs": true');
  const text = render(messages(b.messages));
  // The template writes the special tokens it wants (bos_token ...): encoding adds none of its own.
  const ids = text === '' ? encodePrompt(text, tokenizer) : tokenizer.encode(text, { special: false });
  const prompt = { ids: encodeChecked(ids, limits, 'messages'), text };
  return { ...c, prompts: [prompt], logprobs: logprobs ? (top ?? 0) : undefined, echo: false, ignored };
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function usageOf(ends: readonly EndEvent[]): Usage {
  const prompt = ends.reduce((n, e) => n + e.promptTokens, 0);
  const completion = ends.reduce((n, e) => n + e.completionTokens, 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

/** OpenAI's finish_reason for ours (cancelled sequences never reach a client as a finished choice). */
export function finishReason(reason: FinishReason): 'stop' | 'length' {
  return reason === 'length' ? 'length' : 'stop';
}

/** The text of one token as logprobs show it (a token inside a multi-byte character shows as U+FFFD). */
export type TokenText = (token: number) => string;

/** completions' logprobs of some tokens: parallel lists, text offsets counted from `offset`. */
export interface LegacyLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

/**
 * The legacy completions logprobs of a run of tokens (null entries: the first prompt token, which has no
 * prediction). Offsets are the running sum of the token texts' lengths from `offset`; returns the offset after them.
 */
export function legacyLogprobs(
  entries: readonly { token: number; logprob: TokenLogprob | null }[],
  text: TokenText,
  offset: number,
): { logprobs: LegacyLogprobs; offset: number } {
  const out: LegacyLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
  for (const { token, logprob } of entries) {
    const t = text(token);
    out.tokens.push(t);
    out.token_logprobs.push(logprob?.logprob ?? null);
    if (logprob === null) out.top_logprobs.push(null);
    else {
      // Keyed by text: two tokens with the same text keep the likelier's logprob (the list is most likely first).
      const top: Record<string, number> = {};
      for (const alt of logprob.top) top[text(alt.token)] ??= alt.logprob;
      out.top_logprobs.push(top);
    }
    out.text_offset.push(offset);
    offset += t.length;
  }
  return { logprobs: out, offset };
}

/** Appends the second run of legacy logprobs to the first. */
export function joinLegacy(a: LegacyLogprobs, b: LegacyLogprobs): LegacyLogprobs {
  return {
    tokens: [...a.tokens, ...b.tokens],
    token_logprobs: [...a.token_logprobs, ...b.token_logprobs],
    top_logprobs: [...a.top_logprobs, ...b.top_logprobs],
    text_offset: [...a.text_offset, ...b.text_offset],
  };
}

/** One entry of chat logprobs.content: the token's text, its UTF-8 bytes, its logprob and the top alternatives. */
export function chatLogprob(logprob: TokenLogprob, text: TokenText) {
  const entry = (token: number, lp: number) => {
    const t = text(token);
    return { token: t, logprob: lp, bytes: Array.from(Buffer.from(t, 'utf8')) };
  };
  return {
    ...entry(logprob.token, logprob.logprob),
    top_logprobs: logprob.top.map((alt) => entry(alt.token, alt.logprob)),
  };
}
