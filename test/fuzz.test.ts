// A seeded fuzz test of everything a user hands us: a model directory's safetensors header, config.json and
// tokenizer.json, and the command line's flags. Every mutated input must either work or fail with one of our error
// classes whose message names the input (the file, or the flag) -- never another exception (a TypeError, a RangeError,
// a native abort, which would kill this process), never a stack trace on stderr, and never a runaway allocation (the
// resident set is checked after every case).
//
// RETNET_FUZZ_SECONDS sets the time budget of each part (default 12 s, four parts: about a minute in CI);
// RETNET_FUZZ_SEED another seed. A failure prints the seed and the case so it can be replayed.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

import { RetnetError } from '../src/errors.js';
import { loadModelDir, saveModelDir } from '../src/io/model-dir.js';
import { createModel } from '../src/models/registry.js';
import { Rng } from '../src/tensor/random.js';
import { ByteTokenizer } from '../src/tokenizer/tokenizer.js';

const SECONDS = Number(process.env.RETNET_FUZZ_SECONDS ?? 12);
const SEED = Number(process.env.RETNET_FUZZ_SEED ?? 20261201);
/** Resident set allowed above the start of the test (a tiny model and its copies need a few MB). */
const RSS_SLACK = 768 * 2 ** 20;

const dir = mkdtempSync(join(tmpdir(), 'retnet-fuzz-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const good = join(dir, 'good');
{
  const model = createModel('retnet', 'tiny', { vocabSize: 259 }, { seed: 5 });
  saveModelDir(good, model, new ByteTokenizer());
  model.dispose();
}
const goodFiles = Object.fromEntries(readdirSync(good).map((f) => [f, readFileSync(join(good, f))]));
const rss0 = process.memoryUsage().rss;

/** Values that have broken parsers before: out of range, wrong type, non-finite, huge. */
const NASTY: unknown[] = [
  -1,
  0,
  1,
  2.5,
  3,
  65536,
  2 ** 31,
  2 ** 32,
  2 ** 53,
  1e308,
  -0,
  '2',
  '',
  'x',
  null,
  true,
  false,
  [],
  [1, 2],
  {},
  { a: 1 },
  '\u0000',
  'NaN',
];

const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.int(xs.length)]!;

/** A model directory with one file replaced. */
function caseDir(name: string, file: string, contents: Buffer | string): string {
  const d = join(dir, name);
  rmSync(d, { recursive: true, force: true });
  mkdirSync(d);
  for (const f of Object.keys(goodFiles)) if (f !== file) copyFileSync(join(good, f), join(d, f));
  writeFileSync(join(d, file), contents);
  return d;
}

/** Loads a directory: success or a RetnetError naming the file; anything else fails the test. */
function expectCleanLoad(d: string, file: string, what: string): void {
  try {
    const { model } = loadModelDir(d);
    model.dispose();
  } catch (e) {
    if (!(e instanceof RetnetError))
      assert.fail(`seed ${SEED}, ${what}: ${(e as Error).name} instead of a RetnetError: ${(e as Error).message}`);
    assert.ok(e.message.includes(file), `seed ${SEED}, ${what}: the message does not name ${file}: ${e.message}`);
  }
  const rss = process.memoryUsage().rss;
  assert.ok(rss - rss0 < RSS_SLACK, `seed ${SEED}, ${what}: resident set grew by ${((rss - rss0) / 2 ** 20) | 0} MiB`);
}

/** Runs `fn(rng, i)` for case after case until the time budget is spent; returns the number of cases. */
function fuzz(part: string, fn: (rng: Rng, i: number) => void): number {
  const rng = new Rng(SEED ^ [...part].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 7));
  const end = Date.now() + SECONDS * 1000;
  let i = 0;
  for (; Date.now() < end; i++) fn(rng, i);
  return i;
}

// ---- safetensors: the header's structure and the byte layout

const st = goodFiles['model.safetensors']!;
const headerLength = Number(st.readBigUInt64LE(0));
const header = JSON.parse(st.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, Record<string, unknown>>;
const names = Object.keys(header).filter((n) => n !== '__metadata__');

function withHeader(h: unknown, text?: string, lengthDelta = 0): Buffer {
  const json = Buffer.from(text ?? JSON.stringify(h), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Math.max(0, json.length + lengthDelta)));
  return Buffer.concat([len, json, st.subarray(8 + headerLength)]);
}

function mutateSafetensors(rng: Rng): { bytes: Buffer; what: string } {
  const h = structuredClone(header) as Record<string, Record<string, unknown>>;
  const name = pick(rng, names);
  const kind = rng.int(12);
  switch (kind) {
    case 0:
      h[name]!.dtype = pick(rng, ['F8', 'f32', 'I64', 'U8', 'BF16', 'F16', 7, null]);
      return { bytes: withHeader(h), what: `dtype of ${name}` };
    case 1: {
      const shape = [...(h[name]!.shape as number[])];
      shape[rng.int(Math.max(1, shape.length))] = pick(rng, NASTY) as number;
      h[name]!.shape = rng.uniform() < 0.2 ? pick(rng, NASTY) : shape;
      return { bytes: withHeader(h), what: `shape of ${name}` };
    }
    case 2: {
      const off = [...(h[name]!.data_offsets as number[])];
      off[rng.int(2)]! += pick(rng, [-4, -1, 1, 4, 2 ** 31, -(2 ** 31)]);
      h[name]!.data_offsets = rng.uniform() < 0.2 ? pick(rng, NASTY) : off;
      return { bytes: withHeader(h), what: `data_offsets of ${name}` };
    }
    case 3:
      (h as Record<string, unknown>)[name] = pick(rng, [null, 1, 'x', [], {}]);
      return { bytes: withHeader(h), what: `entry ${name} replaced` };
    case 4:
      delete h[name]![pick(rng, ['dtype', 'shape', 'data_offsets'])];
      return { bytes: withHeader(h), what: `a field of ${name} removed` };
    case 5:
      return { bytes: withHeader(h, undefined, pick(rng, [-1, 1, -8, 8, 1 << 20])), what: 'header length off' };
    case 6: {
      const b = withHeader(h);
      return { bytes: b.subarray(0, rng.int(b.length)), what: 'truncated file' };
    }
    case 7:
      return { bytes: Buffer.concat([withHeader(h), Buffer.alloc(1 + rng.int(64), 1)]), what: 'trailing bytes' };
    case 8: {
      const text = JSON.stringify(h);
      const dup = `{"${name}":${JSON.stringify(h[name])},${text.slice(1)}`;
      return { bytes: withHeader(null, dup), what: `duplicate ${name}` };
    }
    case 9:
      (h as Record<string, unknown>).__metadata__ = pick(rng, [{ format: 1 }, { a: null }, [], 'x', { b: {} }]);
      return { bytes: withHeader(h), what: 'metadata values' };
    case 10: {
      const b = Buffer.from(withHeader(h));
      for (let n = 1 + rng.int(4); n > 0; n--) b[8 + rng.int(headerLength)] = rng.int(256);
      return { bytes: b, what: 'header bytes flipped' };
    }
    default: {
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(pick(rng, [0n, 2n ** 63n, 2n ** 40n, BigInt(st.length)]));
      return { bytes: Buffer.concat([len, st.subarray(8)]), what: 'header length field' };
    }
  }
}

// ---- config.json

const config = JSON.parse(goodFiles['config.json']!.toString('utf8')) as Record<string, unknown>;
const configKeys = Object.keys(config);

function mutateConfig(rng: Rng): { text: string; what: string } {
  const c = structuredClone(config);
  const key = pick(rng, configKeys);
  const r = rng.int(10);
  if (r === 0) {
    delete c[key];
    return { text: JSON.stringify(c), what: `${key} removed` };
  }
  if (r === 1) return { text: JSON.stringify(c).replace(`"${key}":`, `"${key}": 1e400, "x${key}":`), what: `1e400` };
  if (r === 2) return { text: JSON.stringify(c).slice(0, rng.int(40)), what: 'truncated' };
  const value = pick(rng, NASTY);
  c[key] = value;
  return { text: JSON.stringify(c), what: `${key} = ${JSON.stringify(value)}` };
}

// ---- tokenizer.json

const tokenizerJSON = JSON.parse(goodFiles['tokenizer.json']!.toString('utf8')) as Record<string, unknown>;

function mutateTokenizer(rng: Rng): { text: string; what: string } {
  const t = structuredClone(tokenizerJSON) as Record<string, Record<string, unknown> | unknown>;
  const r = rng.int(8);
  switch (r) {
    case 0:
      t.added_tokens = pick(rng, [null, 1, 'x', [null], [{}], [{ id: -1, content: 'x' }], [{ id: 1e9, content: 'x' }]]);
      return { text: JSON.stringify(t), what: 'added_tokens' };
    case 1:
      t.model = pick(rng, [null, 1, {}, { type: 'BPE' }, { type: 'Unigram', vocab: [] }, { type: 'WordPiece' }]);
      return { text: JSON.stringify(t), what: 'model' };
    case 2: {
      const model = (t.model ?? {}) as Record<string, unknown>;
      model.vocab = pick(rng, [{}, null, [], { a: -1 }, { a: 'x' }, { a: 2 ** 40 }]);
      t.model = model;
      return { text: JSON.stringify(t), what: 'model.vocab' };
    }
    case 3: {
      const model = (t.model ?? {}) as Record<string, unknown>;
      model.merges = pick(rng, [null, 1, ['a'], [['a']], ['a b c'], [[1, 2]]]);
      t.model = model;
      return { text: JSON.stringify(t), what: 'model.merges' };
    }
    case 4:
      t[pick(rng, ['normalizer', 'pre_tokenizer', 'decoder', 'post_processor'])] = pick(rng, [
        1,
        'x',
        [],
        { type: 'Nope' },
      ]);
      return { text: JSON.stringify(t), what: 'a pipeline stage' };
    case 5:
      return { text: JSON.stringify(t).slice(0, rng.int(200)), what: 'truncated' };
    case 6:
      return { text: pick(rng, ['null', '[]', '1', '"x"', '{}']), what: 'not a tokenizer object' };
    default:
      delete t[pick(rng, Object.keys(t))];
      return { text: JSON.stringify(t), what: 'a key removed' };
  }
}

// ---- the command line, in process (main() returns the exit code; a non-RetnetError would throw out of it)

const FLAG_VALUES = [
  '',
  ' ',
  '-0',
  '-1',
  '0',
  '1',
  '1e9',
  'NaN',
  'Infinity',
  '0x10',
  '99999999999999999999',
  '2.5',
  'x',
];

function mutateArgs(rng: Rng): string[] {
  const tokens = pick(rng, ['1,2,3', '', '1,,2', '-1', '300', '1e3', 'a', '1,2,99999999999']);
  const flags: string[][] = [
    ['--form', pick(rng, ['parallel', 'chunkwise', 'recurrent', 'x', ''])],
    ['--chunk-size', pick(rng, FLAG_VALUES)],
    ['--dtype', pick(rng, ['float32', 'float64', 'bfloat16', 'x'])],
    ['--max-tokens', pick(rng, FLAG_VALUES)],
    ['--temperature', pick(rng, FLAG_VALUES)],
    ['--top-p', pick(rng, FLAG_VALUES)],
    ['--seed', pick(rng, FLAG_VALUES)],
    ['--bogus-flag', 'x'],
  ];
  const chosen = flags.filter(() => rng.uniform() < 0.3).flat();
  if (rng.uniform() < 0.5) return ['logits', '--model', good, '--tokens', tokens, ...chosen.filter((_, i) => i < 6)];
  const prompt = pick(rng, ['The', '', '\u0000', 'é'.repeat(10)]);
  return [
    'generate',
    '--model',
    good,
    '--prompt',
    prompt,
    '--max-tokens',
    pick(rng, ['0', '1', '3', '', '-1']),
    ...chosen,
  ];
}

describe(`fuzzing the inputs (seed ${SEED}, ${SECONDS} s per part)`, () => {
  it('mutated safetensors headers and layouts', () => {
    const n = fuzz('safetensors', (rng, i) => {
      const { bytes, what } = mutateSafetensors(rng);
      expectCleanLoad(caseDir(`st-${i % 4}`, 'model.safetensors', bytes), 'model.safetensors', `case ${i}: ${what}`);
    });
    assert.ok(n > 10, `only ${n} cases ran`);
  });

  it('mutated config.json files', () => {
    const n = fuzz('config', (rng, i) => {
      const { text, what } = mutateConfig(rng);
      expectCleanLoad(caseDir(`cfg-${i % 4}`, 'config.json', text), 'config.json', `case ${i}: ${what}`);
    });
    assert.ok(n > 10, `only ${n} cases ran`);
  });

  it('mutated tokenizer.json files', () => {
    const n = fuzz('tokenizer', (rng, i) => {
      const { text, what } = mutateTokenizer(rng);
      expectCleanLoad(caseDir(`tok-${i % 4}`, 'tokenizer.json', text), 'tokenizer.json', `case ${i}: ${what}`);
    });
    assert.ok(n > 10, `only ${n} cases ran`);
  });

  it('mutated command lines', () => {
    // In a child process (test/fuzz-cli-worker.ts): the CLI writes to stdout, which carries this test's report.
    const rng = new Rng(SEED);
    const cases = Array.from({ length: Math.max(8, Math.round(SECONDS * 2)) }, () => mutateArgs(rng));
    const casesPath = join(dir, 'cli-cases.json');
    const resultsPath = join(dir, 'cli-results.jsonl');
    writeFileSync(casesPath, JSON.stringify(cases));
    writeFileSync(resultsPath, '');
    const worker = join(import.meta.dirname, 'fuzz-cli-worker.ts');
    const child = spawnSync(process.execPath, ['--import', 'tsx', worker, casesPath, resultsPath], {
      encoding: 'utf8',
      timeout: (SECONDS + 120) * 1000,
    });
    const lines = readFileSync(resultsPath, 'utf8').trim().split('\n').filter(Boolean);
    const results = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => 'case' in r);
    const last = cases[results.length];
    assert.equal(
      child.status,
      0,
      `the worker died (${child.signal ?? child.status}) at retnet ${last?.join(' ')}:\n${child.stderr}`,
    );
    assert.equal(results.length, cases.length);
    for (const r of results) {
      const cmd = `seed ${SEED}: retnet ${cases[r.case as number]!.join(' ')}`;
      const stderr = r.stderr as string;
      assert.equal(r.threw, null, `${cmd}: threw ${String(r.threw)}`);
      assert.ok([0, 1, 2].includes(r.code as number), `${cmd}: exit code ${String(r.code)}`);
      assert.doesNotMatch(stderr, /^\s+at .+:\d+:\d+\)?$/m, `${cmd}: stack trace:\n${stderr}`);
      if (r.code !== 0) assert.ok(stderr.trim().length > 0, `${cmd}: failed without a message`);
      assert.ok((r.rss as number) < rss0 + RSS_SLACK * 2, `${cmd}: resident set ${(r.rss as number) >> 20} MiB`);
    }
  });
});
