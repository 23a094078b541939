// `retnet generate` and `retnet serve` as processes, on a model directory: greedy generation is deterministic and
// equals the library's, the server prints its URL once ready and exits cleanly on SIGTERM mid-stream.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';

import { generate } from '../src/generate/generate.js';
import { loadModelDir, saveModelDir } from '../src/io/model-dir.js';
import { createModel } from '../src/models/registry.js';
import type { RetNetModel } from '../src/models/retnet/model.js';
import { ByteTokenizer } from '../src/tokenizer/tokenizer.js';
import { tempDir } from './temp.js';

const ROOT = join(import.meta.dirname, '..');
const RUN = [join(ROOT, 'src', 'cli', 'run.ts')];

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', ...RUN, ...args], { encoding: 'utf8', cwd: ROOT });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const tiny = { vocabSize: 259, embedDim: 32, valueDim: 64, ffnDim: 64, heads: 2, layers: 2 };

describe('retnet generate / serve', () => {
  let dir: string;
  let bare: string;
  before(() => {
    dir = tempDir('retnet-gen-');
    saveModelDir(dir, createModel('retnet', 'tiny', tiny, { seed: 4 }), new ByteTokenizer());
    bare = tempDir('retnet-gen-bare-');
    saveModelDir(bare, createModel('retnet', 'tiny', tiny, { seed: 4 }));
  });

  // The library's greedy text for a prompt (the state in stateDType).
  const greedy = async (prompt: string, maxNewTokens: number, stateDType: 'float32' | 'float16' = 'float32') => {
    const { model, tokenizer } = loadModelDir(dir);
    (model as RetNetModel).stateDType = stateDType;
    let text = '';
    for await (const e of generate(model, tokenizer!, [{ prompt, maxNewTokens, sampling: { temperature: 0 } }]))
      text += e.text;
    model.dispose();
    return text;
  };

  it('generate --temperature 0 is greedy, deterministic, equal to the library, and reports speed', async () => {
    const args = ['generate', '--model', dir, '--prompt', 'Hello, wörld', '--max-tokens', '40', '--temperature', '0'];
    const a = cli(...args);
    const b = cli(...args);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(a.stdout, b.stdout);
    assert.match(
      a.stderr,
      /^prefill: 13 tokens in [\d.]+ ms \([\d.]+ tokens\/s\); decode: \d+ tokens in [\d.]+ ms \([\d.]+ tokens\/s\); finish: (length|stop)\n$/,
    );
    assert.equal(a.stdout, await greedy('Hello, wörld', 40));
    const seeded = ['generate', '--model', dir, '--prompt', 'x', '--max-tokens', '30', '--seed', '3', '--top-k', '20'];
    assert.equal(cli(...seeded).stdout, cli(...seeded).stdout);
  });

  it('generate --state f16 decodes with a float16 state as the library does', async () => {
    const r = cli('generate', '--model', dir, '--prompt', 'Hello', '--max-tokens', '20', '--temperature', '0', '--state', 'f16'); // prettier-ignore
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, await greedy('Hello', 20, 'float16'));
    const transformer = tempDir('retnet-gen-tr-');
    saveModelDir(transformer, createModel('transformer', 'tiny', { vocabSize: 259 }, { seed: 4 }), new ByteTokenizer());
    const bad = cli('generate', '--model', transformer, '--prompt', 'x', '--state', 'f16');
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--state f16: .* holds a transformer; a 16-bit decode state is a RetNet's/);
  });

  it('generate reports bad usage and a model without a tokenizer in one line', () => {
    const noModel = cli('generate', '--prompt', 'x');
    assert.equal(noModel.code, 2);
    assert.match(noModel.stderr, /retnet generate: --model is required/);
    const badTemp = cli('generate', '--model', dir, '--prompt', 'x', '--temperature=-1');
    assert.equal(badTemp.code, 2);
    assert.match(badTemp.stderr, /'--temperature <number>' argument '-1' is invalid\. expected a number in \[0, 100\]/);
    const noTok = cli('generate', '--model', bare, '--prompt', 'x');
    assert.equal(noTok.code, 1);
    assert.match(noTok.stderr, /no tokenizer\.json/);
  });

  describe('serve', () => {
    let proc: ReturnType<typeof spawn>;
    let url: string;
    let stderr = '';
    before(async () => {
      proc = spawn(
        process.execPath,
        ['--import', 'tsx', ...RUN, 'serve', '--model', dir, '--port', '0', '--api-key', 'k1'],
        {
          cwd: ROOT,
        },
      );
      proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const lines = createInterface({ input: proc.stdout! });
      for await (const line of lines) {
        const m = /listening on (http:\/\/127\.0\.0\.1:\d+)$/.exec(line);
        if (m) {
          url = m[1]!;
          break;
        }
      }
      assert.ok(url, `no URL printed; stderr: ${stderr}`);
    });
    after(() => {
      if (proc.exitCode === null) proc.kill('SIGKILL');
    });

    it('prints its URL once ready, serves with the key, and exits 0 on SIGTERM mid-stream', async () => {
      const models = await fetch(`${url}/v1/models`, { headers: { authorization: 'Bearer k1' } });
      assert.equal(((await models.json()) as { data: { id: string }[] }).data[0]!.id.startsWith('retnet-gen-'), true);
      const r = await fetch(`${url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer k1' },
        body: JSON.stringify({ prompt: 'a', max_tokens: 2000, ignore_eos: true, stream: true }),
      });
      assert.equal(r.status, 200);
      const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
      const decoder = new TextDecoder();
      let body = '';
      let signalled = false;
      for await (const bytes of r.body!) {
        body += decoder.decode(bytes as Uint8Array, { stream: true });
        if (!signalled && body.includes('\n\n')) {
          signalled = true;
          proc.kill('SIGTERM');
        }
      }
      assert.ok(body.endsWith('data: [DONE]\n\n'), body.slice(-200));
      assert.equal(await exited, 0, stderr);
      assert.match(stderr, /SIGTERM: finishing in-flight requests/);
    });
  });
});
