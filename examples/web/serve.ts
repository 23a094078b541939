// Serves the example page with a model directory on localhost: `npm run serve-web -- DIR [PORT]`, then open the URL
// it prints (WebGPU needs a secure context, which localhost is). Without DIR it serves the tiny demo model with
// untrained (seeded random) weights, which generates noise but exercises everything. The page's script is bundled
// with the library here by esbuild; the model directory is served under /model/.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

import { build } from 'esbuild';

import { saveModelDir } from '../../src/io/model-dir.js';
import { createModel } from '../../src/models/registry.js';
import { ByteTokenizer } from '../../src/tokenizer/tokenizer.js';
import { type RunningStatic, startStaticServer } from '../../src/web/serve.js';

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

/** Bundles the page script and serves index.html, app.js and `modelDir` under /model/. */
export async function serveWeb(modelDir: string | null, port = 0): Promise<RunningStatic> {
  const app = await bundleForBrowser(resolve(HERE, 'app.ts'));
  return startStaticServer(
    {
      routes: {
        '/': { file: resolve(HERE, 'index.html') },
        '/app.js': { type: 'text/javascript; charset=utf-8', body: app },
      },
      dirs: modelDir ? { '/model/': resolve(modelDir) } : {},
    },
    port,
  );
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(HERE, 'serve.ts') && process.argv[2] === '--build') {
  // npm run build:web: the retnet/web bundle into dist/web/ (package.json's exports["./web"]).
  const out = resolve(HERE, '..', '..', 'dist', 'web', 'retnet.js');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, await bundleForBrowser(resolve(HERE, '..', '..', 'src', 'web.ts')));
} else if (process.argv[1] && resolve(process.argv[1]) === resolve(HERE, 'serve.ts')) {
  const [given, port] = process.argv.slice(2);
  let dir = given;
  if (!dir) {
    dir = mkdtempSync(join(tmpdir(), 'retnet-web-demo-'));
    writeDemoModel(dir);
    process.on('SIGINT', () => process.exit(0));
    process.on('exit', () => rmSync(dir!, { recursive: true, force: true }));
    process.stdout.write('no model directory given: serving the tiny demo model with untrained weights\n');
  }
  const site = await serveWeb(dir, port ? Number(port) : 8080);
  process.stdout.write(`serving ${resolve(dir)} at ${site.url}/ (the page loads /model/); Ctrl-C stops\n`);
}
