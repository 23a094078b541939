// The HTTP server, tested over real HTTP against servers started on 127.0.0.1 with a free port: OpenAI completions
// (whole and streamed), validation errors, auth, limits, concurrent clients, disconnects and shutdown.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { generate } from '../src/generate/generate.js';
import { type RunningServer, type ServerOptions, startServer } from '../src/server/server.js';
import type { CausalLM } from '../src/models/lm.js';
import { ByteTokenizer } from '../src/tokenizer/tokenizer.js';
import { ref } from './helpers.js';
import { ScriptedLM, tinyServingModel } from './toy-lm.js';

const tok = new ByteTokenizer();
const utf8 = (s: string) => Array.from(new TextEncoder().encode(s));
const SCRIPT = 'Grüße, 世界! 🙂 The end. ';

const retnet = () => tinyServingModel('retnet');
const transformer = () => tinyServingModel('transformer');

/** A scripted model that counts its decode steps. */
function scripted(): ScriptedLM & { steps: number } {
  const model = Object.assign(new ScriptedLM(tok.vocabSize, utf8(SCRIPT), ref), { steps: 0 });
  const step = model.step.bind(model);
  model.step = (tokens, state) => {
    model.steps++;
    return step(tokens, state);
  };
  return model;
}

async function serve(model: CausalLM, opts: Partial<ServerOptions> = {}): Promise<RunningServer> {
  return startServer(model, tok, { modelId: 'test-model', port: 0, logLevel: 'silent', ...opts });
}

function post(server: RunningServer, body: unknown, headers: Record<string, string> = {}, signal?: AbortSignal) {
  return fetch(`${server.url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    signal,
  });
}

/** Reads a server-sent event stream: the parsed data of each event, '[DONE]' kept as a string. */
async function* sse(response: Response): AsyncGenerator<unknown> {
  assert.equal(response.status, 200);
  assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
  const decoder = new TextDecoder();
  let buffer = '';
  for await (const bytes of response.body!) {
    buffer += decoder.decode(bytes as Uint8Array, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      assert.ok(event.startsWith('data: '), `event ${JSON.stringify(event)}`);
      const data = event.slice(6);
      yield data === '[DONE]' ? data : JSON.parse(data);
    }
  }
  assert.equal(buffer, '', 'stream ended mid-event');
}

interface Chunk {
  choices: { text: string; index: number; finish_reason: string | null }[];
  usage?: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  error?: { message: string };
}

async function readStream(response: Response): Promise<{ chunks: Chunk[]; done: boolean }> {
  const chunks: Chunk[] = [];
  let done = false;
  for await (const data of sse(response)) {
    assert.ok(!done, 'data after [DONE]');
    if (data === '[DONE]') done = true;
    else chunks.push(data as Chunk);
  }
  return { chunks, done };
}

async function expectError(response: Response, status: number, message: RegExp, param?: string | null) {
  assert.equal(response.status, status);
  const body = (await response.json()) as { error: { message: string; type: string; param: string | null } };
  assert.match(body.error.message, message);
  assert.equal(typeof body.error.type, 'string');
  if (param !== undefined) assert.equal(body.error.param, param);
}

async function until(condition: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await condition()) return;
    await sleep(10);
  }
  assert.fail(`timed out waiting for ${what}`);
}

const health = async (server: RunningServer) =>
  (await (await fetch(`${server.url}/health`)).json()) as { status: string; active: number; queued: number };

describe('server: completions', () => {
  let server: RunningServer;
  let text: RunningServer;
  const model = retnet();
  before(async () => {
    server = await serve(model, { maxPromptTokens: 64, maxTokens: 100, maxBodyBytes: 4096 });
    text = await serve(scripted());
  });
  after(async () => {
    await server.close();
    await text.close();
  });

  it('binds 127.0.0.1 and answers /health and /v1/models', async () => {
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.deepEqual(await health(server), { status: 'ok', model: 'test-model', active: 0, queued: 0 });
    const models = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: { id: string }[] };
    assert.equal(models.data[0]!.id, 'test-model');
  });

  it('non-streaming greedy completion equals generate() on the same prompt', async () => {
    const r = await post(server, { model: 'test-model', prompt: 'Once upon', max_tokens: 12, temperature: 0 });
    assert.equal(r.status, 200);
    const body = (await r.json()) as Chunk & { object: string; model: string };
    assert.equal(body.object, 'text_completion');
    assert.equal(body.model, 'test-model');
    let expected = '';
    let completion = 0;
    for await (const e of generate(model, tok, [
      { prompt: 'Once upon', maxNewTokens: 12, sampling: { temperature: 0 } },
    ])) {
      expected += e.text;
      if (e.type === 'end') completion = e.completionTokens;
    }
    assert.equal(body.choices[0]!.text, expected);
    assert.deepEqual(body.usage, { prompt_tokens: 9, completion_tokens: completion, total_tokens: 9 + completion });
  });

  it('streams chunks then [DONE]; the streamed text equals the whole response', async () => {
    const request = { prompt: 'abc', max_tokens: 40, temperature: 0.8, top_p: 0.9, top_k: 40, seed: 7 };
    const whole = (await (await post(server, request)).json()) as Chunk;
    const { chunks, done } = await readStream(
      await post(server, { ...request, stream: true, stream_options: { include_usage: true } }),
    );
    assert.ok(done);
    const usage = chunks.pop()!;
    assert.deepEqual(usage.choices, []);
    assert.deepEqual(usage.usage, whole.usage);
    assert.equal(chunks.map((c) => c.choices[0]!.text).join(''), whole.choices[0]!.text);
    assert.ok(chunks.slice(0, -1).every((c) => c.choices[0]!.finish_reason === null));
    assert.equal(chunks.at(-1)!.choices[0]!.finish_reason, whole.choices[0]!.finish_reason);
  });

  it('streams whole UTF-8 characters, and honours stop strings and several prompts', async () => {
    const { chunks } = await readStream(
      await post(text, { prompt: ['x', 'yy'], max_tokens: 200, stop: ['end.'], stream: true }),
    );
    for (const c of chunks) assert.ok(!c.choices[0]!.text.includes('\uFFFD'), JSON.stringify(c));
    for (const index of [0, 1]) {
      const mine = chunks.filter((c) => c.choices[0]!.index === index);
      assert.equal(mine.map((c) => c.choices[0]!.text).join(''), 'Grüße, 世界! 🙂 The ');
      assert.equal(mine.at(-1)!.choices[0]!.finish_reason, 'stop');
    }
    const whole = (await (await post(text, { prompt: 'q', max_tokens: 9 })).json()) as Chunk;
    assert.deepEqual(whole.choices, [{ text: 'Grüße, ', index: 0, logprobs: null, finish_reason: 'length' }]);
  });

  it('answers bad JSON and bad fields with 4xx errors that say what is wrong', async () => {
    await expectError(await post(server, '{"prompt": "a",'), 400, /not valid JSON/);
    await expectError(await post(server, ''), 400, /body is empty/);
    await expectError(await post(server, '[1, 2]'), 400, /must be a JSON object, got an array/);
    const r = await fetch(`${server.url}/v1/completions`, { method: 'POST', body: 'prompt=a' });
    await expectError(r, 415, /Content-Type/);
    const cases: [unknown, RegExp, string][] = [
      [{}, /'prompt': required/, 'prompt'],
      [{ prompt: 3 }, /'prompt': expected a string, a non-empty array of strings, an array of token ids/, 'prompt'],
      [{ prompt: [] }, /'prompt'/, 'prompt'],
      [{ prompt: 'a', max_tokens: 0 }, /'max_tokens': expected an integer in \[1, 100\], got 0/, 'max_tokens'],
      [{ prompt: 'a', max_tokens: 2.5 }, /'max_tokens'/, 'max_tokens'],
      [{ prompt: 'a', temperature: 'hot' }, /'temperature': expected a number in \[0, 2\], got "hot"/, 'temperature'],
      [{ prompt: 'a', top_p: 0 }, /'top_p'/, 'top_p'],
      [{ prompt: 'a', top_k: -1 }, /'top_k'/, 'top_k'],
      [{ prompt: 'a', seed: -5 }, /'seed'/, 'seed'],
      [{ prompt: 'a', stop: ['a', 'b', 'c', 'd', 'e'] }, /'stop': .*at most 4/, 'stop'],
      [{ prompt: 'a', stop: [''] }, /'stop'/, 'stop'],
      [{ prompt: 'a', stream: 'yes' }, /'stream': expected true or false/, 'stream'],
      [{ prompt: 'a', stream_options: { include_usage: true } }, /only allowed with "stream": true/, 'stream_options'],
      [{ prompt: 'a', n: 0 }, /'n': expected an integer in \[1, 16\], got 0/, 'n'],
      [{ prompt: 'a', n: 17 }, /'n': expected an integer in \[1, 16\]/, 'n'],
      [{ prompt: 'a', best_of: 3 }, /'best_of': only best_of = n/, 'best_of'],
      [{ prompt: 'a', logprobs: 21 }, /'logprobs': expected an integer in \[0, 20\]/, 'logprobs'],
      [{ prompt: 'a', max_tokens: 0, echo: false }, /'max_tokens': expected an integer in \[1, 100\]/, 'max_tokens'],
      [{ prompt: 'a', min_p: 1.5 }, /'min_p'/, 'min_p'],
      [{ prompt: 'a', presence_penalty: 3 }, /'presence_penalty': expected a number in \[-2, 2\]/, 'presence_penalty'],
      [{ prompt: 'a', logit_bias: { x: 1 } }, /'logit_bias': key "x" is not a token id/, 'logit_bias'],
      [{ prompt: 'a', logit_bias: { 300: 1 } }, /'logit_bias': key "300" .*\[0, 259\)/, 'logit_bias'],
      [{ prompt: 'a', logit_bias: { 3: 101 } }, /'logit_bias': the bias of token 3 .*\[-100, 100\]/, 'logit_bias'],
      [{ prompt: [1, 2, 999] }, /'prompt': prompt\[2\] = 999 is not a token id/, 'prompt'],
      [{ prompt: [[1], []] }, /'prompt': expected a string/, 'prompt'],
    ];
    for (const [body, message, param] of cases) await expectError(await post(server, body), 400, message, param);
    await expectError(await post(server, { model: 'gpt-4', prompt: 'a' }), 404, /'gpt-4' does not exist/, 'model');
    await expectError(await fetch(`${server.url}/v1/nothing`), 404, /no route GET \/v1\/nothing/);
  });

  it('enforces the body size, prompt length and max_tokens limits', async () => {
    await expectError(await post(server, { prompt: 'x'.repeat(5000) }), 413, /larger than the limit of 4096 bytes/);
    await expectError(
      await post(server, { prompt: 'é'.repeat(33) }),
      400,
      /66 tokens, more than the limit of 64/,
      'prompt',
    );
    await expectError(await post(server, { prompt: 'a', max_tokens: 101 }), 400, /\[1, 100\]/, 'max_tokens');
    assert.equal((await post(server, { prompt: 'é'.repeat(32), max_tokens: 100, temperature: 0 })).status, 200);
  });
});

/** Sends bytes as they are over a raw socket (fetch would normalise the request target) and returns the response. */
async function raw(server: RunningServer, request: string): Promise<{ status: number; head: string; body: string }> {
  const { port } = new URL(server.url);
  const socket = connect(Number(port), '127.0.0.1');
  socket.write(request); // not end(): a half-closed connection reads as a client that went away
  let text = '';
  for await (const bytes of socket) text += (bytes as Buffer).toString('latin1');
  const split = text.indexOf('\r\n\r\n');
  const head = split < 0 ? text : text.slice(0, split);
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0), head, body: text.slice(split + 4) };
}

/** An HTTP/1.1 request with a JSON body, closing the connection after the response. */
function rawRequest(method: string, target: string, body = '', headers: string[] = []): string {
  const lines = [`${method} ${target} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close', ...headers];
  if (body !== '') lines.push('Content-Type: application/json', `Content-Length: ${Buffer.byteLength(body)}`);
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

describe('server: auth', () => {
  let server: RunningServer;
  before(async () => (server = await serve(scripted(), { apiKey: 'sekrit-key' })));
  after(async () => server.close());
  const KEY = 'Authorization: Bearer sekrit-key';

  it('requires the bearer key on /v1/*, not on /health', async () => {
    await expectError(await post(server, { prompt: 'a' }), 401, /missing or invalid API key/);
    await expectError(await post(server, { prompt: 'a' }, { authorization: 'Bearer wrong' }), 401, /API key/);
    await expectError(await post(server, { prompt: 'a' }, { authorization: 'sekrit-key' }), 401, /API key/);
    await expectError(await fetch(`${server.url}/v1/models`), 401, /API key/);
    assert.equal((await post(server, { prompt: 'a' }, { authorization: 'Bearer sekrit-key' })).status, 200);
    assert.equal((await fetch(`${server.url}/health`)).status, 200);
  });

  it('no spelling of a request target gets past the key: encoded, absolute-form, dot-segment, //, case', async () => {
    const { host } = new URL(server.url);
    const body = JSON.stringify({ prompt: 'a', max_tokens: 2 });
    const targets = [
      '/v1/completions',
      '/%76%31/completions',
      '/v1/%63ompletions',
      '/%2576%2531/completions',
      `http://${host}/v1/completions`,
      `HTTP://${host}/v1/completions`,
      `http://${host}/%76%31/completions`,
      `http://evil.example/v1/completions`,
      '/v1/./completions',
      '/x/../v1/completions',
      '/v1/completions/',
      '/v1/completions?x=1',
      '/v1/completions;x',
      '/v1/completions#frag',
      '//v1/completions',
      '/v1//completions',
      '/V1/completions',
      '/v1/COMPLETIONS',
      '*',
    ];
    for (const target of targets) {
      const r = await raw(server, rawRequest('POST', target, body));
      assert.ok(r.status === 401 || r.status === 400, `POST ${target} without the key: ${r.head.split('\r\n')[0]}`);
      assert.doesNotMatch(r.body, /text_completion/, `POST ${target}`);
    }
    for (const target of ['/%76%31/models', `http://${host}/v1/models`, '/v1/models/', '//v1/models'])
      for (const method of ['GET', 'HEAD']) {
        const r = await raw(server, rawRequest(method, target));
        assert.equal(r.status, 401, `${method} ${target} without the key: ${r.head.split('\r\n')[0]}`);
      }
    // The routed forms are the completions route: with the key they are served.
    for (const target of ['/%76%31/completions', `http://${host}/v1/completions`]) {
      const r = await raw(server, rawRequest('POST', target, body, [KEY]));
      assert.equal(r.status, 200, `POST ${target} with the key`);
      assert.match(r.body, /text_completion/);
    }
  });

  it('every registered route but the public ones needs the key', async () => {
    const open = server.routes.filter((r) => r.public).map((r) => `${r.method} ${r.url}`);
    assert.deepEqual(open.sort(), ['GET /health', 'HEAD /health']);
    const guarded = server.routes.filter((r) => !r.public);
    assert.ok(guarded.length >= 3, `${guarded.length} guarded routes`);
    for (const route of guarded) {
      const target = route.url.replace(/:[^/]+/g, 'test-model');
      const r = await raw(server, rawRequest(route.method, target, route.method === 'POST' ? '{}' : ''));
      assert.equal(r.status, 401, `${route.method} ${target}`);
    }
    assert.equal((await raw(server, rawRequest('GET', '/no/such/route'))).status, 401);
  });
});

describe('server: HTTP edges', () => {
  let server: RunningServer;
  const log: string[] = [];
  const logStream = { write: (line: string) => log.push(line) };
  before(async () => {
    const model = scripted();
    // A model that fails on one prompt: an internal error, to see what reaches the client and the log.
    const prefill = model.prefill.bind(model);
    model.prefill = (prompts) => {
      if (prompts.some((p) => p[0] === 0x21 /* ! */)) throw new Error('kernel exploded');
      return prefill(prompts);
    };
    server = await serve(model, { logLevel: 'info', logStream });
  });
  after(async () => server.close());

  it('refuses deeply nested JSON with a 400 that says so, wherever the nesting is', async () => {
    for (const field of ['prompt', 'model', 'stop', 'stream_options', 'logit_bias']) {
      const body = `{"${field}": ${'['.repeat(200000)}${']'.repeat(200000)}}`;
      const r = await raw(server, rawRequest('POST', '/v1/completions', body));
      assert.equal(r.status, 400, field);
      assert.match(r.body, /nests arrays and objects deeper than 64 levels/);
    }
    // Brackets inside strings are text, not nesting.
    const r = await post(server, { prompt: '['.repeat(100) + '"\\"{', max_tokens: 1 });
    assert.equal(r.status, 200);
  });

  it('refuses a body that is not UTF-8 with a 400 naming the byte', async () => {
    const body = Buffer.concat([Buffer.from('{"prompt": "ab'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]);
    const bad = await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    });
    await expectError(bad, 400, /not valid UTF-8 \(invalid byte sequence at byte 14\)/);
    for (const bytes of [
      [0xc0, 0xaf],
      [0xed, 0xa0, 0x80],
      [0xe2, 0x82],
    ]) {
      const overlong = Buffer.concat([Buffer.from('{"prompt": "'), Buffer.from(bytes), Buffer.from('"}')]);
      const r2 = await fetch(`${server.url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: overlong,
      });
      await expectError(r2, 400, /not valid UTF-8 \(invalid byte sequence at byte 12\)/);
    }
  });

  it('refuses too many headers (431) and an HTTP/0.9-style request line', async () => {
    const many = Array.from({ length: 2000 }, (_, i) => `x-h${i}: v`);
    const r = await raw(server, rawRequest('GET', '/health', '', many));
    assert.equal(r.status, 431);
    assert.match(r.body, /more than 100 header fields/);
    assert.equal((await raw(server, rawRequest('GET', '/health', '', many.slice(0, 90)))).status, 200);
    const old = await raw(server, 'GET /health\r\n\r\n');
    assert.notEqual(old.status, 200, old.head);
    assert.doesNotMatch(old.body, /"status":"ok"/);
  });

  it('keeps stack traces out of responses and out of the log at the default level', async () => {
    log.length = 0;
    const r = await post(server, { prompt: '!boom', max_tokens: 2 });
    await expectError(r, 500, /^internal server error$/);
    const s = await readStream(await post(server, { prompt: '!boom', max_tokens: 2, stream: true }));
    assert.match(JSON.stringify(s.chunks), /internal server error/);
    assert.doesNotMatch(JSON.stringify(s.chunks), /exploded|at .*\.ts/);
    const lines = log.map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(
      lines.some((l) => l.error === 'kernel exploded'),
      'the error is logged',
    );
    assert.ok(
      lines.some((l) => l.msg === 'request completed'),
      'requests are logged',
    );
    assert.doesNotMatch(log.join(''), /\n\s+at |stack/);
  });
});

describe('server: concurrency, disconnects, shutdown', () => {
  for (const makeModel of [retnet, transformer])
    it(`serves concurrent clients together and fairly: a short request overtakes a long one (${makeModel.name})`, async () => {
      const model = makeModel();
      const server = await serve(model, { maxActive: 8 });
      try {
        const prompts = ['first prompt', 'b', 'another one here', 'zz'];
        const solo = await Promise.all(
          prompts.map(async (prompt) => {
            const r = (await (await post(server, { prompt, max_tokens: 15, temperature: 0 })).json()) as Chunk;
            return r.choices[0]!.text;
          }),
        );
        // The same prompts at once, streamed, give the same text.
        const streamed = await Promise.all(
          prompts.map(async (prompt) => {
            const { chunks } = await readStream(
              await post(server, { prompt, max_tokens: 15, temperature: 0, stream: true }),
            );
            return chunks.map((c) => c.choices[0]!.text).join('');
          }),
        );
        assert.deepEqual(streamed, solo);
        const order: string[] = [];
        const long = post(server, { prompt: 'long', max_tokens: 400, stream: true, ignore_eos: true }).then(
          async (r) => {
            await readStream(r);
            order.push('long');
          },
        );
        await until(async () => (await health(server)).active === 1, 'the long request to start');
        const short = (await (await post(server, { prompt: 'short', max_tokens: 3 })).json()) as Chunk;
        order.push('short');
        assert.equal(short.choices.length, 1);
        await long;
        assert.deepEqual(order, ['short', 'long']);
      } finally {
        await server.close();
      }
    });

  it('refuses requests beyond the queue with 429', async () => {
    const server = await serve(scripted(), { maxActive: 1, maxQueued: 1, maxTokens: 100000 });
    try {
      const a = new AbortController();
      const body = { prompt: 'a', max_tokens: 10000, ignore_eos: true, stream: true };
      const first = await post(server, body, {}, a.signal);
      const second = post(server, body, {}, a.signal).catch(() => null);
      await until(async () => (await health(server)).queued === 1, 'the second request to queue');
      await expectError(await post(server, body), 429, /already waiting/);
      a.abort();
      await first.body?.cancel().catch(() => {});
      await second;
      await until(async () => (await health(server)).active + (await health(server)).queued === 0, 'cancellation');
    } finally {
      await server.close();
    }
  });

  it('a client that disconnects mid-stream cancels its generation', async () => {
    const model = scripted();
    const server = await serve(model, { maxTokens: 100000 });
    try {
      const abort = new AbortController();
      const r = await post(server, { prompt: 'a', max_tokens: 100000, stream: true }, {}, abort.signal);
      let received = 0;
      for await (const data of sse(r)) {
        assert.notEqual(data, '[DONE]');
        if (++received === 5) break;
      }
      abort.abort();
      await until(async () => (await health(server)).active === 0, 'the generation to be cancelled');
      const steps = model.steps;
      assert.ok(steps < 100000, `stopped after ${steps} steps`);
      await sleep(50);
      assert.equal(model.steps, steps, 'no decoding after the cancel');
    } finally {
      await server.close();
    }
  });

  it('close() cancels generations in flight after the grace period and frees their state', async () => {
    const model = retnet();
    const baseline = ref.memory.current;
    const server = await serve(model);
    const r = await post(server, { prompt: 'a', max_tokens: 2000, ignore_eos: true, stream: true });
    const reading = readStream(r);
    const whole = post(server, { prompt: 'b', max_tokens: 2000, ignore_eos: true });
    await until(async () => (await health(server)).active === 2, 'both generations to start');
    await server.close(0);
    const { chunks, done } = await reading;
    assert.ok(done, 'the stream still ends with [DONE]');
    assert.match(chunks.at(-1)!.error!.message, /shutting down/);
    await expectError(await whole, 503, /shutting down/);
    assert.equal(ref.memory.current, baseline);
    await assert.rejects(fetch(`${server.url}/health`));
  });
});
