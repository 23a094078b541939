// retnet/web in headless chromium: loadModel over fetch, model.logits on the webgpu device and on the host ('cpu')
// against the expected logits of ../shared (torchscale's dev cases, fla's dev case), 1e-4 relative in float32; and
// greedy generation in the page equal to greedy generation in Node for the same model directory and prompt.
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { readSafetensors } from '../src/io/safetensors.js';
import type { GenerationRequest } from '../src/generate/sequence.js';
import { type OpenPage, ROOT, browserSkip, bundle, nodeEvents, nodeGreedy, openPage, tinyModelDir } from './browser.js';
import { tempDir } from './temp.js';
import type { Route } from '../src/web/serve.js';
import { assertClose } from './helpers.js';

const SHARED = join(ROOT, '..', 'shared');
const TS = join(SHARED, 'torchscale-vectors');
const FLA = join(SHARED, 'fla-vectors', 'dev');
const TOL = 1e-4;
const PROMPT = 'The jury said ';
const PROMPT2 = 'In the city, ';
const NEW_TOKENS = 64;

/**
 * Events equal: every field exactly but log-probabilities (float32 logits from other kernels: 1e-4 absolute); the
 * alternatives' order may differ only between ties within that tolerance.
 */
function sameEvents(got: unknown, expected: unknown, where: string): void {
  if (typeof expected === 'number' && typeof got === 'number' && !Number.isInteger(expected)) {
    assert.ok(Math.abs(got - expected) <= 1e-4, `${where}: ${got} vs ${expected}`);
    return;
  }
  if (expected === null || typeof expected !== 'object') return assert.equal(got, expected, where);
  assert.ok(got !== null && typeof got === 'object', `${where}: ${JSON.stringify(got)}`);
  const [g, e] = [got as Record<string, unknown>, expected as Record<string, unknown>];
  assert.deepEqual(Object.keys(g).sort(), Object.keys(e).sort(), `${where}: fields`);
  for (const k of Object.keys(e)) sameEvents(g[k], e[k], `${where}.${k}`);
}

type Form = { form: 'parallel' | 'chunkwise' | 'recurrent'; chunkSize?: number };

/** A safetensors file's header and data section, and the file again from an edited header. */
function splitSafetensors(bytes: Uint8Array): {
  header: Record<string, { dtype: string; shape: number[] }>;
  data: Uint8Array;
} {
  const len = Number(Buffer.from(bytes).readBigUInt64LE(0));
  return { header: JSON.parse(Buffer.from(bytes.subarray(8, 8 + len)).toString()), data: bytes.subarray(8 + len) };
}
function joinSafetensors(header: unknown, data: Uint8Array): Uint8Array {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

/** Broken copies of a checkpoint, one per way a file can be wrong (the test names the message each must give). */
function badWeights(bytes: Uint8Array) {
  const edit = (f: (header: Record<string, { dtype: string; shape: number[] }>) => void) => {
    const { header, data } = splitSafetensors(bytes);
    f(header);
    return joinSafetensors(header, data);
  };
  // The first 2-D weight of the file (a matrix with two different dims).
  const matrix = (h: Record<string, { shape: number[] }>) =>
    Object.keys(h).find((n) => h[n]!.shape?.length === 2 && h[n]!.shape[0] !== h[n]!.shape[1])!;
  const headerLength = Buffer.from(bytes);
  headerLength.writeBigUInt64LE(BigInt(bytes.length), 0);
  return {
    truncated: bytes.subarray(0, bytes.length - 100),
    // Sent in chunks with no Content-Length: the stream itself ends early.
    truncatedStream: [bytes.subarray(0, 1000), bytes.subarray(1000, bytes.length - 100)],
    headerLength: new Uint8Array(headerLength),
    trailing: [bytes, new Uint8Array(5)],
    shape: edit((h) => void h[matrix(h)]!.shape.reverse()),
    dtype: edit((h) => void (h[matrix(h)]!.dtype = 'I32')),
    dtypeSize: edit((h) => void (h[matrix(h)]!.dtype = 'F16')),
  };
}

describe('retnet/web in chromium', { skip: browserSkip() }, () => {
  let page: OpenPage;
  let tiny: string;
  let tinyEos: string;
  before(async () => {
    tiny = tinyModelDir();
    const code = await bundle(join(ROOT, 'test', 'web', 'model-checks.ts'));
    const routes: Record<string, Route> = {
      '/': { type: 'text/html', body: '<!doctype html><script type="module" src="/checks.js"></script>' },
      '/checks.js': { type: 'text/javascript', body: code },
    };
    // torchscale's cases are files of one folder: served as model directories.
    for (const name of ['dev_default', 'dev_options']) {
      routes[`/ts/${name}/config.json`] = { file: join(TS, `config_${name}.json`) };
      routes[`/ts/${name}/model.safetensors`] = { file: join(TS, `weights_${name}.safetensors`) };
    }
    // The tiny model sent in chunks without a Content-Length (its size known only from its header).
    const tinyBytes = readFileSync(join(tiny, 'model.safetensors'));
    routes['/tiny-chunked/config.json'] = { file: join(tiny, 'config.json') };
    routes['/tiny-chunked/model.safetensors'] = {
      type: 'application/octet-stream',
      body: Array.from({ length: Math.ceil(tinyBytes.length / 4093) }, (_, i) =>
        tinyBytes.subarray(i * 4093, (i + 1) * 4093),
      ),
    };
    for (const [name, bytes] of Object.entries(badWeights(tinyBytes))) {
      routes[`/bad/${name}/config.json`] = { file: join(tiny, 'config.json') };
      routes[`/bad/${name}/model.safetensors`] = { type: 'application/octet-stream', body: bytes };
    }
    // The package's retnet/web file (package.json's exports["./web"], built by npm run build:web).
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      exports: Record<string, { default: string }>;
    };
    routes['/package/retnet-web.js'] = { file: join(ROOT, pkg.exports['./web']!.default) };
    // The tiny model again, with a generation_config.json the events test writes.
    tinyEos = tempDir('retnet-web-tiny-eos-');
    for (const f of readdirSync(tiny)) copyFileSync(join(tiny, f), join(tinyEos, f));
    page = await openPage({ routes, dirs: { '/fla/': FLA, '/tiny/': tiny, '/tiny-eos/': tinyEos } });
    await page.page.waitForFunction(() => 'retnetModel' in window);
  });
  after(async () => page?.close());

  /** The page said no kernel fell back to the reference kernels (a line each, the first time; see kernels.ts). */
  const noFallback = () =>
    assert.deepEqual(
      page.logs.filter((l) => /running the reference kernel/.test(l)),
      [],
      'webgpu inference used only its own kernels',
    );

  const logits = async (
    url: string | { url: string; files: string[] },
    device: string,
    tokens: number[],
    forms: Form[],
    float16Weights?: boolean,
  ) => {
    const r = await page.page.evaluate(([u, d, t, f, h]) => window.retnetModel.logits(u, d, t, f, h), [
      url,
      device as 'webgpu' | 'cpu',
      tokens,
      forms,
      float16Weights,
    ] as const);
    assert.deepEqual(r.errors, [], page.logs.join('\n'));
    noFallback();
    // Every file's progress went up only and reached its size.
    const files = Object.keys(r.progress);
    assert.ok(
      files.some((f) => f.endsWith('.safetensors')),
      `progress named no weights file: ${files.join(', ')}`,
    );
    for (const [file, p] of Object.entries(r.progress)) {
      assert.ok(p.monotone, `${file}: progress went backwards or changed its total`);
      assert.ok(p.total !== null && p.loaded === p.total, `${file}: progress ended at ${p.loaded} of ${p.total}`);
    }
    return { rows: r.rows.map((rows) => rows.flat()), progress: r.progress, weightBytes: r.weightBytes };
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
        const { rows: got } = await logits(
          `/ts/${name}/`,
          device,
          tokens,
          forms.map(([, f]) => f),
        );
        forms.forEach(([key], i) => assertClose(got[i]!, expected.get(key)!.data, TOL, `${name} ${device} ${key}`));
      });

  // fla's dev case as stored (F64), in BF16, and in BF16 shards read from picked files (File.stream()). Its weights
  // are bfloat16 values in every copy, so the logits agree within float32's tolerance in 16-bit storage too.
  const FLA_COPIES: [string, string | { url: string; files: string[] }][] = [
    ['F64', '/fla/'],
    ['BF16', '/fla/bf16/'],
    [
      'BF16 shards, picked files',
      {
        url: '/fla/sharded/',
        files: [
          'config.json',
          'model.safetensors.index.json',
          ...[1, 2, 3].map((i) => `model-0000${i}-of-00003.safetensors`),
        ],
      },
    ],
  ];
  // The F64 copy loads widened to float32; the BF16 copies keep their Linear and Embedding weights in 16 bits.
  const f32Bytes = new Map<string, number>();
  for (const device of ['webgpu', 'cpu'])
    for (const [copy, source] of FLA_COPIES)
      it(`fla dev (${copy}) on ${device}: every form against fla's logits (1e-4)`, async () => {
        const ids = JSON.parse(readFileSync(join(FLA, 'tokens.json'), 'utf8')) as {
          single_input_ids: number[][];
          long_input_ids: number[][];
        };
        const expected = readSafetensors(join(FLA, 'expected.safetensors')).tensors;
        const forms: Form[] = [{ form: 'parallel' }, { form: 'chunkwise', chunkSize: 16 }, { form: 'recurrent' }];
        const { rows: single, progress, weightBytes } = await logits(source, device, ids.single_input_ids[0]!, forms);
        if (copy === 'F64') f32Bytes.set(device, weightBytes);
        else {
          const ratio = weightBytes / f32Bytes.get(device)!;
          assert.ok(ratio > 0.5 && ratio < 0.55, `${copy}: ${weightBytes} bytes of tensors, ${ratio} of float32's`);
        }
        single.forEach((g, i) =>
          assertClose(g, expected.get('logits.single')!.data, TOL, `fla single ${forms[i]!.form}`),
        );
        if (typeof source !== 'string')
          assert.deepEqual(Object.keys(progress).sort(), [...source.files].sort(), 'each picked file was read');
        // T = 100 > 64: fla's chunk form ran; ours chunkwise with the model's chunk size.
        const {
          rows: [long],
        } = await logits(source, device, ids.long_input_ids[0]!, [{ form: 'chunkwise' }]);
        assertClose(long!, expected.get('logits.long.chunk')!.data, TOL, 'fla long chunkwise');
      });

  it("float16Weights holds a float32 checkpoint's Linear weights in 16 bits on webgpu; the default keeps them float32 without shader-f16", async () => {
    const tokens = [5, 17, 9, 33, 2, 8, 41];
    const forms: Form[] = [{ form: 'parallel' }, { form: 'recurrent' }];
    const stored = await logits('/tiny/', 'webgpu', tokens, forms, false);
    const asDefault = await logits('/tiny/', 'webgpu', tokens, forms, undefined);
    const half = await logits('/tiny/', 'webgpu', tokens, forms, true);
    // SwiftShader has no shader-f16: the default is float32, to the byte and the bit.
    assert.equal(asDefault.weightBytes, stored.weightBytes);
    assert.deepEqual(asDefault.rows, stored.rows);
    assert.ok(half.weightBytes < 0.75 * stored.weightBytes, `${half.weightBytes} vs ${stored.weightBytes} bytes`);
    half.rows.forEach((row, f) => {
      const want = stored.rows[f]!;
      const diff = Math.max(...row.map((x, j) => Math.abs(x - want[j]!)));
      const scale = Math.max(...want.map(Math.abs));
      // float16 keeps 11 significant bits: the weights' rounding (2^-12 relative) moves the logits, but only so far
      assert.ok(diff > 0 && diff < 2e-2 * scale, `${forms[f]!.form}: max |diff| ${diff}, max |logit| ${scale}`);
    });
  });

  it("the package's built retnet/web file loads the model and gives the logits of the source's bundle", async () => {
    const tokens = [5, 17, 9, 33, 2, 8, 41];
    const want = await logits('/tiny/', 'webgpu', tokens, [{ form: 'parallel' }]);
    const got = await page.page.evaluate(([b, u, t]) => window.retnetModel.bundleLogits(b, u, t), [
      '/package/retnet-web.js',
      '/tiny/',
      tokens,
    ] as const);
    assertClose(got.flat(), want.rows[0]!, TOL, 'built bundle against the source bundle');
    noFallback();
  });

  it('a checkpoint sent without a Content-Length streams in (its size from its header) and gives the same logits', async () => {
    const tokens = [5, 17, 9, 33, 2, 8, 41];
    const want = await logits('/tiny/', 'cpu', tokens, [{ form: 'parallel' }]);
    const got = await logits('/tiny-chunked/', 'cpu', tokens, [{ form: 'parallel' }]);
    assert.deepEqual(got.rows, want.rows);
    const p = got.progress['model.safetensors']!;
    assert.equal(p.total, statSync(join(tiny, 'model.safetensors')).size);
    assert.ok(p.events > 10, `the file came in ${p.events} progress events (chunks of 4093 bytes)`);
  });

  it('bad checkpoints fail to load with errors naming the file and the field', async () => {
    const expected: Record<keyof ReturnType<typeof badWeights>, RegExp> = {
      truncated:
        /^FormatError: \S+\/bad\/truncated\/model\.safetensors: tensor '[^']+': data_offsets \[\d+, \d+\] lie outside the data section/,
      truncatedStream:
        /^FormatError: \S+\/bad\/truncatedStream\/model\.safetensors: the file ends at byte \d+, but tensor '[^']+' needs bytes up to \d+/,
      headerLength:
        /^FormatError: \S+\/bad\/headerLength\/model\.safetensors: header length \d+ exceeds the file \(\d+ bytes\)/,
      trailing: /^FormatError: \S+\/bad\/trailing\/model\.safetensors: 5 bytes follow the data section/,
      shape:
        /^ShapeError: \S+\/bad\/shape\/model\.safetensors: tensor '([^']+)' has shape \[\d+, \d+\], the model that \S+config\.json describes expects \[\d+, \d+\]/,
      dtype:
        /^FormatError: \S+\/bad\/dtype\/model\.safetensors: tensor '[^']+' is stored as I32; the model that \S+ describes holds it in float32/,
      dtypeSize:
        /^FormatError: \S+\/bad\/dtypeSize\/model\.safetensors: tensor '[^']+': \d+ bytes of data for shape \[\d+(, \d+)*\] of F16 \(need \d+\)/,
    };
    for (const [name, re] of Object.entries(expected)) {
      const message = await page.page.evaluate((u) => window.retnetModel.loadError(u, 'webgpu'), `/bad/${name}/`);
      assert.match(message ?? 'it loaded', re, name);
    }
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
        noFallback();
      });

  it('greedy generation in the page (webgpu and cpu) equals greedy generation in Node; webgpu allocates nothing per token', async () => {
    const want = await nodeGreedy(tiny, PROMPT, NEW_TOKENS, true);
    assert.equal(want.tokens.length, NEW_TOKENS);
    for (const device of ['webgpu', 'cpu'] as const) {
      const got = await page.page.evaluate(([u, d, p, n]) => window.retnetModel.greedy(u, d, p, n), [
        '/tiny/',
        device,
        PROMPT,
        NEW_TOKENS,
      ] as const);
      assert.deepEqual(got.tokens, want.tokens, `${device}: tokens`);
      assert.equal(got.text, want.text, `${device}: text`);
      if (device === 'webgpu') {
        // After the first few steps the pool serves every buffer: no buffer is created per token, and the tensor
        // bytes live at each token are the same (RetNet's state is fixed-size; nothing a step made is left over) but
        // at the last, when the finished sequence's state is already freed: the weights alone.
        const late = got.created.slice(4);
        assert.equal(late.length, NEW_TOKENS - 4);
        assert.equal(late[late.length - 1], late[0], `buffers created per step: ${got.created.join(',')}`);
        const live = got.live.slice(4, -1);
        assert.ok(
          live.every((b) => b === live[0]) && got.live.at(-1)! < live[0]!,
          `tensor bytes per step: ${got.live.join(',')}`,
        );
      }
    }
    noFallback();
  });

  it("generate() in the page gives Node's events: seeded sampling, logprobs, stop strings, generation_config's eos", async () => {
    // Node's greedy continuation of PROMPT2 in the tiny model: its end-of-text id for the directory is a token that
    // appears first at position 5 or later, and a stop string is two characters from the middle of its text.
    const greedy = await nodeGreedy(tiny, PROMPT2, 40, true);
    const eos = greedy.tokens.find((t, i) => i >= 5 && greedy.tokens.indexOf(t) === i)!;
    assert.ok(eos !== undefined, `no new token after position 5 in ${greedy.tokens.join(',')}`);
    writeFileSync(join(tinyEos, 'generation_config.json'), JSON.stringify({ eos_token_id: eos }));
    assert.ok(greedy.text.length > 20, `a short text: ${JSON.stringify(greedy.text)}`);
    const stopAt = Math.floor(greedy.text.length / 2);
    const requests: GenerationRequest[] = [
      { prompt: PROMPT2, maxNewTokens: 40, sampling: { temperature: 0 } },
      {
        prompt: PROMPT,
        maxNewTokens: 12,
        sampling: { temperature: 0.9, topK: 40, topP: 0.9, repetitionPenalty: 1.2, seed: 11 },
        logprobs: 3,
        promptLogprobs: 2,
        ignoreEos: true,
      },
      {
        prompt: PROMPT2,
        maxNewTokens: 40,
        sampling: { temperature: 0 },
        stop: [greedy.text.slice(stopAt, stopAt + 2)],
        eosIds: [256],
      },
      {
        prompt: [5, 17, 9],
        maxNewTokens: 8,
        sampling: { temperature: 0.7, minP: 0.05, presencePenalty: 0.5, frequencyPenalty: 0.3, seed: 3 },
      },
    ];
    const expected = await nodeEvents(tinyEos, requests);
    // End events come as sequences end; by request:
    const ends = expected.filter((e) => e.type === 'end').sort((a, b) => a.index - b.index);
    assert.deepEqual(
      ends.map((e) => e.finishReason),
      ['stop', 'length', 'stop', ends[3]!.finishReason],
      'the eos id and the stop string ended their sequences',
    );
    for (const device of ['webgpu', 'cpu'] as const) {
      const got = await page.page.evaluate(([u, d, r]) => window.retnetModel.events(u, d, r), [
        '/tiny-eos/',
        device,
        requests,
      ] as const);
      assert.deepEqual(got.eosIds, [eos, 256], `${device}: the directory's eos ids`);
      sameEvents(got.events, expected, device);
    }
    noFallback();
  });
});
