// The OpenAI completions API as this server speaks it: validating a request body into generation requests, the
// response and stream-chunk objects, and errors in OpenAI's shape ({"error": {message, type, param, code}}).

import type { SamplingOptions } from '../generate/sampler.js';
import { encodePrompt, type FinishReason } from '../generate/sequence.js';
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
  /** Most tokens in one prompt. */
  maxPromptTokens: number;
  /** Largest accepted max_tokens. */
  maxTokens: number;
  /** Most prompts in one request (prompt as an array). */
  maxPrompts: number;
}

export interface CompletionRequest {
  /** Token ids of each prompt (one choice per prompt). */
  prompts: number[][];
  maxTokens: number;
  sampling: SamplingOptions;
  stop: string[];
  ignoreEos: boolean;
  stream: boolean;
  /** stream_options.include_usage: a last chunk with the token counts. */
  includeUsage: boolean;
}

const MAX_STOP_STRINGS = 4;
const DEFAULT_MAX_TOKENS = 16;

/** Fields accepted only at their neutral value (the features are not implemented). */
const NEUTRAL: Record<string, (v: unknown) => boolean> = {
  n: (v) => v === 1,
  best_of: (v) => v === 1,
  echo: (v) => v === false,
  logprobs: (v) => v === 0,
  suffix: (v) => v === '',
  presence_penalty: (v) => v === 0,
  frequency_penalty: (v) => v === 0,
  logit_bias: (v) => typeof v === 'object' && v !== null && Object.keys(v).length === 0,
};

const FIELDS = new Set([
  'model',
  'prompt',
  'max_tokens',
  'temperature',
  'top_p',
  'top_k',
  'repetition_penalty',
  'seed',
  'stop',
  'stream',
  'stream_options',
  'ignore_eos',
  'user',
  ...Object.keys(NEUTRAL),
]);

function bad(param: string, message: string): ApiError {
  return new ApiError(400, `'${param}': ${message}`, param);
}

const show = (v: unknown) => JSON.stringify(v) ?? String(v);

function number(body: Record<string, unknown>, key: string, lo: number, hi: number, integer: boolean): number | null {
  const v = body[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < lo || v > hi)
    throw bad(key, `expected ${integer ? 'an integer' : 'a number'} in [${lo}, ${hi}], got ${show(v)}`);
  return v;
}

function boolean(body: Record<string, unknown>, key: string): boolean {
  const v = body[key];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw bad(key, `expected true or false, got ${show(v)}`);
  return v;
}

/** Validates a /v1/completions body. Errors say which field is wrong and why (400), or name the unknown model (404). */
export function parseCompletionRequest(
  body: unknown,
  modelId: string,
  tokenizer: Tokenizer,
  limits: CompletionLimits,
): CompletionRequest {
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    throw new ApiError(
      400,
      `the request body must be a JSON object, got ${Array.isArray(body) ? 'an array' : show(body)}`,
    );
  const b = body as Record<string, unknown>;
  for (const key of Object.keys(b)) if (!FIELDS.has(key)) throw bad(key, 'unknown field');
  for (const [key, neutral] of Object.entries(NEUTRAL))
    if (b[key] !== undefined && b[key] !== null && !neutral(b[key]))
      throw bad(key, `not supported by this server (only ${key === 'logit_bias' ? '{}' : 'its default'} is accepted)`);

  if (b.model !== undefined && b.model !== null) {
    if (typeof b.model !== 'string') throw bad('model', `expected a string, got ${show(b.model)}`);
    if (b.model !== modelId)
      throw new ApiError(
        404,
        `the model '${b.model}' does not exist; this server serves '${modelId}'`,
        'model',
        'model_not_found',
      );
  }

  const p = b.prompt;
  if (p === undefined || p === null) throw bad('prompt', 'required (a string or an array of strings)');
  const texts = typeof p === 'string' ? [p] : p;
  if (!Array.isArray(texts) || texts.length === 0 || texts.some((t) => typeof t !== 'string'))
    throw bad('prompt', 'expected a string or a non-empty array of strings');
  if (texts.length > limits.maxPrompts)
    throw bad('prompt', `${texts.length} prompts in one request, more than the limit of ${limits.maxPrompts}`);
  const prompts = (texts as string[]).map((text, i) => {
    const ids = encodePrompt(text, tokenizer);
    if (ids.length > limits.maxPromptTokens)
      throw new ApiError(
        400,
        `'prompt'${texts.length > 1 ? `[${i}]` : ''}: ${ids.length} tokens, more than the limit of ${limits.maxPromptTokens}`,
        'prompt',
        'context_length_exceeded',
      );
    return ids;
  });

  const maxTokens =
    number(b, 'max_tokens', 1, limits.maxTokens, true) ?? Math.min(DEFAULT_MAX_TOKENS, limits.maxTokens);
  const sampling: SamplingOptions = {
    temperature: number(b, 'temperature', 0, 2, false) ?? 1,
    topP: number(b, 'top_p', Number.MIN_VALUE, 1, false) ?? 1,
    topK: number(b, 'top_k', 0, Number.MAX_SAFE_INTEGER, true) ?? 0,
    repetitionPenalty: number(b, 'repetition_penalty', Number.MIN_VALUE, 100, false) ?? 1,
  };
  const seed = number(b, 'seed', 0, 2 ** 32 - 1, true);
  if (seed !== null) sampling.seed = seed;

  let stop: string[] = [];
  if (b.stop !== undefined && b.stop !== null) {
    stop = typeof b.stop === 'string' ? [b.stop] : (b.stop as string[]);
    if (!Array.isArray(stop) || stop.some((s) => typeof s !== 'string' || s === '') || stop.length > MAX_STOP_STRINGS)
      throw bad('stop', `expected a non-empty string or an array of at most ${MAX_STOP_STRINGS} non-empty strings`);
  }

  const stream = boolean(b, 'stream');
  let includeUsage = false;
  const so = b.stream_options;
  if (so !== undefined && so !== null) {
    if (!stream) throw bad('stream_options', 'only allowed with "stream": true');
    if (typeof so !== 'object' || Array.isArray(so) || Object.keys(so).some((k) => k !== 'include_usage'))
      throw bad('stream_options', 'expected an object with the one field include_usage');
    includeUsage = boolean(so as Record<string, unknown>, 'include_usage');
  }
  if (b.user !== undefined && b.user !== null && typeof b.user !== 'string')
    throw bad('user', `expected a string, got ${show(b.user)}`);

  return { prompts, maxTokens, sampling, stop, ignoreEos: boolean(b, 'ignore_eos'), stream, includeUsage };
}

export interface Choice {
  text: string;
  index: number;
  logprobs: null;
  finish_reason: 'stop' | 'length' | null;
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** A text_completion object (the whole response, or one stream chunk). */
export function completionObject(
  id: string,
  created: number,
  model: string,
  choices: Choice[],
  usage?: Usage,
): Record<string, unknown> {
  return { id, object: 'text_completion', created, model, choices, ...(usage ? { usage } : {}) };
}

/** OpenAI's finish_reason for ours (cancelled sequences never reach a client as a finished choice). */
export function finishReason(reason: FinishReason): 'stop' | 'length' {
  return reason === 'length' ? 'length' : 'stop';
}
