// The webgpu device's kernels in headless chromium (SwiftShader's WebGPU adapter) against the reference kernels on the
// same inputs, in the page: 1e-4 relative to max(1, max |reference|) for float32 results, one unit in the last place
// for results rounded to bfloat16/float16 (exact for lookups and copies); the 16-bit storage bit for bit. Also: the buffer pool absorbs repeated
// allocations, and no GPU validation error was reported.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { type OpenPage, ROOT, browserSkip, bundle, openPage } from './browser.js';
import type { CheckResult } from './web/kernel-checks.js';

const skip = browserSkip();

describe('webgpu kernels in chromium', { skip }, () => {
  let page: OpenPage;
  before(async () => {
    const code = await bundle(join(ROOT, 'test', 'web', 'kernel-checks.ts'));
    page = await openPage({
      routes: {
        '/': { type: 'text/html', body: '<!doctype html><script type="module" src="/checks.js"></script>' },
        '/checks.js': { type: 'text/javascript', body: code },
      },
    });
    await page.page.waitForFunction(() => 'retnetTest' in window);
  });
  after(async () => page?.close());

  it('every kernel matches the reference kernel (1e-4 relative, float32)', async () => {
    const { results, errors } = (await page.page.evaluate(() => window.retnetTest.kernelChecks!())) as {
      results: CheckResult[];
      errors: string[];
    };
    assert.deepEqual(errors, [], page.logs.join('\n'));
    assert.ok(results.length > 100, `only ${results.length} checks ran`);
    assert.ok(results.filter((r) => /bfloat16/.test(r.name)).length > 20, 'the 16-bit weight kernels ran');
    assert.ok(results.filter((r) => /float16 state/.test(r.name)).length >= 2, 'the float16 state steps ran');
    const bad = results.filter((r) => !(r.err <= r.tol));
    assert.deepEqual(
      bad.map((r) => `${r.name} ${r.shapes}: ${r.err} (tolerance ${r.tol})`),
      [],
    );
  });

  it('16-bit storage (bfloat16, float16 packed two per word) equals the host bit for bit', async () => {
    const r = (await page.page.evaluate(() => window.retnetTest.storageChecks!())) as {
      bad: string[];
      checks: number;
      errors: string[];
    };
    assert.deepEqual(r.errors, [], page.logs.join('\n'));
    assert.ok(r.checks >= 30, `only ${r.checks} checks ran`);
    assert.deepEqual(r.bad, []);
  });

  it('kernels the device lacks run on the host in stream order, said once each', async () => {
    const r = (await page.page.evaluate(() => window.retnetTest.fallbackCheck!())) as {
      err: number;
      missing: string[];
      hostNumber: string;
      failure: string;
    };
    // The check means something only while webgpu lacks these kernels; when one gains a kernel, pick another.
    assert.deepEqual(r.missing, ['rmsNormBackward', 'permute', 'adamw', 'crossEntropy']);
    assert.ok(r.err <= 1e-5, `the chain on webgpu differs from the reference by ${r.err}`);
    assert.match(r.hostNumber, /sumSquares: .*host number/);
    assert.match(r.failure, /crossEntropy: .*9 at position 1 is outside the vocabulary/);
    for (const name of r.missing) {
      const lines = page.logs.filter((l) => l.includes(`no ${name} kernel for float32; running the reference kernel`));
      assert.equal(lines.length, 1, `${name}: ${lines.length} lines\n${page.logs.join('\n')}`);
    }
  });

  it('repeated allocations reuse pooled buffers', async () => {
    const r = (await page.page.evaluate(() => window.retnetTest.poolCheck!())) as {
      first: number;
      later: number;
      memory: number;
    };
    assert.equal(r.later, 0, `20 more rounds created ${r.later} buffers`);
    assert.equal(r.memory, 0, 'tensor bytes left after every tensor of the rounds was disposed');
  });
});
