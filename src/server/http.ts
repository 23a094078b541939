// The edges of HTTP that come before any route: the JSON body parser (strict UTF-8, bounded nesting), the request
// line and header checks, and fastify's own errors mapped to OpenAI-shaped ones. Every refusal is a 4xx that says
// what was wrong; nothing here lets a stack trace reach a client.

import type { FastifyError, FastifyInstance } from 'fastify';

import { ApiError } from './openai.js';

/** Deepest nesting of arrays and objects a JSON body may have (a chat request needs about five levels). */
export const MAX_JSON_DEPTH = 64;
/** Most header fields in one request (a browser sends about twenty; Node's own limit of 2000 truncates silently). */
export const MAX_HEADERS = 100;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The nesting depth of a JSON text, scanning at most to the first level deeper than `limit` (strings are skipped, so
 * brackets inside them do not count). Linear in the text, no recursion: a 200,000-level body cannot overflow a stack.
 */
export function jsonDepth(text: string, limit = Infinity): number {
  let depth = 0;
  let deepest = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      for (i++; i < text.length && text.charCodeAt(i) !== 0x22; i++) if (text.charCodeAt(i) === 0x5c /* \ */) i++;
    } else if (c === 0x5b /* [ */ || c === 0x7b /* { */) {
      if (++depth > deepest && (deepest = depth) > limit) return deepest;
    } else if (c === 0x5d /* ] */ || c === 0x7d /* } */) depth--;
  }
  return deepest;
}

/** Parses a request body as JSON: UTF-8 (invalid bytes are an error, not U+FFFD), nesting at most MAX_JSON_DEPTH. */
export function parseJsonBody(bytes: Buffer): unknown {
  if (bytes.length === 0) throw new ApiError(400, 'the request body is empty; expected a JSON object');
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    const at = firstInvalidUtf8(bytes);
    throw new ApiError(400, `the request body is not valid UTF-8 (invalid byte sequence at byte ${at})`);
  }
  if (jsonDepth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH)
    throw new ApiError(400, `the request body nests arrays and objects deeper than ${MAX_JSON_DEPTH} levels`);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(400, `the request body is not valid JSON: ${(e as Error).message}`);
  }
}

/** Offset of the first byte that does not begin a valid UTF-8 sequence (TextDecoder says only that one exists). */
function firstInvalidUtf8(bytes: Buffer): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i]!;
    const n = b < 0x80 ? 1 : b >= 0xc2 && b < 0xe0 ? 2 : b >= 0xe0 && b < 0xf0 ? 3 : b >= 0xf0 && b < 0xf5 ? 4 : 0;
    if (n === 0 || i + n > bytes.length) return i;
    try {
      utf8.decode(bytes.subarray(i, i + n));
    } catch {
      return i;
    }
    i += n;
  }
  return i;
}

/**
 * Installs the body parser, the request checks (HTTP/1.x only, at most MAX_HEADERS headers) and the error handlers.
 * An internal error is logged as one line at the error level; its stack only at the debug level.
 */
export function guardHttp(app: FastifyInstance, maxBodyBytes: number): void {
  // Bodies are JSON only, parsed here so that a syntax error can say where it is. (JSON.parse makes "__proto__" an
  // own property, so no prototype is touched.)
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, bytes, done) => {
    try {
      done(null, parseJsonBody(bytes as Buffer));
    } catch (e) {
      done(e as ApiError);
    }
  });
  app.addHook('onRequest', async (request) => {
    // Node's parser takes a request line without a version ("GET /health") as HTTP/0.9; it has no headers, so no
    // Host and no Authorization, and is no protocol a client of this server speaks.
    if (request.raw.httpVersionMajor !== 1)
      throw new ApiError(505, `HTTP/${request.raw.httpVersion} is not supported; send HTTP/1.0 or HTTP/1.1`);
    if (request.raw.rawHeaders.length / 2 > MAX_HEADERS)
      throw new ApiError(431, `the request has more than ${MAX_HEADERS} header fields`);
  });
  app.setErrorHandler((err: FastifyError, request, reply) => {
    const api = apiErrorOf(err, maxBodyBytes);
    if (api.status >= 500 && !(err instanceof ApiError)) {
      request.log.error({ code: err.code, error: err.message }, 'internal error');
      request.log.debug({ stack: err.stack }, 'internal error: stack');
    }
    if (api.status === 505 || api.status === 431) void reply.header('connection', 'close');
    void reply.code(api.status).send(api.toJSON());
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send(new ApiError(404, `no route ${request.method} ${request.url}`).toJSON());
  });
}

/** Maps fastify's own request errors (body parsing, limits) to OpenAI-shaped ones with a clear message. */
function apiErrorOf(err: FastifyError, maxBodyBytes: number): ApiError {
  if (err instanceof ApiError) return err;
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError(413, `the request body is larger than the limit of ${maxBodyBytes} bytes`);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError(415, 'unsupported Content-Type; send the body as application/json');
  }
  const status = err.statusCode ?? 500;
  if (status >= 400 && status < 500) return new ApiError(status, err.message);
  return new ApiError(500, 'internal server error');
}
