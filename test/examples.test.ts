// The examples in examples/ run as a user would run them (importing the built package by its name).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { tempDir } from './temp.js';

const ROOT = join(import.meta.dirname, '..');

function example(file: string, ...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'examples', file), ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.equal(r.status, 0, `${file} failed:\n${r.stderr}`);
  return r.stdout;
}

describe('examples', () => {
  it('train-from-text trains and reports a validation perplexity', () => {
    const out = example('train-from-text.ts', '--steps', '8', '--out', join(tempDir('retnet-example-out-'), 'model'));
    const last = JSON.parse(out.trim().split('\n').pop()!) as { steps: number; valPpl: number };
    assert.equal(last.steps, 8);
    assert.ok(Number.isFinite(last.valPpl) && last.valPpl > 1);
  });

  it('stream prints the prompt, the streamed text and how it finished', () => {
    const out = example('stream.ts', '--prompt', 'Hi ', '--max-tokens', '12');
    assert.match(out, /^Hi /);
    assert.match(out, /\[length: 12 tokens after 3\]/);
  });

  it('the OpenAI client talks to the server, streamed and whole', () => {
    const out = example('openai-client.ts');
    assert.match(out, /models: retnet-demo/);
    assert.match(out, /completion: .*completion_tokens: 32/);
    assert.match(out, /streamed: /);
  });
});
