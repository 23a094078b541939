// The core runs anywhere: src/index.ts bundles for the browser platform with no Node built-in anywhere in its import
// graph (the Node-only parts sit behind src/node.ts), and the bundle computes on the reference device.
import assert from 'node:assert/strict';
import { builtinModules } from 'node:module';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { build } from 'esbuild';

import { bundleForBrowser } from '../examples/web/serve.js';

const ROOT = join(import.meta.dirname, '..');
const BUILTINS = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));

/** Bundles an entry for the browser platform; returns the code and the Node built-ins it imports (with importers). */
async function bundle(entry: string): Promise<{ code: string; builtins: string[] }> {
  const found: string[] = [];
  const result = await build({
    entryPoints: [join(ROOT, 'src', entry)],
    bundle: true,
    platform: 'browser',
    format: 'esm',
    write: false,
    logLevel: 'silent',
    plugins: [
      {
        name: 'no-node-builtins',
        setup(b) {
          b.onResolve({ filter: /.*/ }, (args) => {
            if (args.path.startsWith('node:') || BUILTINS.has(args.path)) {
              found.push(`${args.path} (imported by ${args.importer.slice(ROOT.length + 1)})`);
              return { path: args.path, external: true };
            }
            return undefined;
          });
        },
      },
    ],
  });
  assert.equal(result.errors.length, 0);
  return { code: result.outputFiles[0]!.text, builtins: found };
}

describe('portable core', () => {
  it('src/index.ts bundles for the browser without any Node built-in, and computes', async () => {
    const { code, builtins } = await bundle('index.ts');
    assert.deepEqual(builtins, [], `Node built-ins in the core:\n${builtins.join('\n')}`);
    // The bundle on its own: a model's forward pass on the default device, which is the reference device there.
    const core = (await import(
      `data:text/javascript;base64,${Buffer.from(code).toString('base64')}`
    )) as typeof import('../src/index.js');
    const model = core.createModel('retnet', 'tiny', { vocabSize: 17, layers: 1 }, { seed: 1 });
    const logits = core.noGrad(() => model.forward(core.tensor([1, 2, 3], [1, 3], { dtype: 'int32' })));
    assert.deepEqual(logits.shape, [1, 3, 17]);
    assert.equal(logits.device.name, 'reference');
    assert.ok(Array.from(logits.data()).every(Number.isFinite));
  });

  it('src/web.ts (retnet/web) bundles for the browser: only node:module, which the bundle maps to a shim', async () => {
    const { builtins } = await bundle('web.ts');
    assert.deepEqual(
      builtins.map((b) => b.split(' ')[0]),
      ['node:module'],
      `Node built-ins in the browser entry:\n${builtins.join('\n')}`,
    );
    assert.ok((await bundleForBrowser(join(ROOT, 'src', 'web.ts'))).includes('retnet/web: '));
  });

  it('the check sees the built-ins of the Node-only entry', async () => {
    const { builtins } = await bundle('node.ts');
    assert.ok(
      builtins.some((b) => b.startsWith('node:fs')),
      builtins.join('\n'),
    );
  });
});
