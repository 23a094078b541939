// The OpenAI API surface real clients use, driven by the official `openai` client where it can be: chat completions
// (templated, streamed and whole), logprobs and echo checked against a hand-computed log-softmax of the model's own
// full-forward logits (lm-eval-harness's loglikelihood request included), n samples sharing one prefill, token-id
// prompts, logit_bias, unknown fields, /v1/models/{id}, /tokenize, /detokenize, /metrics and CORS.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import OpenAI from 'openai';

import { noGrad } from '../src/autograd/tape.js';
import type { CausalLM } from '../src/models/lm.js';
import { DEFAULT_CHAT_TEMPLATE } from '../src/server/chat.js';
import { IGNORED_FIELDS_HEADER, type RunningServer, type ServerOptions, startServer } from '../src/server/server.js';
import { tidy } from '../src/tensor/scope.js';
import { ByteTokenizer } from '../src/tokenizer/tokenizer.js';
import { ref } from './helpers.js';
import { tinyServingModel } from './toy-lm.js';

const tok = new ByteTokenizer();
const MODEL = 'test-model';

const retnet = () => tinyServingModel('retnet');

/** The model's prefill calls, as [rows, tokens] each. */
function countingPrefills(model: CausalLM): [number, number][] {
  const calls: [number, number][] = [];
  const prefill = model.prefill.bind(model);
  model.prefill = (prompts) => {
    calls.push([prompts.length, prompts.reduce((n, p) => n + p.length, 0)]);
    return prefill(prompts);
  };
  return calls;
}

async function serve(model: CausalLM, opts: Partial<ServerOptions> = {}): Promise<RunningServer> {
  return startServer(model, tok, { modelId: MODEL, port: 0, logLevel: 'silent', ...opts });
}

/** Log-softmax of every position of the full forward over ids, written out here: [T][V]. */
function logSoftmaxRows(model: CausalLM, ids: number[]): number[][] {
  const V = model.vocabSize;
  const logits = noGrad(() => tidy(() => model.forward(ref.fromData(ids, [1, ids.length], 'int32')).data()));
  return ids.map((_, t) => {
    const row = Array.from(logits.subarray(t * V, (t + 1) * V)).slice(0, tok.vocabSize);
    const m = Math.max(...row);
    const z = Math.log(row.reduce((s, x) => s + Math.exp(x - m), 0)) + m;
    return row.map((x) => x - z);
  });
}

/** The greedy continuation of ids by argmax over the full forward, n tokens. */
function greedy(model: CausalLM, ids: number[], n: number): number[] {
  const out = [...ids];
  for (let i = 0; i < n; i++) {
    const row = logSoftmaxRows(model, out).at(-1)!;
    out.push(row.indexOf(Math.max(...row)));
  }
  return out.slice(ids.length);
}

const close = (a: number, b: number, what: string) => assert.ok(Math.abs(a - b) < 1e-9, `${what}: ${a} vs ${b}`);
const text = (id: number) => tok.decode([id]);
const bytes = (s: string) => Array.from(new TextEncoder().encode(s));

/** The k likeliest tokens of a row, ties by lower id, as [token, logprob]. */
function topOf(row: number[], k: number): [number, number][] {
  return row
    .map((lp, t) => [t, lp] as [number, number])
    .sort((a, b) => b[1] - a[1] || a[0] - b[0])
    .slice(0, k);
}

describe('serve: completions logprobs and echo against the model', () => {
  let server: RunningServer;
  let client: OpenAI;
  const model = retnet();
  before(async () => {
    server = await serve(model);
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  after(async () => server.close());

  it('logprobs: each generated token and its top-k alternatives are the log-softmax of the forward logits', async () => {
    const prompt = 'Once upon';
    const ids = tok.encode(prompt);
    const r = await client.completions.create({ model: MODEL, prompt, max_tokens: 6, temperature: 0, logprobs: 3 });
    const generated = greedy(model, ids, 6);
    const lp = r.choices[0]!.logprobs!;
    assert.deepEqual(lp.tokens, generated.map(text));
    const rows = logSoftmaxRows(model, [...ids, ...generated]);
    generated.forEach((t, j) => {
      const row = rows[ids.length - 1 + j]!;
      close(lp.token_logprobs![j]!, row[t]!, `token ${j}`);
      const top = topOf(row, 3);
      assert.equal(Object.keys(lp.top_logprobs![j]!).length, new Set(top.map(([id]) => text(id))).size);
      // Keyed by text: tokens that share one (bytes of a character, all U+FFFD) show the likeliest one's logprob.
      const seen = new Set<string>();
      for (const [id, v] of top)
        if (!seen.has(text(id))) {
          seen.add(text(id));
          close(lp.top_logprobs![j]![text(id)]!, v, `top ${text(id)} at ${j}`);
        }
    });
    let offset = 0;
    lp.text_offset!.forEach((o, j) => {
      assert.equal(o, offset);
      offset += lp.tokens![j]!.length;
    });
  });

  it('lm-eval-harness loglikelihood: echo, logprobs 1, max_tokens 0 over a batch of prompts', async () => {
    const prompts = ['The cat sat', 'A dog', 'Zz'];
    const r = await client.completions.create({
      model: MODEL,
      prompt: prompts,
      echo: true,
      logprobs: 1,
      max_tokens: 0,
      temperature: 0,
    });
    assert.equal(r.choices.length, prompts.length);
    for (const [i, prompt] of prompts.entries()) {
      const c = r.choices.find((x) => x.index === i)!;
      assert.equal(c.text, prompt);
      assert.equal(c.finish_reason, 'length');
      const ids = tok.encode(prompt);
      const rows = logSoftmaxRows(model, ids);
      const lp = c.logprobs!;
      assert.deepEqual(lp.tokens, ids.map(text));
      assert.equal(lp.token_logprobs![0], null);
      assert.equal(lp.top_logprobs![0], null);
      for (let j = 1; j < ids.length; j++) {
        close(lp.token_logprobs![j]!, rows[j - 1]![ids[j]!]!, `prompt ${i} token ${j}`);
        const [[best, v]] = topOf(rows[j - 1]!, 1) as [[number, number]];
        assert.deepEqual(Object.keys(lp.top_logprobs![j]!), [text(best)]);
        close(lp.top_logprobs![j]![text(best)]!, v, 'top-1');
      }
      // The summed loglikelihood a harness computes from them.
      const sum = lp.token_logprobs!.slice(1).reduce((a, b) => a! + b!, 0)!;
      close(
        sum,
        ids.slice(1).reduce((s, t, j) => s + rows[j]![t]!, 0),
        `sum ${i}`,
      );
    }
    assert.deepEqual(r.usage, {
      prompt_tokens: prompts.reduce((n, p) => n + tok.encode(p).length, 0),
      completion_tokens: 0,
      total_tokens: prompts.reduce((n, p) => n + tok.encode(p).length, 0),
    });
  });

  it('echo with generation: the prompt then the completion, in text and logprobs; streamed equals whole', async () => {
    const ids = tok.encode('Hi there');
    const request = { model: MODEL, prompt: ids, echo: true, logprobs: 2, max_tokens: 5, temperature: 0 };
    const whole = await client.completions.create(request);
    const generated = greedy(model, ids, 5);
    const c = whole.choices[0]!;
    assert.equal(c.text, tok.decode([...ids, ...generated]));
    const rows = logSoftmaxRows(model, [...ids, ...generated]);
    const all = [...ids, ...generated];
    assert.deepEqual(c.logprobs!.tokens, all.map(text));
    all.forEach((t, j) => {
      if (j === 0) assert.equal(c.logprobs!.token_logprobs![0], null);
      else close(c.logprobs!.token_logprobs![j]!, rows[j - 1]![t]!, `token ${j}`);
    });
    const stream = await client.completions.create({ ...request, stream: true });
    const tokens: string[] = [];
    const logprobs: (number | null)[] = [];
    const offsets: number[] = [];
    let streamed = '';
    for await (const chunk of stream) {
      const ch = chunk.choices[0]!;
      streamed += ch.text;
      tokens.push(...(ch.logprobs?.tokens ?? []));
      logprobs.push(...(ch.logprobs?.token_logprobs ?? []));
      offsets.push(...(ch.logprobs?.text_offset ?? []));
    }
    assert.equal(streamed, c.text);
    assert.deepEqual(tokens, c.logprobs!.tokens);
    assert.deepEqual(logprobs, c.logprobs!.token_logprobs);
    assert.deepEqual(offsets, c.logprobs!.text_offset);
  });

  it('token-id prompts (one, or several) give what the same text gives', async () => {
    const [a, b] = ['abc', 'xyz'];
    const byText = await client.completions.create({ model: MODEL, prompt: [a, b], max_tokens: 8, temperature: 0 });
    const byIds = await client.completions.create({
      model: MODEL,
      prompt: [tok.encode(a), tok.encode(b)],
      max_tokens: 8,
      temperature: 0,
    });
    assert.deepEqual(
      byIds.choices.map((c) => c.text),
      byText.choices.map((c) => c.text),
    );
    const one = await client.completions.create({ model: MODEL, prompt: tok.encode(a), max_tokens: 8, temperature: 0 });
    assert.equal(one.choices[0]!.text, byText.choices[0]!.text);
  });

  it('logit_bias of +100 on one token makes greedy decoding produce only it', async () => {
    const r = await client.completions.create({
      model: MODEL,
      prompt: 'q',
      max_tokens: 5,
      temperature: 0,
      logit_bias: { 65: 100 },
    });
    assert.equal(r.choices[0]!.text, 'AAAAA');
  });
});

describe('serve: n samples share one prefill', () => {
  it('n = 3: one prefill row, three seeded samples, each the same as that seed alone', async () => {
    const model = retnet();
    const prefills = countingPrefills(model);
    const server = await serve(model);
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    try {
      const ask = { model: MODEL, prompt: 'Tell me', max_tokens: 12, temperature: 1.5, seed: 40 };
      const r = await client.completions.create({ ...ask, n: 3 });
      assert.deepEqual(prefills, [[1, 7]], 'one prefill of the one prompt');
      assert.deepEqual(
        r.choices.map((c) => c.index),
        [0, 1, 2],
      );
      for (const j of [0, 1, 2]) {
        const alone = await client.completions.create({ ...ask, seed: 40 + j });
        assert.equal(r.choices[j]!.text, alone.choices[0]!.text, `sample ${j}`);
      }
      assert.ok(new Set(r.choices.map((c) => c.text)).size > 1, 'the samples differ');
      assert.equal(r.usage!.prompt_tokens, 7, 'the prompt counted once');
      // Two prompts, n = 2: choices i·n + j.
      const two = await client.completions.create({ ...ask, prompt: ['a', 'b'], n: 2, temperature: 0 });
      assert.deepEqual(two.choices.map((c) => c.index).sort(), [0, 1, 2, 3]);
      const byIndex = two.choices.sort((x, y) => x.index - y.index).map((c) => c.text);
      assert.equal(byIndex[0], byIndex[1]);
      assert.equal(byIndex[2], byIndex[3]);
    } finally {
      await server.close();
    }
  });
});

describe('serve: chat completions', () => {
  const model = retnet();
  let server: RunningServer;
  let templated: RunningServer;
  let client: OpenAI;
  const TEMPLATE =
    '{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}' +
    '{% if add_generation_prompt %}<|assistant|>{% endif %}';
  before(async () => {
    server = await serve(model);
    templated = await serve(model, {
      chatTemplate: TEMPLATE,
      templateTokens: { bos_token: '<s>', eos_token: '</s>' },
    });
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  after(async () => {
    await server.close();
    await templated.close();
  });

  const messages = [
    { role: 'system' as const, content: 'Be brief.' },
    { role: 'user' as const, content: [{ type: 'text' as const, text: 'Hello' }] },
  ];

  it('renders the default template and answers like a completion of the rendered prompt', async () => {
    const rendered = 'system: Be brief.\n\nuser: Hello\n\nassistant:';
    assert.ok(DEFAULT_CHAT_TEMPLATE.includes('assistant:'));
    const chat = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 10, temperature: 0 });
    const plain = await client.completions.create({ model: MODEL, prompt: rendered, max_tokens: 10, temperature: 0 });
    assert.equal(chat.object, 'chat.completion');
    assert.equal(chat.choices[0]!.message.role, 'assistant');
    assert.equal(chat.choices[0]!.message.content, plain.choices[0]!.text);
    assert.deepEqual(chat.usage, plain.usage);
    assert.equal(chat.usage!.prompt_tokens, tok.encode(rendered).length);
  });

  it("renders the model's chat_template with its special tokens (seen through /tokenize)", async () => {
    const r = await fetch(`${templated.url}/tokenize`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages }),
    });
    const { tokens } = (await r.json()) as { tokens: number[] };
    assert.equal(tok.decode(tokens), '<s><|system|>Be brief.</s><|user|>Hello</s><|assistant|>');
  });

  it('streams role, content and finish_reason chunks equal to the whole answer, with usage last', async () => {
    const ask = { model: MODEL, messages, max_completion_tokens: 12, temperature: 0.7, seed: 3 };
    const whole = await client.chat.completions.create(ask);
    const stream = await client.chat.completions.create({
      ...ask,
      stream: true,
      stream_options: { include_usage: true },
    });
    let content = '';
    let role: string | undefined;
    let finish: string | null = null;
    let usage;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        role ??= c.delta.role;
        content += c.delta.content ?? '';
        finish = c.finish_reason ?? finish;
      }
    }
    assert.equal(role, 'assistant');
    assert.equal(content, whole.choices[0]!.message.content);
    assert.equal(finish, whole.choices[0]!.finish_reason);
    assert.deepEqual(usage, whole.usage);
  });

  it('logprobs and top_logprobs in the chat shape match the log-softmax of the model', async () => {
    const rendered = 'system: Be brief.\n\nuser: Hello\n\nassistant:';
    const ids = tok.encode(rendered);
    const r = await client.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 4,
      temperature: 0,
      logprobs: true,
      top_logprobs: 2,
    });
    const generated = greedy(model, ids, 4);
    const rows = logSoftmaxRows(model, [...ids, ...generated]);
    const content = r.choices[0]!.logprobs!.content!;
    assert.equal(content.length, 4);
    content.forEach((entry, j) => {
      const row = rows[ids.length - 1 + j]!;
      assert.equal(entry.token, text(generated[j]!));
      assert.deepEqual(entry.bytes, bytes(entry.token));
      close(entry.logprob, row[generated[j]!]!, `token ${j}`);
      const top = topOf(row, 2);
      assert.deepEqual(
        entry.top_logprobs.map((t) => t.token),
        top.map(([id]) => text(id)),
      );
      entry.top_logprobs.forEach((t, k) => close(t.logprob, top[k]![1], `top ${k} at ${j}`));
    });
  });

  it('n > 1, stop and the errors of a bad chat', async () => {
    const r = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 6, n: 2, seed: 1 });
    assert.deepEqual(
      r.choices.map((c) => c.index),
      [0, 1],
    );
    const bad = async (body: unknown, message: RegExp) => {
      const res = await fetch(`${server.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      assert.equal(res.status, 400);
      assert.match(((await res.json()) as { error: { message: string } }).error.message, message);
    };
    await bad({ messages: [] }, /'messages': required/);
    await bad({ messages: [{ role: 'wizard', content: 'x' }] }, /messages\[0\]\.role must be one of/);
    await bad({ messages: [{ role: 'user', content: [{ type: 'image_url' }] }] }, /content\[0\] must be/);
    await bad({ messages, top_logprobs: 2 }, /'top_logprobs': only allowed with "logprobs": true/);
  });
});

describe('serve: unknown fields, strict mode, models, tokenize, metrics', () => {
  let server: RunningServer;
  let strict: RunningServer;
  const log: string[] = [];
  before(async () => {
    server = await serve(retnet(), {
      apiKey: 'k',
      logLevel: 'info',
      logStream: { write: (line: string) => log.push(line) },
    });
    strict = await serve(retnet(), { strict: true });
  });
  after(async () => {
    await server.close();
    await strict.close();
  });
  const auth = { authorization: 'Bearer k', 'content-type': 'application/json' };

  it('ignores unknown fields, naming them in a response header and the log; --strict refuses them', async () => {
    const body = JSON.stringify({ prompt: 'a', max_tokens: 2, temprature: 1, guided_json: {} });
    const r = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: auth, body });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get(IGNORED_FIELDS_HEADER), 'temprature, guided_json');
    const line = log.map((l) => JSON.parse(l) as { ignored?: string[] }).find((l) => l.ignored);
    assert.deepEqual(line?.ignored, ['temprature', 'guided_json']);
    const refused = await fetch(`${strict.url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body,
    });
    assert.equal(refused.status, 400);
    assert.match(await refused.text(), /'temprature': unknown field/);
  });

  it('GET /v1/models/{id} (models.retrieve), /tokenize and /detokenize', async () => {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'k', maxRetries: 0 });
    const m = await client.models.retrieve(MODEL);
    assert.equal(m.id, MODEL);
    assert.equal(m.object, 'model');
    await assert.rejects(client.models.retrieve('other'), (e: { status?: number }) => e.status === 404);
    const t = await fetch(`${server.url}/tokenize`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ prompt: 'héllo' }),
    });
    const { tokens, count } = (await t.json()) as { tokens: number[]; count: number };
    assert.deepEqual(tokens, tok.encode('héllo'));
    assert.equal(count, 6);
    const d = await fetch(`${server.url}/detokenize`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ tokens }),
    });
    assert.deepEqual(await d.json(), { prompt: 'héllo' });
    const badIds = await fetch(`${server.url}/detokenize`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ tokens: [1, 999] }),
    });
    assert.equal(badIds.status, 400);
  });

  it('/metrics: Prometheus text with requests, tokens, queue, time to first token and step times; needs the key', async () => {
    await fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ prompt: 'abc', max_tokens: 7, ignore_eos: true }),
    });
    assert.equal((await fetch(`${server.url}/metrics`)).status, 401);
    const r = await fetch(`${server.url}/metrics`, { headers: auth });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain/);
    const body = await r.text();
    const value = (pattern: RegExp) => Number(pattern.exec(body)?.[1] ?? NaN);
    assert.ok(value(/retnet_generation_tokens_total (\d+)/) >= 7, body);
    assert.ok(value(/retnet_prompt_tokens_total (\d+)/) >= 3);
    assert.equal(value(/retnet_queue_length (\d+)/), 0);
    assert.equal(value(/retnet_active_sequences (\d+)/), 0);
    assert.ok(value(/retnet_time_to_first_token_seconds_count (\d+)/) >= 1);
    assert.ok(value(/retnet_model_call_seconds_count\{kind="step"\} (\d+)/) >= 6);
    assert.ok(value(/retnet_model_call_seconds_count\{kind="prefill"\} (\d+)/) >= 1);
    assert.ok(value(/retnet_http_requests_total\{route="\/v1\/completions",status="200"\} (\d+)/) >= 1);
  });
});

describe('serve: CORS', () => {
  const ORIGIN = 'http://app.example';
  const preflight = (server: RunningServer) =>
    fetch(`${server.url}/v1/chat/completions`, {
      method: 'OPTIONS',
      headers: {
        origin: ORIGIN,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization, content-type',
      },
    });
  const post = (server: RunningServer, stream: boolean) =>
    fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      headers: { origin: ORIGIN, authorization: 'Bearer k', 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'a', max_tokens: 2, stream }),
    });

  it('off by default: no CORS headers, the preflight is not allowed', async () => {
    const server = await serve(retnet(), { apiKey: 'k' });
    try {
      const p = await preflight(server);
      assert.notEqual(p.status, 204);
      assert.equal(p.headers.get('access-control-allow-origin'), null);
      const r = await post(server, false);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('access-control-allow-origin'), null);
    } finally {
      await server.close();
    }
  });

  it('with an allowed origin: the preflight passes without the key, responses (streamed too) carry the header', async () => {
    const server = await serve(retnet(), { apiKey: 'k', corsOrigins: [ORIGIN] });
    try {
      const p = await preflight(server);
      assert.equal(p.status, 204);
      assert.equal(p.headers.get('access-control-allow-origin'), ORIGIN);
      assert.match(p.headers.get('access-control-allow-headers') ?? '', /authorization/);
      for (const stream of [false, true]) {
        const r = await post(server, stream);
        assert.equal(r.status, 200);
        assert.equal(r.headers.get('access-control-allow-origin'), ORIGIN, `stream: ${stream}`);
        await r.text();
      }
      const other = await fetch(`${server.url}/health`, { headers: { origin: 'http://evil.example' } });
      assert.equal(other.headers.get('access-control-allow-origin'), null);
    } finally {
      await server.close();
    }
  });
});
