// The command line's flags: every numeric flag of every command reads numbers strictly and enforces its bounds (the
// flag tables drive this test, so a new flag is covered by being declared), help lists every flag with its type and
// default, --version, did-you-mean, validation before work, a closed pipe, and the serve flags of issue 17 item 9.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { InvalidArgumentError } from 'commander';

import { suites } from '../bench/suites.js';
import type { Command, Flag } from '../src/cli/command.js';
import { commands, program } from '../src/cli/main.js';
import { Scheduler } from '../src/generate/scheduler.js';
import { createModel } from '../src/models/registry.js';
import { ByteTokenizer } from '../src/tokenizer/tokenizer.js';

const ROOT = join(import.meta.dirname, '..');

function cli(args: string[], opts: { input?: string } = {}) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'run.ts'), ...args], {
    encoding: 'utf8',
    input: opts.input,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const everyCommand: [string, Command][] = [
  ...commands.map((c): [string, Command] => [c.name, c]),
  ...suites.map((s): [string, Command] => [`bench ${s.name}`, s]),
];

const rejects = (flag: Flag<unknown>, raw: string) =>
  assert.throws(() => flag.parse!(raw), InvalidArgumentError, `'${raw}' was accepted`);

describe('numeric flags', () => {
  for (const [name, command] of everyCommand)
    for (const [flagName, flag] of Object.entries(command.flags)) {
      if (!flag.range) continue;
      it(`${name} --${flagName}: strict numbers within [${flag.range.min}, ${flag.range.max}]`, () => {
        const { min, max, integer } = flag.range!;
        assert.ok(Number.isFinite(min) && Number.isFinite(max), 'bounded');
        for (const raw of ['', ' ', '\t', 'abc', '0x10', 'Infinity', 'NaN', '1_0', '1 2', '--1', '1e', '.'])
          rejects(flag, raw);
        assert.equal(flag.parse!(String(min)), min);
        assert.equal(flag.parse!(String(max)), max);
        rejects(flag, String(max + Math.max(1, max * 1e-6)));
        rejects(flag, String(min - Math.max(1, Math.abs(min))));
        if (min <= 0) assert.ok(Object.is(flag.parse!('-0'), 0), '-0 reads as 0');
        if (integer) rejects(flag, String(min + 0.5));
        if (flag.default !== undefined) assert.ok((flag.default as number) >= min && (flag.default as number) <= max);
      });
    }
});

describe('help and errors', () => {
  it('per-command help lists every flag with its type and default', () => {
    const root = program({ code: 0 });
    for (const [name, command] of everyCommand) {
      let c = root;
      for (const word of name.split(' ')) c = c.commands.find((x) => x.name() === word)!;
      // One entry per flag: its first line and the wrapped lines under it.
      const entries = c.helpInformation().split(/\n(?= {2}-)/);
      for (const [flagName, flag] of Object.entries(command.flags)) {
        if (flag.hidden) continue;
        const entry = entries.find((e) => new RegExp(`^ {2}--${flagName}( |$)`).test(e));
        assert.ok(entry, `${name} --help lists --${flagName}`);
        if (flag.placeholder)
          assert.ok(entry.includes(`<${flag.placeholder}>`), `${name} --${flagName} shows its type`);
        if (flag.default !== undefined && flag.placeholder)
          assert.match(entry.replace(/\s+/g, ' '), /default: /, `${name} --${flagName} shows its default`);
      }
    }
    const serve = cli(['serve', '--help']);
    assert.equal(serve.code, 0);
    assert.match(
      serve.stdout.replace(/\s+/g, ' '),
      /--port <int> the TCP port; 0 picks a free one \(integer in \[0, 65535\]\); default: 8000/,
    );
  });

  it('--version prints the package version', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = cli(['--version']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `${pkg.version}\n`);
  });

  it('unknown commands, suites and flags get a suggestion', () => {
    const c = cli(['trian']);
    assert.equal(c.code, 2);
    assert.match(c.stderr, /unknown command 'trian'\n\(Did you mean train\?\)/);
    const s = cli(['bench', 'decod']);
    assert.equal(s.code, 2);
    assert.match(s.stderr, /\(Did you mean decode\?\)/);
    const f = cli(['train', '--stpes', '3']);
    assert.equal(f.code, 2);
    assert.match(f.stderr, /retnet train: unknown option '--stpes'\n\(Did you mean --steps\?\)/);
  });

  it('bad values are refused before any work, naming the flag', () => {
    const out = join(tmpdir(), `retnet-never-written-${process.pid}`); // a refused command writes nothing
    const preset = cli(['train', '--data', 'brown', '--steps', '5', '--out', out, '--preset', 'huge']);
    assert.equal(preset.code, 2);
    assert.match(preset.stderr, /'--preset <[^>]+>' argument 'huge' is invalid\. expected one of tiny, small/);
    assert.doesNotMatch(preset.stderr, /data:/); // nothing was tokenised
    const batch = cli(['train', '--data', 'brown', '--steps', '5', '--out', out, '--batch', '1e9']);
    assert.equal(batch.code, 2);
    assert.match(batch.stderr, /'--batch <int>' argument '1e9' is invalid\. expected an integer in \[1, 4096\]/);
    const tokens = cli([
      'train',
      '--data',
      'brown',
      '--steps',
      '5',
      '--out',
      out,
      '--batch',
      '4096',
      '--seq-len',
      '4096',
    ]);
    assert.equal(tokens.code, 2);
    assert.match(tokens.stderr, /--batch 4096 × --seq-len 4096 is 16777216 tokens per micro-batch, more than 1048576/);
    const accum = cli(['train', '--data', 'brown', '--steps', '5', '--out', out, '--accum', '99999999']);
    assert.equal(accum.code, 2);
    assert.match(accum.stderr, /'--accum <int>' argument '99999999' is invalid/);
    for (const r of [preset, batch, tokens, accum]) assert.doesNotMatch(r.stderr, /\n\s+at /); // no stack trace
    assert.equal(existsSync(out), false);
  });

  it('--device: an unknown name lists the known ones; an unavailable device says why; no stack trace', () => {
    const unknown = cli(['logits', '--model', '/nonexistent', '--tokens', '1', '--device', 'bogus']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /retnet logits: the backend must be one of reference, cpu, cuda.*, got 'bogus'/);
    const unavailable = cli(['logits', '--model', '/nonexistent', '--tokens', '1', '--device', 'cuda']);
    if (!existsSync(join(ROOT, 'build', 'Release', 'retnet_cuda.node'))) {
      assert.equal(unavailable.code, 1);
      assert.match(unavailable.stderr, /the cuda device is unavailable: /);
    }
    for (const r of [unknown, unavailable]) assert.doesNotMatch(r.stderr, /\n\s+at /);
  });

  it("serve: --port '' is not a random port, and a mistyped --host is a clear error", () => {
    const port = cli(['serve', '--model', '/nonexistent', '--port', '']);
    assert.equal(port.code, 2);
    assert.match(port.stderr, /'--port <int>' argument '' is invalid/);
    const host = cli(['serve', '--model', '/nonexistent', '--host', '127.0.0.l']);
    assert.equal(host.code, 2);
    assert.match(host.stderr, /--host '127\.0\.0\.l' does not resolve/);
    const digits = cli(['serve', '--model', '/nonexistent', '--host', '127.0.0.300']);
    assert.equal(digits.code, 2);
    assert.match(digits.stderr, /expected an IP address .* got '127\.0\.0\.300'/);
  });

  it('a closed pipe ends the command quietly', () => {
    const r = spawnSync('bash', ['-c', `node --import tsx ${join(ROOT, 'src', 'cli', 'run.ts')} --help | head -c 10`], {
      encoding: 'utf8',
      cwd: ROOT,
    });
    assert.equal(r.status, 0);
    assert.equal(r.stderr, '');
    const info = spawnSync(
      'bash',
      ['-o', 'pipefail', '-c', `node --import tsx ${join(ROOT, 'src', 'cli', 'run.ts')} info | head -1`],
      { encoding: 'utf8', cwd: ROOT },
    );
    assert.equal(info.status, 0, info.stderr);
    assert.doesNotMatch(info.stderr, /EPIPE/);
  });
});

describe('--max-queued 0', () => {
  it('an idle scheduler still admits up to maxActive requests; only waiting ones count against the queue', async () => {
    const model = createModel(
      'retnet',
      'tiny',
      { vocabSize: 259, embedDim: 16, valueDim: 32, ffnDim: 32, heads: 2, layers: 1 },
      { seed: 1 },
    );
    const scheduler = new Scheduler(model, new ByteTokenizer(), { maxActive: 2, maxQueued: 0 });
    const request = { prompt: 'a', maxNewTokens: 2, sampling: { temperature: 0 } };
    const a = scheduler.submit(request);
    const b = scheduler.submit(request);
    assert.throws(() => scheduler.submit(request), /already waiting/);
    for (const stream of [a, b]) {
      let end = false;
      for await (const e of stream) end ||= e.type === 'end';
      assert.ok(end);
    }
    await scheduler.shutdown(0);
    model.dispose();
  });
});
