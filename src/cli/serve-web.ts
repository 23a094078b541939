// `retnet serve-web DIR`: serves the browser example page (examples/web, built into dist/web/ by `npm run build:web`)
// with the model directory DIR under /model/, on 127.0.0.1 by default: WebGPU exists only in secure contexts, which
// a page from http://localhost is. Nothing else is served: the page, its script, and the files inside DIR
// (src/web/serve.ts confines every path to its folder: no '..', no symbolic link out of it). Ctrl-C or SIGTERM stops.

import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

import { packageRoot } from '../backend/cpu/load.js';
import { RetnetError } from '../errors.js';
import { pageSite, startStaticServer } from '../web/serve.js';
import { UsageError, defineCommand, int } from './command.js';
import { hostFlag, listenError } from './serve.js';

/** The built page: dist/web/index.html and app.js (the page script bundled with the library). */
function builtPage(): { html: string; app: string } {
  const dir = join(packageRoot(), 'dist', 'web');
  const page = { html: join(dir, 'index.html'), app: join(dir, 'app.js') };
  for (const f of Object.values(page))
    if (!existsSync(f)) throw new RetnetError(`serve-web: ${f} is missing: build the page with \`npm run build:web\``);
  return page;
}

export const serveWebCommand = defineCommand({
  name: 'serve-web',
  summary: 'serve the browser example page with a model directory (open the printed URL in a browser with WebGPU)',
  args: [{ name: '<dir>', help: 'the model directory (config.json, the safetensors weights, tokenizer.json)' }],
  flags: {
    port: int('the TCP port; 0 picks a free one', { min: 0, max: 65535, default: 8080 }),
    host: hostFlag,
  },
  async run({ values, positionals }) {
    const dir = positionals[0]!;
    if (!existsSync(dir)) throw new UsageError(`serve-web: ${dir}: model directory does not exist`);
    if (!statSync(dir).isDirectory()) throw new UsageError(`serve-web: ${dir}: not a directory`);
    if (!existsSync(join(dir, 'config.json')))
      throw new UsageError(`serve-web: ${dir} has no config.json (expected a model directory)`);
    const page = builtPage();
    const site = await startStaticServer(pageSite(dir, page.html, { file: page.app }), values.port, values.host).catch(
      (e: NodeJS.ErrnoException) => {
        throw listenError(e, values.host, values.port);
      },
    );
    process.stdout.write(`retnet serve-web: serving ${resolve(dir)} at ${site.url}/ (the page loads /model/)\n`);
    await new Promise<void>((done) => {
      process.once('SIGTERM', done);
      process.once('SIGINT', done);
    });
    await site.close();
    return 0;
  },
});
