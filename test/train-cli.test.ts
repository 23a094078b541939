// The `retnet train`, `retnet eval` and `retnet plot` contract, run as a user would: a tiny RetNet on a small text
// file, an interrupted run resumed to the same weights as an uninterrupted one, eval's JSON line, plots, bad input.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { Rng } from '../src/tensor/random.js';
import { tempDir } from './temp.js';

const ROOT = join(import.meta.dirname, '..');
const dir = tempDir('retnet-cli-train-');
const cache = join(dir, 'cache');

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'run.ts'), ...args], {
    encoding: 'utf8',
    cwd: ROOT,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The JSON object on the last line of stdout. */
function lastJSON(stdout: string): Record<string, unknown> {
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
}

const rng = new Rng(21);
const words = ['alpha', 'beta', 'gamma', 'delta', 'river', 'stone', 'light', 'north', 'quiet', 'field'];
const text = Array.from(
  { length: 400 },
  () => `${Array.from({ length: 7 }, () => words[rng.int(10)]).join(' ')}.\n`,
).join('');
const corpus = join(dir, 'corpus.txt');
writeFileSync(corpus, text);

const common = ['--arch', 'retnet', '--preset', 'tiny', '--data', corpus, '--seq-len', '16', '--batch', '2'];
const more = [
  '--val-fraction',
  '0.1',
  '--cache',
  cache,
  '--lr',
  '0.003',
  '--eval-every',
  '2',
  '--eval-batches',
  '4',
  '--log-every',
  '1',
];
const trainArgs = (out: string, steps: number, ...extra: string[]) => [
  'train',
  ...common,
  ...more,
  '--steps',
  String(steps),
  '--out',
  join(dir, out),
  ...extra,
];

describe('retnet train / eval / plot', () => {
  it('trains into a model directory that eval accepts, printing JSON with loss and ppl last', () => {
    const t = cli(...trainArgs('straight', 6));
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stderr, /step 6\/6 loss/);
    const summary = lastJSON(t.stdout);
    assert.equal(summary.step, 6);
    assert.equal(summary.finished, true);
    const e = cli('eval', '--model', join(dir, 'straight'), '--data', corpus, '--max-batches', '4');
    assert.equal(e.code, 0, e.stderr);
    const result = lastJSON(e.stdout);
    assert.ok(typeof result.loss === 'number' && typeof result.ppl === 'number');
    // eval uses the run's split and sequence length: the same number the run reported at its end.
    assert.ok(
      Math.abs((result.loss as number) - (summary.valLoss as number)) < 1e-6,
      `${result.loss} vs ${summary.valLoss}`,
    );
    assert.ok(Math.abs((result.ppl as number) - Math.exp(result.loss as number)) < 1e-9);
    const all = lastJSON(cli('eval', '--model', join(dir, 'straight'), '--data', corpus, '--split', 'all').stdout);
    assert.equal(all.split, 'all');
    assert.ok((all.tokens as number) > 8 * (result.tokens as number));
  });

  it('trains the Transformer baseline with the same command (--arch transformer), and eval accepts it', () => {
    const out = join(dir, 'transformer');
    const args = ['train', '--arch', 'transformer', '--preset', 'tiny', '--data', corpus, '--seq-len', '16'];
    const t = cli(...args, '--batch', '2', ...more, '--steps', '3', '--out', out);
    assert.equal(t.code, 0, t.stderr);
    assert.equal(lastJSON(t.stdout).finished, true);
    assert.equal(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).arch, 'transformer');
    const e = cli('eval', '--model', out, '--data', corpus, '--max-batches', '2');
    assert.equal(e.code, 0, e.stderr);
    assert.ok(typeof lastJSON(e.stdout).ppl === 'number');
    const bad = cli(...args, '--batch', '2', ...more, '--steps', '3', '--out', join(dir, 'tf2'), '--form', 'chunkwise');
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--form and --chunk-size apply to RetNet, not to a transformer/);
  });

  it('--resume after a stop continues exactly: the same weights as an uninterrupted run', () => {
    const first = cli(...trainArgs('parted', 6, '--stop-at', '3'));
    assert.equal(first.code, 0, first.stderr);
    assert.equal(lastJSON(first.stdout).finished, false);
    const second = cli(...trainArgs('parted', 6, '--resume'));
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stderr, /resumed from .*step-00000003 at step 3/);
    const weights = (run: string) => readFileSync(join(dir, run, 'model.safetensors'));
    assert.ok(weights('parted').equals(weights('straight')), 'resumed weights differ from the uninterrupted run');
  });

  it('refuses a resume with other settings, and a new run over an existing one', () => {
    const changed = cli(...trainArgs('parted', 6, '--resume', '--lr', '0.01'));
    assert.equal(changed.code, 2);
    assert.match(changed.stderr, /--resume: lr is 0\.01 but the run was started with 0\.003/);
    const again = cli(...trainArgs('parted', 6));
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already holds a run; pass --resume/);
  });

  it('plots several runs to SVG and PNG', () => {
    const out = join(dir, 'compare');
    const p = cli('plot', join(dir, 'straight'), join(dir, 'parted'), '--out', out);
    assert.equal(p.code, 0, p.stderr);
    const svg = readFileSync(`${out}.svg`, 'utf8');
    assert.ok(
      svg.startsWith('<svg') && svg.includes('straight') && svg.includes('parted') && svg.includes('validation'),
    );
    const png = readFileSync(`${out}.png`);
    assert.ok(png.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])));
    assert.ok(png.length > 10000);
  });

  it('trains the chunkwise form and reports bad data with file and line', () => {
    const c = cli(...trainArgs('chunkwise', 2, '--form', 'chunkwise', '--chunk-size', '4'));
    assert.equal(c.code, 0, c.stderr);
    assert.equal(JSON.parse(readFileSync(join(dir, 'chunkwise', 'config.json'), 'utf8')).chunkwise_recurrent, true);
    const bad = join(dir, 'bad.jsonl');
    writeFileSync(bad, '{"text": "fine"}\n{"body": "no text field"}\n');
    const b = cli(
      'train',
      ...common.slice(0, 4),
      '--data',
      bad,
      '--steps',
      '1',
      '--out',
      join(dir, 'bad'),
      '--cache',
      cache,
    );
    assert.equal(b.code, 1);
    assert.match(b.stderr, /bad\.jsonl:2: no "text" field/);
  });
});
