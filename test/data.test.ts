// The data pipeline: sources, bad-data reports with file and line, the deterministic split, shards + manifest and
// their reuse, and the streaming batch sampler with a serialisable position.
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { Rng } from '../src/tensor/random.js';
import { ByteTokenizer } from '../src/tokenizer/tokenizer.js';
import { brownFiles, untagSentence } from '../src/train/brown.js';
import { BatchSampler, ShardReader, prepareData, sequentialBatches, type PreparedData } from '../src/train/data.js';
import { DataError, SEGMENT_CHARS, readSegments } from '../src/train/sources.js';
import { tempDir } from './temp.js';

const bytes = new ByteTokenizer();

function tmp(): string {
  return tempDir('retnet-data-');
}

/** Numbered lines of text, `n` of them. */
function lines(n: number, tag = 'line'): string {
  return Array.from({ length: n }, (_, i) => `${tag} ${i}: the quick brown fox jumps over the lazy dog.\n`).join('');
}

function allTokens(data: PreparedData, split: 'train' | 'val'): number[] {
  const reader = new ShardReader(data.dir, data.manifest, split);
  const out: number[] = [];
  data.manifest.shards
    .filter((s) => s.split === split)
    .forEach((s, i) => {
      const tokens = new Int32Array(s.tokens);
      reader.read(i, 0, tokens);
      out.push(...tokens);
    });
  reader.close();
  return out;
}

function prepare(source: string, extra: Partial<Parameters<typeof prepareData>[0]> = {}): PreparedData {
  return prepareData({ source, tokenizer: bytes, cacheDir: join(tmp(), 'cache'), ...extra });
}

describe('data sources', () => {
  it('strips Brown part-of-speech tags into plain text', () => {
    assert.equal(
      untagSentence("\t``/`` Only/rb a/at handful/nn ''/'' ,/, the/at jury/nn said/vbd (/( 1/2/cd )/) ./."),
      '"Only a handful", the jury said (1/2).',
    );
    assert.equal(brownFiles().length, 500);
  });

  it('prepares the built-in Brown corpus: 500 documents of plain text, reused on the second call', () => {
    const cacheDir = join(tmp(), 'cache');
    const data = prepareData({ source: 'brown', tokenizer: bytes, cacheDir });
    assert.equal(data.manifest.counts.documents, 500);
    assert.equal(data.manifest.inputs.length, 500);
    assert.ok(data.manifest.counts.trainTokens > 5_000_000, `${data.manifest.counts.trainTokens} tokens`);
    const head = new Int32Array(60);
    const reader = new ShardReader(data.dir, data.manifest, 'train');
    reader.read(0, 0, head);
    reader.close();
    assert.equal(bytes.decode(Array.from(head)), 'The Fulton County Grand Jury said Friday an investigation of');
    assert.equal(prepareData({ source: 'brown', tokenizer: bytes, cacheDir }).reused, true);
    rmSync(cacheDir, { recursive: true }); // 12 MB of shards
  });

  it('cuts documents into segments of whole lines and marks document ends', () => {
    const dir = tmp();
    const text = lines(300);
    writeFileSync(join(dir, 'a.txt'), text);
    const segs = [...readSegments(join(dir, 'a.txt'), { jsonlField: 'text' }, () => assert.fail('no problems'))];
    assert.equal(segs.map((s) => s.text).join(''), text);
    assert.ok(segs.length > 1);
    assert.ok(
      segs.slice(0, -1).every((s) => !s.endsDocument && s.text.endsWith('\n') && s.text.length >= SEGMENT_CHARS),
    );
    assert.equal(segs.at(-1)!.endsDocument, true);
  });
});

describe('bad data', () => {
  function problemsOf(files: Record<string, string | Buffer>, field = 'text'): string[] {
    const dir = tmp();
    for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content);
    const out: string[] = [];
    const segments = readSegments(dir, { jsonlField: field }, (p) => out.push(`${p.file}:${p.line}: ${p.message}`));
    while (!segments.next().done); // reading everything reports every problem
    return out.map((p) => p.slice(dir.length + 1));
  }

  it('reports binary files, invalid UTF-8, control characters and empty files with file and line', () => {
    const problems = problemsOf({
      'a.txt': 'fine\n',
      'b.bin': Buffer.from([0x41, 0x0a, 0x42, 0x00, 0x01, 0x02, 0x0a]),
      'c.txt': Buffer.concat([Buffer.from('ok\nbad '), Buffer.from([0xc3, 0x28]), Buffer.from('\nok\n')]),
      'd.txt': 'ok\nescape \u001b[31m\n',
      'e.txt': '',
      'f.txt': '\n  \n',
    });
    assert.deepEqual(problems, [
      'b.bin:2: binary data (NUL byte); the rest of the file is skipped',
      'c.txt:2: invalid UTF-8',
      'd.txt:2: control character U+001b (binary data?)',
      'e.txt:1: no text (empty file)',
      'f.txt:2: no text (empty file)',
    ]);
  });

  it('reports JSONL lines without the field, of the wrong type or not JSON; the field name is configurable', () => {
    const jsonl = ['{"text": "one"}', '{"body": "two"}', '', 'not json', '{"text": 3}', '[1]', '{"text": ""}'].join(
      '\n',
    );
    assert.deepEqual(
      problemsOf({ 'x.jsonl': jsonl }).map((p) => p.replace(/\(.*\)/, '(...)')),
      [
        'x.jsonl:2: no "text" field',
        'x.jsonl:4: not valid JSON (...)',
        'x.jsonl:5: "text" is number, expected a string',
        'x.jsonl:6: expected a JSON object',
        'x.jsonl:7: "text" is empty',
      ],
    );
    assert.equal(problemsOf({ 'x.jsonl': '{"body": "two"}\n' }, 'body').length, 0);
  });

  it('rejects bad data by default, naming file and line; skips it with a warning when asked', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'good.txt'), lines(400));
    writeFileSync(join(dir, 'bad.jsonl'), '{"text": "a"}\n{"txt": "b"}\n');
    assert.throws(
      () => prepare(dir),
      (e: Error) => e instanceof DataError && e.message.includes(`${join(dir, 'bad.jsonl')}:2: no "text" field`),
    );
    const log: string[] = [];
    const data = prepare(dir, { onBadData: 'skip', log: (l) => log.push(l) });
    assert.ok(log.some((l) => l.includes('skipped 1 problem') && l.includes('bad.jsonl:2')));
    assert.equal(data.manifest.counts.problems, 1);
    assert.equal(data.manifest.counts.documents, 2);
  });

  it('explains when there is too little text for a validation split', () => {
    const dir = tmp();
    writeFileSync(join(dir, 'small.txt'), 'just one line\n');
    assert.throws(() => prepare(join(dir, 'small.txt')), /too little text to hold out a validation split/);
    assert.equal(prepare(join(dir, 'small.txt'), { valFraction: 0 }).manifest.counts.trainTokens, 15);
  });
});

describe('shards and manifest', () => {
  it('hold every token of the source exactly once, split deterministically', () => {
    const dir = tmp();
    const text = lines(2000);
    writeFileSync(join(dir, 'corpus.txt'), text);
    const all = prepare(join(dir, 'corpus.txt'), { valFraction: 0 });
    assert.deepEqual(allTokens(all, 'train'), [...bytes.encode(text), bytes.eosId]);

    const a = prepare(join(dir, 'corpus.txt'), { valFraction: 0.1 });
    const b = prepare(join(dir, 'corpus.txt'), { valFraction: 0.1 });
    const counts = a.manifest.counts;
    assert.equal(counts.trainTokens + counts.valTokens, Buffer.byteLength(text) + 1);
    assert.ok(counts.valTokens > 0.05 * counts.trainTokens && counts.valTokens < 0.2 * counts.trainTokens);
    assert.deepEqual(allTokens(a, 'val'), allTokens(b, 'val'));
    assert.deepEqual(allTokens(a, 'train'), allTokens(b, 'train'));
    assert.equal(a.manifest.key, b.manifest.key);
    // Validation segments are whole lines of the source.
    const valText = bytes.decode(allTokens(a, 'val'));
    assert.ok(valText.split('\n').every((l) => l === '' || text.includes(`${l}\n`)));
  });

  it('are reused for unchanged inputs and rebuilt when the content or the tokenizer changes', () => {
    const dir = tmp();
    const cacheDir = join(dir, 'cache');
    const file = join(dir, 'corpus.txt');
    writeFileSync(file, lines(500));
    const opts = { source: file, tokenizer: bytes, cacheDir };
    const first = prepareData(opts);
    assert.equal(first.reused, false);
    utimesSync(file, new Date(2001, 1, 1), new Date(2001, 1, 1)); // a new mtime alone changes nothing
    const second = prepareData(opts);
    assert.equal(second.reused, true);
    assert.equal(second.dir, first.dir);
    writeFileSync(file, lines(500, 'changed'));
    const third = prepareData(opts);
    assert.equal(third.reused, false);
    assert.notEqual(third.dir, first.dir);
    // A damaged shard is noticed and rebuilt.
    writeFileSync(join(third.dir, third.manifest.shards[0]!.file), 'x');
    assert.equal(prepareData(opts).reused, false);
    const manifest = JSON.parse(readFileSync(join(third.dir, 'manifest.json'), 'utf8')) as { tokenizer: object };
    assert.deepEqual(Object.keys(manifest.tokenizer), ['type', 'vocabSize', 'eosId', 'sha256']);
  });

  it('train a BPE on the training split, store it beside the shards and reuse it', () => {
    const dir = tmp();
    const cacheDir = join(dir, 'cache');
    mkdirSync(join(dir, 'docs'));
    for (let d = 0; d < 4; d++) writeFileSync(join(dir, 'docs', `${d}.txt`), lines(150, `doc${d}`));
    const opts = { source: join(dir, 'docs'), tokenizer: { bpeVocabSize: 300 }, cacheDir, valFraction: 0.1 };
    const a = prepareData(opts);
    assert.equal(a.tokenizer.vocabSize, 300);
    assert.equal(a.manifest.tokenizer.type, 'BPE');
    assert.equal(a.manifest.counts.documents, 4);
    assert.ok(a.manifest.counts.trainTokens < 0.6 * 4 * Buffer.byteLength(lines(150, 'doc0')));
    const b = prepareData(opts);
    assert.equal(b.reused, true);
    assert.equal(b.tokenizer.toJSON(), a.tokenizer.toJSON());
  });
});

describe('batch sampler', () => {
  const dir = tmp();
  // Random letters, so that every window of T tokens occurs once in the text.
  const rng = new Rng(5);
  const text = Array.from({ length: 1000 }, (_, i) =>
    i % 50 === 49 ? '\n' : String.fromCharCode(97 + rng.int(26)),
  ).join('');
  writeFileSync(join(dir, 'c.txt'), text);
  const data = prepare(join(dir, 'c.txt'), { valFraction: 0 });
  const T = 16;

  it('streams windows whose targets are the inputs shifted by one, each once per epoch', () => {
    const reader = new ShardReader(data.dir, data.manifest, 'train');
    const sampler = new BatchSampler(reader, 4, T, 7);
    const W = sampler.windowsPerEpoch;
    assert.equal(W, Math.floor((reader.tokens - 1) / T));
    const tokens = allTokens(data, 'train');
    const seen = new Set<number>();
    for (let i = 0; i < Math.floor(W / 4); i++) {
      const b = sampler.next();
      for (let r = 0; r < b.rows; r++) {
        const inputs = Array.from(b.inputs.subarray(r * T, (r + 1) * T));
        const start = tokens.findIndex((_, j) => j % T === 0 && inputs.every((x, k) => tokens[j + k] === x));
        assert.ok(start >= 0, 'window starts on a multiple of T');
        assert.deepEqual(Array.from(b.targets.subarray(r * T, (r + 1) * T)), tokens.slice(start + 1, start + T + 1));
        seen.add(start);
      }
    }
    assert.equal(seen.size, 4 * Math.floor(W / 4), 'no window repeats within an epoch');
    reader.close();
  });

  it('is seeded, and a restored position continues with the same batches', () => {
    const reader = new ShardReader(data.dir, data.manifest, 'train');
    const run = (seed: number, n: number, from?: ReturnType<BatchSampler['getPosition']>) => {
      const s = new BatchSampler(reader, 3, T, seed);
      if (from) s.setPosition(from);
      return Array.from({ length: n }, () => Array.from(s.next().inputs));
    };
    const straight = run(1, 40); // crosses several epochs
    assert.deepEqual(run(1, 40), straight);
    assert.notDeepEqual(run(2, 40), straight);
    const s = new BatchSampler(reader, 3, T, 1);
    for (let i = 0; i < 25; i++) s.next();
    const pos = JSON.parse(JSON.stringify(s.getPosition())) as ReturnType<BatchSampler['getPosition']>;
    assert.ok(pos.epoch > 0);
    assert.deepEqual(run(1, 15, pos), straight.slice(25));
    reader.close();
  });

  it('gives evaluation batches in order, the last one smaller, covering every window', () => {
    const reader = new ShardReader(data.dir, data.manifest, 'train');
    const batches = [...sequentialBatches(reader, 5, T)];
    const windows = Math.floor((reader.tokens - 1) / T);
    assert.equal(
      batches.reduce((n, b) => n + b.rows, 0),
      windows,
    );
    assert.equal(batches.at(-1)!.rows, windows % 5 || 5);
    assert.deepEqual(Array.from(batches[0]!.inputs.subarray(0, T)), allTokens(data, 'train').slice(0, T));
    assert.equal([...sequentialBatches(reader, 5, T, 2)].length, 2);
    reader.close();
  });

  it('says when the split is too short for one sequence', () => {
    const reader = new ShardReader(data.dir, data.manifest, 'train');
    assert.throws(() => new BatchSampler(reader, 1, 100000, 0), /too few for one sequence of 100000/);
    reader.close();
  });
});
