// retnet/web in headless chromium: loadModel over fetch, model.logits on the webgpu device and on the host ('cpu')
// against the expected logits of ../shared (torchscale's dev cases, fla's dev case), 1e-4 relative in float32; and
// greedy generation in the page equal to greedy generation in Node for the same model directory and prompt.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { readSafetensors } from '../src/io/safetensors.js';
import { type OpenPage, ROOT, browserSkip, bundle, nodeGreedy, openPage, tinyModelDir } from './browser.js';
import { assertClose } from './helpers.js';

const SHARED = join(ROOT, '..', 'shared');
const TS = join(SHARED, 'torchscale-vectors');
const FLA = join(SHARED, 'fla-vectors', 'dev');
const TOL = 1e-4;
const PROMPT = 'The jury said ';
const NEW_TOKENS = 24;

type Form = { form: 'parallel' | 'chunkwise' | 'recurrent'; chunkSize?: number };

describe('retnet/web in chromium', { skip: browserSkip() }, () => {
  let page: OpenPage;
  let tiny: string;
  before(async () => {
    tiny = tinyModelDir();
    const code = await bundle(join(ROOT, 'test', 'web', 'model-checks.ts'));
    const routes: Record<string, { file: string } | { type: string; body: string }> = {
      '/': { type: 'text/html', body: '<!doctype html><script type="module" src="/checks.js"></script>' },
      '/checks.js': { type: 'text/javascript', body: code },
    };
    // torchscale's cases are files of one folder: served as model directories.
    for (const name of ['dev_default', 'dev_options']) {
      routes[`/ts/${name}/config.json`] = { file: join(TS, `config_${name}.json`) };
      routes[`/ts/${name}/model.safetensors`] = { file: join(TS, `weights_${name}.safetensors`) };
    }
    page = await openPage({ routes, dirs: { '/fla/': FLA, '/tiny/': tiny } });
    await page.page.waitForFunction(() => 'retnetModel' in window);
  });
  after(async () => page?.close());

  const logits = async (url: string, device: string, tokens: number[], forms: Form[]) => {
    const r = (await page.page.evaluate(([u, d, t, f]) => window.retnetModel.logits(u, d, t, f), [
      url,
      device as 'webgpu' | 'cpu',
      tokens,
      forms,
    ] as const)) as { rows: number[][][]; errors: string[]; progress: number };
    assert.deepEqual(r.errors, [], page.logs.join('\n'));
    assert.ok(r.progress > 0, 'no progress was reported while loading');
    return r.rows.map((rows) => rows.flat());
  };

  for (const device of ['webgpu', 'cpu'])
    for (const name of ['dev_default', 'dev_options'])
      it(`torchscale ${name} on ${device}: parallel, chunkwise and recurrent logits (1e-4)`, async () => {
        const config = JSON.parse(readFileSync(join(TS, `config_${name}.json`), 'utf8')) as Record<string, unknown>;
        const tokens = JSON.parse(readFileSync(join(TS, `tokens_${name}.json`), 'utf8')) as number[];
        const expected = readSafetensors(join(TS, `expected_${name}.safetensors`)).tensors;
        const chunks = config._chunk_sizes_used_for_expected as number[];
        const forms: [string, Form][] = [
          ['logits.parallel', { form: 'parallel' }],
          ...chunks.map((c): [string, Form] => [`logits.chunk${c}`, { form: 'chunkwise', chunkSize: c }]),
          ['logits.recurrent', { form: 'recurrent' }],
        ];
        const got = await logits(
          `/ts/${name}/`,
          device,
          tokens,
          forms.map(([, f]) => f),
        );
        forms.forEach(([key], i) => assertClose(got[i]!, expected.get(key)!.data, TOL, `${name} ${device} ${key}`));
      });

  for (const device of ['webgpu', 'cpu'])
    it(`fla dev on ${device}: every form against fla's logits (1e-4)`, async () => {
      const ids = JSON.parse(readFileSync(join(FLA, 'tokens.json'), 'utf8')) as {
        single_input_ids: number[][];
        long_input_ids: number[][];
      };
      const expected = readSafetensors(join(FLA, 'expected.safetensors')).tensors;
      const forms: Form[] = [{ form: 'parallel' }, { form: 'chunkwise', chunkSize: 16 }, { form: 'recurrent' }];
      const single = await logits('/fla/', device, ids.single_input_ids[0]!, forms);
      single.forEach((g, i) =>
        assertClose(g, expected.get('logits.single')!.data, TOL, `fla single ${forms[i]!.form}`),
      );
      // T = 100 > 64: fla's chunk form ran; ours chunkwise with the model's chunk size.
      const [long] = await logits('/fla/', device, ids.long_input_ids[0]!, [{ form: 'chunkwise' }]);
      assertClose(long!, expected.get('logits.long.chunk')!.data, TOL, 'fla long chunkwise');
    });

  for (const [name, url] of [
    ['the tiny demo model (torchscale normalisation)', '/tiny/'],
    ['fla dev (no normalisation)', '/fla/'],
  ])
    for (const form of ['chunkwise', 'parallel'] as const)
      it(`${name}, ${form}: a packed multi-prompt prefill and a prefill continuing a state agree on webgpu and cpu`, async () => {
        // Prompts of 13, 1 and 6 tokens; prompt 0 again in pieces of 5 (5 + 5 + 3), then one step.
        const prompts = [[5, 17, 9, 33, 2, 8, 41, 7, 7, 19, 3, 60, 12], [11], [4, 4, 90, 23, 1, 6]];
        const run = (device: 'webgpu' | 'cpu') =>
          page.page.evaluate(([u, d, p, f]) => window.retnetModel.prefills(u, d, p, 5, f), [
            url,
            device,
            prompts,
            form,
          ] as const);
        const [gpu, cpu] = [await run('webgpu'), await run('cpu')];
        assert.equal(gpu.packed.length, prompts.length);
        gpu.packed.forEach((row, b) => assertClose(row, cpu.packed[b]!, TOL, `packed prompt ${b}`));
        assertClose(gpu.pieces, cpu.pieces, TOL, 'after the pieces');
        assertClose(gpu.step, cpu.step, TOL, 'the step after the pieces');
        // Un-normalised, every split is the same function: the pieces give prompt 0's logits as packed.
        if (url === '/fla/') assertClose(gpu.pieces, gpu.packed[0]!, TOL, 'pieces against the one-call prefill');
      });

  it('greedy generation in the page (webgpu and cpu) equals greedy generation in Node', async () => {
    const want = await nodeGreedy(tiny, PROMPT, NEW_TOKENS);
    assert.equal(want.tokens.length, NEW_TOKENS);
    for (const device of ['webgpu', 'cpu'] as const) {
      const got = (await page.page.evaluate(([u, d, p, n]) => window.retnetModel.greedy(u, d, p, n), [
        '/tiny/',
        device,
        PROMPT,
        NEW_TOKENS,
      ] as const)) as { tokens: number[]; text: string; created: number[] };
      assert.deepEqual(got.tokens, want.tokens, `${device}: tokens`);
      assert.equal(got.text, want.text, `${device}: text`);
      if (device === 'webgpu') {
        // After the first few steps the pool serves every buffer: no buffer is created per token.
        const late = got.created.slice(4);
        assert.equal(late[late.length - 1], late[0], `buffers created per step: ${got.created.join(',')}`);
      }
    }
  });
});
