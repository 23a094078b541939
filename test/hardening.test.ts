// Regression tests of the hardening issue's filesystem and recovery items: data sources that are not regular files
// (devices, FIFOs, dangling links, link loops), --out/--cache that are files, filesystem errors as one line, a run
// killed before its first checkpoint, and a kill while old checkpoints were being pruned.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

import { describeSystemError } from '../src/errors.js';
import { saveModelDir } from '../src/io/model-dir.js';
import { createModel } from '../src/models/registry.js';
import { DataError, sourceFiles } from '../src/train/sources.js';
import { latestCheckpoint, removeIncompleteCheckpoints } from '../src/train/checkpoint.js';

const ROOT = join(import.meta.dirname, '..');
const dir = mkdtempSync(join(tmpdir(), 'retnet-hardening-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'run.ts'), ...args], {
    encoding: 'utf8',
    cwd: ROOT,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** stderr holds no JavaScript stack frame. */
function assertNoStack(stderr: string): void {
  assert.doesNotMatch(stderr, /^\s+at .+\(.+:\d+:\d+\)$/m, `stack trace on stderr:\n${stderr}`);
}

const corpus = join(dir, 'corpus.txt');
writeFileSync(corpus, 'the quiet river runs north past the stone field.\n'.repeat(300));
const cache = join(dir, 'cache');
const trainArgs = (out: string, ...extra: string[]) => [
  'train',
  '--preset',
  'tiny',
  '--data',
  corpus,
  '--seq-len',
  '16',
  '--batch',
  '2',
  '--steps',
  '2',
  '--val-fraction',
  '0.1',
  '--eval-every',
  '0',
  '--cache',
  cache,
  '--out',
  out,
  ...extra,
];

describe('data sources that are not regular files', () => {
  it('refuses a device and a FIFO instead of reading forever', () => {
    assert.throws(
      () => sourceFiles('/dev/zero'),
      (e: Error) => e instanceof DataError && /\/dev\/zero: a device/.test(e.message),
    );
    const fifo = join(dir, 'fifo');
    assert.equal(spawnSync('mkfifo', [fifo]).status, 0);
    assert.throws(
      () => sourceFiles(fifo),
      (e: Error) => e instanceof DataError && /fifo: a FIFO/.test(e.message),
    );
    const withFifo = join(dir, 'with-fifo');
    mkdirSync(withFifo);
    writeFileSync(join(withFifo, 'a.txt'), 'text\n');
    assert.equal(spawnSync('mkfifo', [join(withFifo, 'b')]).status, 0);
    assert.throws(() => sourceFiles(withFifo), /with-fifo\/b: a FIFO, not a regular file/);
  });

  it('names dangling symbolic links and link loops in a data directory', () => {
    const dangling = join(dir, 'dangling');
    mkdirSync(dangling);
    writeFileSync(join(dangling, 'a.txt'), 'text\n');
    symlinkSync(join(dir, 'nowhere.txt'), join(dangling, 'b.txt'));
    assert.throws(
      () => sourceFiles(dangling),
      /dangling\/b\.txt: a dangling symbolic link \(its target .*nowhere\.txt is missing\)/,
    );

    const loop = join(dir, 'loop');
    mkdirSync(join(loop, 'sub'), { recursive: true });
    writeFileSync(join(loop, 'sub', 'a.txt'), 'text\n');
    symlinkSync('..', join(loop, 'sub', 'up'));
    assert.throws(() => sourceFiles(loop), /loop\/sub\/up: a symbolic link loop/);

    const self = join(dir, 'self-link');
    symlinkSync(self, self);
    assert.throws(() => sourceFiles(self), /self-link: a symbolic link loop/);

    // A link to a file elsewhere is followed.
    const linked = join(dir, 'linked');
    mkdirSync(linked);
    symlinkSync(corpus, join(linked, 'corpus.txt'));
    assert.deepEqual(sourceFiles(linked), [join(linked, 'corpus.txt')]);
  });

  it('the CLI prints one line and exits 1 for --data /dev/zero', () => {
    const r = cli(...trainArgs(join(dir, 'zero-run')).map((a) => (a === corpus ? '/dev/zero' : a)));
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /\/dev\/zero: a device; --data takes a regular file/);
    assertNoStack(r.stderr);
  });
});

describe('filesystem errors', () => {
  it('--out or --cache that is a file stops before any work, naming the path', () => {
    const file = join(dir, 'a-file');
    writeFileSync(file, 'x');
    for (const args of [
      trainArgs(file),
      trainArgs(join(file, 'sub')),
      trainArgs(join(dir, 'ok-run'), '--cache', file),
    ]) {
      const r = cli(...args);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /a-file is a file, not a directory/);
      assertNoStack(r.stderr);
    }
    assert.equal(existsSync(join(dir, 'ok-run')), false, 'nothing is created before the flags are checked');
  });

  it('describes each filesystem error code in one line with the path', () => {
    for (const code of ['ENOSPC', 'EROFS', 'EPERM', 'EACCES', 'ENOTDIR', 'ELOOP', 'ENOENT']) {
      const e = Object.assign(new Error(`${code}: something`), { code, path: '/some/where' });
      const line = describeSystemError(e);
      assert.ok(line !== null && line.startsWith('/some/where: ') && line.endsWith(`(${code})`), `${code}: ${line}`);
      assert.ok(!line.includes('\n'));
    }
    assert.equal(describeSystemError(new Error('plain')), null);
    assert.equal(describeSystemError(Object.assign(new Error('x'), { code: 'ERR_SOMETHING' })), null);
  });

  it('a real filesystem error on the command line is one line with exit code 1', () => {
    // RUN/checkpoints is a file: reading the run's checkpoints fails with ENOTDIR.
    const out = join(dir, 'bad-checkpoints');
    mkdirSync(out);
    writeFileSync(join(out, 'checkpoints'), 'not a folder');
    const r = cli(...trainArgs(out));
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /bad-checkpoints\/checkpoints: a part of this path is a file, not a directory.*\(ENOTDIR\)/);
    assertNoStack(r.stderr);
  });
});

describe('recovery of interrupted runs', () => {
  it('a run killed before its first checkpoint restarts, with or without --resume', () => {
    const out = join(dir, 'early-kill');
    assert.equal(cli(...trainArgs(out)).code, 0);
    // As if killed during step 1: run.json and a half-written checkpoint folder, no complete checkpoint.
    rmSync(join(out, 'checkpoints'), { recursive: true });
    mkdirSync(join(out, 'checkpoints', '.step-00000001.tmp-4242'), { recursive: true });
    for (const extra of [[], ['--resume']]) {
      const r = cli(...trainArgs(out, ...extra));
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /stopped before its first checkpoint; starting it again/);
      assert.ok(latestCheckpoint(out)?.endsWith('step-00000002'));
      assert.ok(!readdirSync(join(out, 'checkpoints')).some((n) => n.startsWith('.')), 'leftovers removed');
      rmSync(join(out, 'checkpoints'), { recursive: true });
    }
    // With a complete checkpoint the run is not restarted silently.
    assert.equal(cli(...trainArgs(out)).code, 0);
    const again = cli(...trainArgs(out));
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already holds a run; pass --resume/);
  });

  it('ignores half-deleted checkpoint folders and pruning leftovers', () => {
    const run = join(dir, 'half-pruned');
    const ck = join(run, 'checkpoints');
    const complete = (name: string) => {
      mkdirSync(join(ck, name), { recursive: true });
      for (const f of ['trainer.json', 'config.json', 'model.safetensors', 'optimizer.safetensors'])
        writeFileSync(join(ck, name, f), '{}');
    };
    complete('step-00000004');
    complete('step-00000008');
    // A folder a non-atomic prune half deleted: trainer.json survives, the weights are gone.
    mkdirSync(join(ck, 'step-00000012'));
    writeFileSync(join(ck, 'step-00000012', 'trainer.json'), '{}');
    writeFileSync(join(ck, 'latest'), 'step-00000012\n');
    mkdirSync(join(ck, '.pruned-step-00000002-77'));
    assert.equal(latestCheckpoint(run), join(ck, 'step-00000008'));
    removeIncompleteCheckpoints(run);
    assert.equal(existsSync(join(ck, '.pruned-step-00000002-77')), false);
    assert.equal(readFileSync(join(ck, 'latest'), 'utf8'), 'step-00000012\n');
  });
});

describe('sizes from a config or a flag never reach a native allocation unchecked', () => {
  const modelDir = join(dir, 'model');
  const model = createModel('retnet', 'tiny', { vocabSize: 32 }, { seed: 3 });
  saveModelDir(modelDir, model);
  model.dispose();
  const config = JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')) as Record<string, unknown>;

  it('a huge recurrent_chunk_size in config.json is a ConfigError naming the field', () => {
    const bad = join(dir, 'model-huge-chunk');
    mkdirSync(bad);
    for (const f of readdirSync(modelDir)) writeFileSync(join(bad, f), readFileSync(join(modelDir, f)));
    for (const [key, value] of [
      ['recurrent_chunk_size', 4294967296],
      ['decoder_layers', 65536],
      ['decoder_retention_heads', 2 ** 31],
    ] as const) {
      writeFileSync(join(bad, 'config.json'), JSON.stringify({ ...config, [key]: value }));
      const r = cli('logits', '--model', bad, '--tokens', '1,2,3');
      assert.equal(r.code, 1, `${key}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`must be at most \\d+, got ${value}`));
      assertNoStack(r.stderr);
    }
  });

  it('logits --chunk-size beyond the bound is a usage error', () => {
    for (const size of ['4294967296', '2147483648']) {
      const r = cli('logits', '--model', modelDir, '--tokens', '1,2,3', '--form', 'chunkwise', '--chunk-size', size);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /'--chunk-size <int>' argument '\d+' is invalid\. expected an integer in \[1, 8192\]/);
    }
    const ok = cli('logits', '--model', modelDir, '--tokens', '1,2,3', '--form', 'chunkwise', '--chunk-size', '8192');
    assert.equal(ok.code, 0, ok.stderr);
    const rows = (JSON.parse(ok.stdout) as { logits: number[][] }).logits;
    assert.equal(rows.length, 3);
    assert.ok(rows.every((r) => r.length === 32 && r.every(Number.isFinite)));
  });
});
