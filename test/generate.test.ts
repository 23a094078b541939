// Generation: the sampler, UTF-8-safe detokenisation, stop strings, and generate() over a batch — decoding equals
// greedy argmax over the full forward logits, rows finish independently, cancellation, the event loop keeps turning
// between steps, and a long generation holds tensor memory flat.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { noGrad } from '../src/autograd/tape.js';
import { ConfigError } from '../src/errors.js';
import { DecodeBatch } from '../src/generate/batch.js';
import { generate } from '../src/generate/generate.js';
import { STEP_PREFILL_COST, Scheduler } from '../src/generate/scheduler.js';
import { Sampler, argmax, logSoftmaxTop, samplingSettings } from '../src/generate/sampler.js';
import { Sequence, type GenerationEvent, type GenerationRequest } from '../src/generate/sequence.js';
import { IncrementalDetokenizer, StopMatcher } from '../src/generate/text.js';
import type { CausalLM, DecodeState } from '../src/models/lm.js';
import { createModel } from '../src/models/registry.js';
import type { RetNetModel } from '../src/models/retnet/model.js';
import { Rng } from '../src/tensor/random.js';
import { tidy } from '../src/tensor/scope.js';
import { ByteTokenizer } from '../src/tokenizer/tokenizer.js';
import { assertClose, ref } from './helpers.js';
import { ContinuingToyLM, ScriptedLM, ToyLM } from './toy-lm.js';

const tok = new ByteTokenizer();
const utf8 = (s: string) => Array.from(new TextEncoder().encode(s));

function sampler(opts: Parameters<typeof samplingSettings>[0]): Sampler {
  return new Sampler(samplingSettings(opts));
}

function frequencies(s: Sampler, logits: number[], draws: number, seen = new Set<number>()): number[] {
  const counts = new Array<number>(logits.length).fill(0);
  for (let i = 0; i < draws; i++) counts[s.sample(logits, seen)]!++;
  return counts.map((c) => c / draws);
}

function softmax(xs: number[], temperature = 1): number[] {
  const m = Math.max(...xs);
  const e = xs.map((x) => Math.exp((x - m) / temperature));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
}

/** Everything generate() produced, per request: tokens, text (token texts + end text) and the end event. */
async function collect(events: AsyncIterable<GenerationEvent>, n: number) {
  const out = Array.from({ length: n }, () => ({
    tokens: [] as number[],
    text: '',
    end: null as GenerationEvent | null,
  }));
  for await (const e of events) {
    const o = out[e.index]!;
    assert.equal(o.end, null, `event for sequence ${e.index} after its end`);
    o.text += e.text;
    if (e.type === 'token') o.tokens.push(e.token);
    else o.end = e;
  }
  return out;
}

/** Asserts each generated token is the argmax of the full forward's logits at the position before it. */
function assertGreedy(model: CausalLM, prompt: number[], generated: number[]): void {
  const all = [...prompt, ...generated];
  const logits = noGrad(() =>
    tidy(() => model.forward(ref.fromData(all.slice(0, -1), [1, all.length - 1], 'int32')).data()),
  );
  const V = model.vocabSize;
  generated.forEach((t, j) => {
    const p = prompt.length - 1 + j;
    assert.equal(t, argmax(logits.subarray(p * V, (p + 1) * V)), `token ${j} (position ${p + 1})`);
  });
}

/**
 * Records the model's prefill and step calls and every turn of the event loop (a self-renewing setImmediate) in one
 * list, to check that nothing runs two model calls without letting the event loop turn.
 */
function watchModelCalls(model: CausalLM): { log: string[]; calls: () => string[]; stop: () => void } {
  const log: string[] = [];
  const prefill = model.prefill.bind(model);
  const step = model.step.bind(model);
  model.prefill = (prompts) => {
    log.push(`prefill ${prompts.length}`);
    return prefill(prompts);
  };
  model.step = (tokens, state) => {
    log.push(`step ${tokens.length}`);
    return step(tokens, state);
  };
  let ticking = true;
  const tick = () => {
    log.push('tick');
    if (ticking) setImmediate(tick);
  };
  setImmediate(tick);
  return { log, calls: () => log.filter((x) => x !== 'tick'), stop: () => (ticking = false) };
}

function assertTurnsBetweenCalls(log: readonly string[]): void {
  for (let i = 1; i < log.length; i++)
    assert.ok(
      log[i] === 'tick' || log[i - 1] === 'tick',
      `${log[i - 1]} then ${log[i]} without the event loop turning`,
    );
}

describe('sampler', () => {
  it('temperature 0 is argmax (first index on ties), whatever top-k / top-p say', () => {
    const s = sampler({ temperature: 0, topK: 2, topP: 0.1, seed: 1 });
    assert.equal(s.sample([0.1, 3, -2, 3], new Set()), 1);
    assert.equal(s.sample([5, 3, -2, 3], new Set()), 0);
  });

  it('draws from softmax(logits / temperature)', () => {
    const logits = [1, 0.5, -1, 2];
    for (const temperature of [1, 0.5, 2]) {
      const f = frequencies(sampler({ temperature, seed: 7 }), logits, 40000);
      softmax(logits, temperature).forEach((p, i) => assert.ok(Math.abs(f[i]! - p) < 0.01, `T=${temperature} i=${i}`));
    }
  });

  it('top-k keeps the k most likely tokens, renormalised', () => {
    const logits = [1, 0.5, -1, 2, 0];
    const f = frequencies(sampler({ topK: 2, seed: 3 }), logits, 40000);
    const p = softmax([2, 1]);
    assert.ok(Math.abs(f[3]! - p[0]!) < 0.01 && Math.abs(f[0]! - p[1]!) < 0.01);
    assert.equal(f[1]! + f[2]! + f[4]!, 0);
  });

  it('top-p keeps the shortest most-likely prefix reaching p', () => {
    const logits = [0.5, 0.3, 0.15, 0.05].map(Math.log);
    const two = frequencies(sampler({ topP: 0.75, seed: 5 }), logits, 40000);
    assert.ok(Math.abs(two[0]! - 0.625) < 0.01 && two[2] === 0 && two[3] === 0);
    const three = frequencies(sampler({ topP: 0.85, seed: 5 }), logits, 40000);
    assert.ok(three[2]! > 0.1 && three[3] === 0);
    assert.deepEqual(frequencies(sampler({ topP: 0.01, seed: 5 }), logits, 100), [1, 0, 0, 0]);
  });

  it('repetition penalty divides positive and multiplies negative logits of seen tokens', () => {
    const s = sampler({ temperature: 0, repetitionPenalty: 2 });
    assert.equal(s.sample([2, 1.9, -1], new Set()), 0);
    assert.equal(s.sample([2, 1.9, -1], new Set([0])), 1); // 2 -> 1
    assert.equal(s.sample([-0.5, -0.6], new Set([0])), 1); // -0.5 -> -1
    const f = frequencies(sampler({ repetitionPenalty: 2, seed: 2 }), [1, 1], 40000, new Set([1]));
    assert.ok(Math.abs(f[0]! - softmax([1, 0.5])[0]!) < 0.01);
  });

  it('presence and frequency penalties subtract once and per occurrence of generated tokens', () => {
    const counts = new Map([[0, 3]]);
    // Token 0 was generated 3 times: its logit 2 becomes 2 − 0.5 − 3·0.2 = 0.9 < 1.
    assert.equal(
      sampler({ temperature: 0, presencePenalty: 0.5, frequencyPenalty: 0.2 }).sample([2, 1], new Set(), counts),
      1,
    );
    assert.equal(
      sampler({ temperature: 0, presencePenalty: 0.5, frequencyPenalty: 0.1 }).sample([2, 1], new Set(), counts),
      0,
    );
    const f = frequencies(sampler({ presencePenalty: 1, seed: 3 }), [1, 1], 40000);
    assert.ok(Math.abs(f[0]! - 0.5) < 0.01, 'no counts, no penalty');
  });

  it('logit bias shifts logits; min-p drops tokens less likely than min_p times the likeliest', () => {
    assert.equal(sampler({ temperature: 0, logitBias: new Map([[2, 5]]) }).sample([2, 1, -2]), 2);
    const probs = [0.5, 0.3, 0.15, 0.05];
    // min_p 0.25: the threshold is 0.125, so 0.05 goes and the rest keep their proportions.
    const f = frequencies(sampler({ minP: 0.25, seed: 8 }), probs.map(Math.log), 40000);
    assert.equal(f[3], 0);
    assert.ok(Math.abs(f[0]! - 0.5 / 0.95) < 0.01 && Math.abs(f[2]! - 0.15 / 0.95) < 0.01, JSON.stringify(f));
    assert.deepEqual(frequencies(sampler({ minP: 0.7, seed: 8 }), probs.map(Math.log), 100), [1, 0, 0, 0]);
  });

  it('logSoftmaxTop: the log-probability and the k likeliest, ties by lower id', () => {
    const logits = [1, 3, 3, -1];
    const z = Math.log(logits.reduce((a, x) => a + Math.exp(x), 0));
    const r = logSoftmaxTop(logits, 0, 2);
    assert.ok(Math.abs(r.logprob - (1 - z)) < 1e-12);
    assert.deepEqual(
      r.top.map((t) => t.token),
      [1, 2],
    );
    assert.ok(Math.abs(r.top[0]!.logprob - (3 - z)) < 1e-12);
    assert.deepEqual(logSoftmaxTop(logits, 3, 0).top, []);
    assert.equal(logSoftmaxTop(logits, 3, 10).top.length, 4);
  });

  it('is reproducible from its seed', () => {
    const draw = (seed: number) =>
      Array.from(
        { length: 50 },
        (
          (s) => () =>
            s.sample([0, 0, 0, 0, 0], new Set())
        )(sampler({ seed })),
      );
    assert.deepEqual(draw(11), draw(11));
    assert.notDeepEqual(draw(11), draw(12));
  });

  it('rejects bad settings, naming the field', () => {
    assert.throws(() => samplingSettings({ temperature: -1 }, 'r'), /r\.temperature must be a number >= 0, got -1/);
    assert.throws(() => samplingSettings({ topK: 1.5 }), /topK must be an integer >= 0/);
    assert.throws(() => samplingSettings({ topP: 0 }), /topP must be a number in \(0, 1\]/);
    assert.throws(() => samplingSettings({ repetitionPenalty: 0 }), /repetitionPenalty/);
    assert.throws(() => samplingSettings({ seed: -3 }), ConfigError);
    assert.throws(() => samplingSettings({ minP: 2 }), /minP must be a number in \[0, 1\]/);
    assert.throws(() => samplingSettings({ presencePenalty: NaN }), /presencePenalty must be a finite number/);
  });
});

describe('incremental text', () => {
  it('releases only whole characters, and the pieces add up to the text', () => {
    const rng = new Rng(4);
    for (let trial = 0; trial < 50; trial++) {
      // Random code points from 1- to 4-byte UTF-8 ranges.
      const ranges = [
        [0x20, 0x7e],
        [0xa0, 0x7ff],
        [0x800, 0xd7ff],
        [0x10000, 0x1faff],
      ] as const;
      const text = String.fromCodePoint(
        ...Array.from({ length: 1 + rng.int(12) }, () => {
          const [lo, hi] = ranges[rng.int(4)]!;
          return lo + rng.int(hi - lo + 1);
        }),
      );
      const d = new IncrementalDetokenizer(tok);
      const pieces = utf8(text).map((b) => d.push(b));
      for (const p of pieces) assert.ok(!p.includes('\uFFFD'), `piece ${JSON.stringify(p)} of ${JSON.stringify(text)}`);
      assert.equal(pieces.join('') + d.flush(), text);
    }
  });

  it('releases invalid bytes as U+FFFD without stalling, and flushes an unfinished character', () => {
    const d = new IncrementalDetokenizer(tok);
    assert.equal([0xff, 0x61].map((b) => d.push(b)).join(''), '\uFFFDa');
    assert.equal(d.push(0xe2), '');
    assert.equal(d.push(0x82), '');
    assert.equal(d.flush(), '\uFFFD');
    // Four continuation bytes cannot be one character: released without waiting for more.
    const e = new IncrementalDetokenizer(tok);
    assert.equal([0x80, 0x80, 0x80, 0x80].map((b) => e.push(b)).join(''), '\uFFFD'.repeat(4));
  });

  it('finds stop strings across pieces and never emits part of one', () => {
    const m = new StopMatcher(['END', '\n\n']);
    assert.deepEqual(m.push('fooE'), { text: 'foo', stopped: false });
    assert.deepEqual(m.push('N'), { text: '', stopped: false });
    assert.deepEqual(m.push('Dbar'), { text: '', stopped: true });
    const n = new StopMatcher(['END']);
    assert.deepEqual(n.push('xE'), { text: 'x', stopped: false });
    assert.deepEqual(n.push('Nx'), { text: 'ENx', stopped: false });
    assert.deepEqual(n.push('EN'), { text: '', stopped: false });
    assert.equal(n.flush(), 'EN');
    assert.deepEqual(new StopMatcher(['b\n', 'a']).push('xb\nya'), { text: 'x', stopped: true });
  });
});

describe('generate', () => {
  const toy = new ToyLM(tok.vocabSize, 8, ref, 'float64', 1);
  const retnet = createModel(
    'retnet',
    'tiny',
    // normEps tiny: the forms differ only by where the group norm's eps enters (spec 5d); without it they agree to
    // rounding, so the argmax comparison tests the generation path, not the forms' eps difference.
    {
      vocabSize: tok.vocabSize,
      embedDim: 16,
      valueDim: 32,
      ffnDim: 32,
      heads: 2,
      layers: 2,
      chunkSize: 4,
      normEps: 1e-300,
    },
    { backend: ref, dtype: 'float64', seed: 5 },
  ) as RetNetModel;

  const transformer = createModel(
    'transformer',
    'tiny',
    { vocabSize: tok.vocabSize, embedDim: 16, ffnDim: 32, heads: 2, layers: 2 },
    { backend: ref, dtype: 'float64', seed: 6 },
  );

  for (const [name, model] of [
    ['toy model', toy],
    ['RetNet (chunkwise prefill, recurrent decode, parallel forward)', retnet],
    ['Transformer (batched prefill, KV-cache decode, full forward)', transformer],
  ] as const)
    it(`greedy decoding of a batch equals argmax over the parallel form's logits: ${name}`, async () => {
      const prompts = ['Hello', 'a', 'The quick brown fox jumps over'].map(utf8);
      const requests = prompts.map((prompt, i) => ({
        prompt,
        maxNewTokens: 6 + 5 * i,
        ignoreEos: true,
        sampling: { temperature: 0 },
      }));
      const before = ref.memory.current;
      const out = await collect(generate(model, tok, requests), requests.length);
      assert.equal(ref.memory.current, before, 'every tensor freed');
      out.forEach((o, i) => {
        assert.equal(o.tokens.length, requests[i]!.maxNewTokens);
        assert.deepEqual(o.end, {
          type: 'end',
          index: i,
          text: o.end!.text,
          finishReason: 'length',
          promptTokens: prompts[i]!.length,
          completionTokens: requests[i]!.maxNewTokens,
        });
        assertGreedy(model, prompts[i]!, o.tokens);
      });
      // Each row alone gives the same tokens as in the batch.
      const alone = await collect(generate(model, tok, [requests[2]!]), 1);
      assert.deepEqual(alone[0]!.tokens, out[2]!.tokens);
    });

  for (const [name, model] of [
    ['RetNet', retnet],
    ['Transformer (KV caches of different capacities)', transformer],
  ] as const)
    it(`a state appended to another decodes as if prefilled together: ${name}`, () => {
      const prompts = ['one', 'x'.repeat(70), 'x'].map(utf8);
      const together = model.prefill(prompts);
      const a = model.prefill(prompts.slice(0, 1));
      const b = model.prefill(prompts.slice(1));
      a.state.append!(b.state);
      assert.deepEqual(a.state.positions, [3, 70, 1]);
      for (const next of [
        [65, 66, 67],
        [68, 69, 70],
      ]) {
        const expected = model.step(next, together.state);
        const got = model.step(next, a.state);
        assertClose(got.data(), expected.data(), 1e-12, 'logits after append');
        expected.dispose();
        got.dispose();
      }
      for (const t of [together.logits, a.logits, b.logits]) t.dispose();
      together.state.dispose();
      a.state.dispose();
    });

  it('keeps per-sequence settings apart: a seeded row samples the same in any batch', async () => {
    const seeded: GenerationRequest = {
      prompt: 'xy',
      maxNewTokens: 12,
      ignoreEos: true,
      sampling: { temperature: 1.3, topK: 50, seed: 9 },
    };
    const others: GenerationRequest[] = [
      { prompt: 'abc', maxNewTokens: 3, sampling: { temperature: 0 } },
      { prompt: 'q', maxNewTokens: 20, sampling: { temperature: 0.7, topP: 0.9, repetitionPenalty: 1.3, seed: 1 } },
    ];
    const alone = await collect(generate(retnet, tok, [seeded]), 1);
    const mixed = await collect(generate(retnet, tok, [others[0]!, seeded, others[1]!]), 3);
    assert.deepEqual(mixed[1]!.tokens, alone[0]!.tokens);
    const reseeded = await collect(
      generate(retnet, tok, [{ ...seeded, sampling: { ...seeded.sampling, seed: 10 } }]),
      1,
    );
    assert.notDeepEqual(reseeded[0]!.tokens, alone[0]!.tokens);
  });

  it('rows finish independently and leave the decode state as they do', async () => {
    const model = new ScriptedLM(tok.vocabSize, utf8('abcdefghij'), ref);
    const batches: number[] = [];
    const step = model.step.bind(model);
    model.step = (tokens, state) => {
      batches.push(tokens.length);
      return step(tokens, state);
    };
    const requests = [4, 1, 7, 2].map((maxNewTokens) => ({ prompt: 'p', maxNewTokens }));
    const ends: number[] = [];
    for await (const e of generate(model, tok, requests)) if (e.type === 'end') ends.push(e.index);
    assert.deepEqual(ends, [1, 3, 0, 2]);
    // After the prefill (token 1 of each; the 1-token row ends), one step per further token for the rows still going.
    assert.deepEqual(batches, [3, 2, 2, 1, 1, 1]);
  });

  it('streams UTF-8-safe text, stops at stop strings and at end-of-text', async () => {
    const text = 'héllo wörld €😀 STOP more';
    const model = new ScriptedLM(tok.vocabSize, [...utf8(text), tok.eosId], ref);
    const out = await collect(
      generate(model, tok, [
        { prompt: 'x', maxNewTokens: 100 },
        { prompt: 'y', maxNewTokens: 100, stop: ['STOP', 'zzz'] },
        { prompt: 'z', maxNewTokens: 8 },
        { prompt: 'w', maxNewTokens: 100, ignoreEos: true },
      ]),
      4,
    );
    const pieces: string[] = [];
    for await (const e of generate(model, tok, [{ prompt: 'x', maxNewTokens: 100 }])) pieces.push(e.text);
    assert.ok(pieces.every((p) => !p.includes('\uFFFD')));
    assert.equal(out[0]!.text, text);
    assert.equal((out[0]!.end as { finishReason: string }).finishReason, 'stop');
    assert.equal(out[0]!.tokens.length, utf8(text).length + 1);
    assert.equal(out[1]!.text, 'héllo wörld €😀 ');
    assert.equal((out[1]!.end as { finishReason: string }).finishReason, 'stop');
    assert.equal(out[2]!.text, 'héllo w'); // 8 bytes, the 'é' counts two
    assert.equal((out[2]!.end as { finishReason: string }).finishReason, 'length');
    assert.equal(out[3]!.tokens.length, 100);
    assert.ok(out[3]!.text.startsWith(`${text}${text}`));
  });

  it("eosIds replace the end-of-text token: any of them ends the sequence, the tokenizer's alone then does not", async () => {
    const script = [...utf8('ab'), tok.eosId, ...utf8('c'), 7, ...utf8('de')];
    const model = new ScriptedLM(tok.vocabSize, script, ref);
    const out = await collect(
      generate(model, tok, [
        { prompt: 'x', maxNewTokens: 20 },
        { prompt: 'x', maxNewTokens: 20, eosIds: [7] },
        { prompt: 'x', maxNewTokens: 20, eosIds: [7, tok.eosId] },
      ]),
      3,
    );
    assert.deepEqual(
      out.map((o) => [o.text, o.tokens.length]),
      [
        ['ab', 3],
        ['abc', 5], // the tokenizer's end-of-text decodes to nothing
        ['ab', 3],
      ],
    );
    assert.throws(() => generate(model, tok, [{ prompt: 'x', maxNewTokens: 1, eosIds: [tok.vocabSize] }]), /eosIds/);
  });

  it('a signal cancels every sequence; a request signal cancels its own; breaking out frees the state', async () => {
    const before = ref.memory.current;
    const all = new AbortController();
    const one = new AbortController();
    let tokens = 0;
    const reasons: string[] = [];
    const requests: GenerationRequest[] = [
      { prompt: 'a', maxNewTokens: 10000, ignoreEos: true, signal: one.signal },
      { prompt: 'b', maxNewTokens: 10000, ignoreEos: true },
    ];
    for await (const e of generate(retnet, tok, requests, { signal: all.signal })) {
      if (e.type === 'end') reasons[e.index] = e.finishReason;
      else if (++tokens === 10) one.abort();
      else if (tokens === 30) all.abort();
      assert.ok(tokens < 60, 'cancellation takes effect at the next step');
    }
    assert.deepEqual(reasons, ['abort', 'abort']);
    assert.equal(ref.memory.current, before);
    for await (const e of generate(retnet, tok, requests.slice(1))) if (e.type === 'token') break;
    assert.equal(ref.memory.current, before);
  });

  it('yields to the event loop between model calls', async () => {
    const model = new ToyLM(tok.vocabSize, 4, ref);
    const { log, calls, stop } = watchModelCalls(model);
    await collect(
      generate(model, tok, [
        { prompt: 'hi', maxNewTokens: 20, ignoreEos: true },
        { prompt: 'x', maxNewTokens: 9, ignoreEos: true },
      ]),
      2,
    );
    stop();
    assert.equal(calls().length, 1 + 19);
    assertTurnsBetweenCalls(log);
  });

  it('a long generation (20000 tokens) holds tensor memory flat', async () => {
    const base = ref.memory.current;
    const during = new Set<number>();
    let n = 0;
    const request = { prompt: 'long', maxNewTokens: 20000, ignoreEos: true, sampling: { seed: 1 } };
    for await (const e of generate(retnet, tok, [request]))
      if (e.type === 'token' && ++n < 20000) during.add(ref.memory.current);
    assert.equal(n, 20000);
    assert.equal(during.size, 1, `tensor memory took ${during.size} values: ${[...during].slice(0, 5).join(', ')}`);
    assert.equal([...during][0]! - base, 2 * (2 * 8 * 16 + 2) * 8, 'only the recurrent state (2 layers) is held');
    assert.equal(ref.memory.current, base);
  });

  it('validates requests before generating, naming the request and field', () => {
    const bad = (r: Partial<GenerationRequest>) => () =>
      generate(toy, tok, [
        { prompt: 'ok', maxNewTokens: 1 },
        { prompt: 'x', maxNewTokens: 4, ...r } as GenerationRequest,
      ]);
    assert.throws(bad({ maxNewTokens: -1 }), /requests\[1\]\.maxNewTokens must be an integer >= 0, got -1/);
    assert.throws(bad({ logprobs: 21 }), /requests\[1\]\.logprobs must be an integer in \[0, 20\], got 21/);
    assert.throws(bad({ prompt: [] }), /requests\[1\]\.prompt is an empty list/);
    assert.throws(bad({ prompt: [3, 999] }), /requests\[1\]\.prompt token 1 \(999\) is not an id .* \[0, 259\)/);
    assert.throws(bad({ stop: [''] }), /requests\[1\]\.stop must be an array of non-empty strings/);
    assert.throws(bad({ sampling: { topP: 2 } }), /requests\[1\]\.sampling\.topP/);
  });

  it('an empty text prompt starts from the end-of-text token', async () => {
    const s = new Sequence(0, { prompt: '', maxNewTokens: 1 }, tok, toy.vocabSize);
    assert.deepEqual(s.promptIds, [tok.eosId]);
    const batch = new DecodeBatch(toy, tok, [s]);
    const events = await batch.start();
    assert.equal(events.length, 2);
    batch.dispose();
  });
});

describe('scheduler', () => {
  for (const [name, makeModel, steps] of [
    ['into one batch (state.append)', () => new ToyLM(tok.vocabSize, 4, ref), 7],
    ['as batches of their own (no state.append)', () => new ScriptedLM(tok.vocabSize, utf8('abc'), ref), 7 + 5],
  ] as const)
    it(`prefills requests admitted together in one call, decodes them ${name}, and yields between model calls`, async () => {
      const model: CausalLM = makeModel();
      const { log, calls, stop } = watchModelCalls(model);
      const before = ref.memory.current;
      const scheduler = new Scheduler(model, tok, { maxActive: 8, maxQueued: 8 });
      const request = (maxNewTokens: number) => ({ prompt: 'abc', maxNewTokens, ignoreEos: true });
      const drain = async (events: AsyncIterable<GenerationEvent>) => {
        let n = 0;
        for await (const e of events) if (e.type === 'token') n++;
        return n;
      };
      const first = [5, 8, 3].map((n) => drain(scheduler.submit(request(n))));
      while (scheduler.activeCount < 3) await new Promise((resolve) => setImmediate(resolve));
      const late = drain(scheduler.submit(request(6)));
      assert.deepEqual(await Promise.all([...first, late]), [5, 8, 3, 6]);
      stop();
      // The three submitted together are prefilled in one call and decode as one batch: 7 steps for the longest (8
      // tokens). The late one (6 tokens) has a prefill of its own and, joined, arrives within the first batch's steps;
      // apart, it takes its own 5.
      assert.deepEqual(calls()[0], 'prefill 3');
      assert.deepEqual(
        calls().filter((c) => c.startsWith('prefill')),
        ['prefill 3', 'prefill 1'],
      );
      assert.equal(calls().filter((c) => c.startsWith('step')).length, steps);
      if (name.startsWith('into')) assert.ok(calls().includes('step 4'), 'all four rows in one step');
      assertTurnsBetweenCalls(log);
      assert.equal(scheduler.activeCount, 0);
      assert.equal(ref.memory.current, before);
    });

  for (const continuing of [true, false])
    it(`prefills a long prompt in pieces between the decode steps of the running batch (${continuing ? 'prefill continues a state' : 'pieces fed through step()'}); the tokens do not change`, async () => {
      const model = continuing ? new ContinuingToyLM(tok.vocabSize, 4, ref) : new ToyLM(tok.vocabSize, 4, ref);
      // The calls as the scheduler makes them: prefill (rows, tokens, continued?) and step (rows).
      const calls: string[] = [];
      const prefill = model.prefill.bind(model) as ContinuingToyLM['prefill'];
      const step = model.step.bind(model);
      let inPrefill = false;
      model.prefill = (prompts: readonly (readonly number[])[], opts: { state?: DecodeState } = {}) => {
        calls.push(`prefill ${prompts.map((p) => p.length).join('+')}${opts.state ? ' (continued)' : ''}`);
        inPrefill = true;
        try {
          return prefill(prompts, opts);
        } finally {
          inPrefill = false;
        }
      };
      model.step = (tokens, state) => {
        if (!inPrefill) calls.push(`step ${tokens.length}`);
        return step(tokens, state);
      };
      const before = ref.memory.current;
      const scheduler = new Scheduler(model, tok, { maxActive: 4, maxQueued: 4, prefillChunk: 8 });
      const tokens = async (events: AsyncIterable<GenerationEvent>) => {
        const out: number[] = [];
        for await (const e of events) if (e.type === 'token') out.push(e.token);
        return out;
      };
      const long = 'a long prompt of thirty-one toks';
      const greedy = { temperature: 0 };
      // Two rows decoding (steps of 2), so that a piece fed through step() (1 row) shows apart from them.
      const running = ['x', 'y'].map((prompt) =>
        tokens(scheduler.submit({ prompt, maxNewTokens: 30, ignoreEos: true })),
      );
      while (!calls.includes('step 2')) await new Promise((resolve) => setImmediate(resolve));
      const late = await tokens(scheduler.submit({ prompt: long, maxNewTokens: 5, ignoreEos: true, sampling: greedy }));
      await Promise.all(running);
      assert.equal(ref.memory.current, before, 'every piece state freed');
      const at = calls.indexOf('step 2');
      // 32 tokens: a fresh prefill of 8, then the other 24 in pieces, each followed by a decode step of the two
      // running rows (of all three after the last). A continuing prefill takes pieces of 8 in one call; step() takes
      // 8 / STEP_PREFILL_COST tokens (at least 1) per piece, one call each.
      const size = continuing ? 8 : Math.max(1, Math.floor(8 / STEP_PREFILL_COST));
      const expected = ['prefill 8', 'step 2'];
      for (let done = 8; done < 32; done += size) {
        expected.push(...(continuing ? [`prefill ${size} (continued)`] : Array<string>(size).fill('step 1')));
        expected.push(done + size < 32 ? 'step 2' : 'step 3');
      }
      assert.deepEqual(calls.slice(at + 1, at + 1 + expected.length), expected);
      const alone = await collect(
        generate(new ToyLM(tok.vocabSize, 4, ref), tok, [
          { prompt: long, maxNewTokens: 5, ignoreEos: true, sampling: greedy },
        ]),
        1,
      );
      assert.deepEqual(late, alone[0]!.tokens);
    });

  it('RetNet continues a state in prefill: a long prompt prefilled in pieces by the scheduler decodes as alone', async () => {
    const model = createModel(
      'retnet',
      'tiny',
      { vocabSize: tok.vocabSize, embedDim: 16, valueDim: 32, ffnDim: 32, heads: 2, layers: 2, chunkSize: 4 },
      { backend: ref, dtype: 'float64', seed: 9 },
    ) as RetNetModel;
    assert.equal(model.continuesPrefill, true);
    const prefills: number[][] = [];
    const prefill = model.prefill.bind(model);
    model.prefill = (prompts, opts = {}) => {
      prefills.push(prompts.map((p) => p.length));
      return prefill(prompts, opts);
    };
    const long = 'a prompt of thirty-seven bytes, or so';
    const request = { prompt: long, maxNewTokens: 6, ignoreEos: true, sampling: { temperature: 0 } };
    const scheduler = new Scheduler(model, tok, { maxActive: 4, maxQueued: 4, prefillChunk: 8 });
    const pieces: number[] = [];
    for await (const e of scheduler.submit(request)) if (e.type === 'token') pieces.push(e.token);
    assert.deepEqual(prefills, [[8], [8], [8], [8], [long.length - 32]], 'one prefill call per piece');
    prefills.length = 0;
    const alone = await collect(generate(model, tok, [request]), 1);
    assert.deepEqual(prefills, [[long.length]]);
    assert.deepEqual(pieces, alone[0]!.tokens);
    model.dispose();
  });

  it('a failing model call fails the streams it was serving and leaves the scheduler usable', async () => {
    const model = new ToyLM(tok.vocabSize, 4, ref);
    const before = ref.memory.current;
    const step = model.step.bind(model);
    let failNext = true;
    model.step = (tokens, state) => {
      if (failNext) {
        failNext = false;
        throw new Error('kernel exploded');
      }
      return step(tokens, state);
    };
    const scheduler = new Scheduler(model, tok, { maxActive: 4, maxQueued: 4 });
    const drain = async (events: AsyncIterable<GenerationEvent>) => {
      let n = 0;
      for await (const e of events) if (e.type === 'token') n++;
      return n;
    };
    await assert.rejects(drain(scheduler.submit({ prompt: 'a', maxNewTokens: 5, ignoreEos: true })), /kernel exploded/);
    assert.equal(ref.memory.current, before, 'the failed batch freed its state');
    assert.equal(await drain(scheduler.submit({ prompt: 'a', maxNewTokens: 5, ignoreEos: true })), 5);
  });

  it('refuses a full queue, cancels a queued request at once, and shuts down', async () => {
    const model = new ToyLM(tok.vocabSize, 4, ref);
    const scheduler = new Scheduler(model, tok, { maxActive: 1, maxQueued: 1 });
    const running = scheduler.submit({ prompt: 'a', maxNewTokens: 100000, ignoreEos: true });
    while (scheduler.activeCount === 0) await new Promise((resolve) => setImmediate(resolve));
    const cancel = new AbortController();
    const queued = scheduler.submit({ prompt: 'b', maxNewTokens: 5, signal: cancel.signal });
    assert.throws(() => scheduler.submit({ prompt: 'c', maxNewTokens: 5 }), /1 requests are already waiting/);
    assert.throws(() => scheduler.submit({ prompt: [999], maxNewTokens: 5 }), /request\.prompt token 0 \(999\)/);
    cancel.abort();
    assert.equal(scheduler.queuedCount, 0);
    const ends: string[] = [];
    for await (const e of queued) if (e.type === 'end') ends.push(e.finishReason);
    assert.deepEqual(ends, ['abort']);
    let tokens = 0;
    const consume = (async () => {
      for await (const e of running)
        if (e.type === 'token') tokens++;
        else ends.push(e.finishReason);
    })();
    while (tokens < 3) await new Promise((resolve) => setImmediate(resolve));
    await scheduler.shutdown(0);
    await consume;
    assert.deepEqual(ends, ['abort', 'abort']);
    assert.ok(tokens < 100000);
    assert.throws(() => scheduler.submit({ prompt: 'a', maxNewTokens: 1 }), /shutting down/);
  });
});
