// The example page's build: `npm run build:web` bundles the library (retnet/web) and the page's script with esbuild
// into dist/web/, next to index.html; `retnet serve-web DIR` serves those with a model directory under /model/. The
// tests bundle from source with the same function (serveWeb) and make the tiny demo model (writeDemoModel).
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { build } from 'esbuild';

import { saveModelDir } from '../../src/io/model-dir.js';
import { createModel } from '../../src/models/registry.js';
import { ByteTokenizer } from '../../src/tokenizer/tokenizer.js';
import { type RunningStatic, pageSite, startStaticServer } from '../../src/web/serve.js';

const HERE = import.meta.dirname;

const NODE_MODULE_SHIM = resolve(HERE, '..', '..', 'src', 'web', 'node-module-shim.ts');

/**
 * An ES module bundle of `entry` for the browser (esbuild), as text. node:module, which the tokenizer uses for its lazy
 * require on Node, becomes src/web/node-module-shim.ts; any other Node built-in fails the build.
 */
export async function bundleForBrowser(entry: string, minify = false): Promise<string> {
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    platform: 'browser',
    format: 'esm',
    minify,
    write: false,
    logLevel: 'silent',
    plugins: [
      {
        name: 'node-module-shim',
        setup: (b) => b.onResolve({ filter: /^node:module$/ }, () => ({ path: NODE_MODULE_SHIM })),
      },
    ],
  });
  return result.outputFiles[0]!.text;
}

/** The tiny demo model (`retnet demo`'s preset, byte tokenizer) with seeded random weights, as a model directory. */
export function writeDemoModel(dir: string, seed = 7): void {
  const tokenizer = new ByteTokenizer();
  const model = createModel('retnet', 'tiny', { vocabSize: tokenizer.vocabSize }, { seed });
  saveModelDir(dir, model, tokenizer);
  model.dispose();
}

/** Bundles the page script from source and serves it with index.html and `modelDir` under /model/ (the tests). */
export async function serveWeb(modelDir: string | null, port = 0): Promise<RunningStatic> {
  const app = await bundleForBrowser(resolve(HERE, 'app.ts'));
  return startStaticServer(
    pageSite(modelDir, resolve(HERE, 'index.html'), { type: 'text/javascript; charset=utf-8', body: app }),
    port,
  );
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(HERE, 'serve.ts') && process.argv[2] === '--build') {
  // npm run build:web: the retnet/web bundle (package.json's exports["./web"]) and the example page that `retnet
  // serve-web` serves (index.html, app.js) into dist/web/.
  const out = resolve(HERE, '..', '..', 'dist', 'web');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'retnet.js'), await bundleForBrowser(resolve(HERE, '..', '..', 'src', 'web.ts')));
  writeFileSync(join(out, 'app.js'), await bundleForBrowser(resolve(HERE, 'app.ts')));
  copyFileSync(resolve(HERE, 'index.html'), join(out, 'index.html'));
}
