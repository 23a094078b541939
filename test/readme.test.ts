// The README's two commands, run as written on a clean copy of the repository (its tracked files), with the demo's
// step count reduced. The README cannot drift from what works.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { tempDir } from './temp.js';

const ROOT = join(import.meta.dirname, '..');

/** The shell commands of the README's set-up block (between the readme-commands markers). */
function readmeCommands(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const block = /<!-- readme-commands:start -->\s*```sh\n([\s\S]*?)```\s*<!-- readme-commands:end -->/.exec(readme);
  assert.ok(block, 'README.md has a readme-commands block');
  return block[1]!
    .split('\n')
    .map((l) => l.replace(/#.*$/, '').trim())
    .filter((l) => l !== '');
}

describe('README', () => {
  it('has exactly two commands: set up + demo, and the tests that CI runs', () => {
    const [setup, tests, ...rest] = readmeCommands();
    assert.equal(rest.length, 0);
    assert.equal(setup, 'bash scripts/setup.sh && npx retnet demo');
    assert.equal(tests, 'npm test');
    assert.match(readFileSync(join(ROOT, '.ci', 'run'), 'utf8'), /bash scripts\/setup\.sh\nnpm test\n/);
  });

  it('the first command works on a clean copy (demo with 3 steps)', { timeout: 600_000 }, () => {
    const copy = join(tempDir('retnet-readme-'), 'retnet');
    const files = execFileSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8' }).split('\0').filter(Boolean);
    for (const f of files) {
      if (!existsSync(join(ROOT, f))) continue; // deleted in the working tree
      mkdirSync(dirname(join(copy, f)), { recursive: true });
      cpSync(join(ROOT, f), join(copy, f));
    }
    const [setup] = readmeCommands();
    const command = `${setup} --steps 3 --max-tokens 20`;
    const r = spawnSync('bash', ['-c', command], { cwd: copy, encoding: 'utf8', timeout: 600_000 });
    assert.equal(r.status, 0, `"${command}" failed:\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-3000)}`);
    assert.match(r.stdout + r.stderr, /validation loss [\d.]+ ppl [\d.]+/);
    assert.match(r.stdout, /per-head norm eps → 0: +chunkwise \(C=16\) [\d.e+-]+ {3}recurrent [\d.e+-]+/);
    assert.ok(existsSync(join(copy, 'runs', 'demo', 'model.safetensors')));
    assert.ok(existsSync(join(copy, 'runs', 'demo', 'tokenizer.json')));
  });
});
