// The npm package: the tarball holds what a user needs and nothing else, `import 'retnet'` loads none of the heavy or
// optional packages (the HTTP server, charts, the BPE trainer), and a missing optional package is a clear error.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, it } from 'node:test';

import { tempDir } from './temp.js';

const ROOT = join(import.meta.dirname, '..');

describe('npm package', () => {
  it('the tarball holds dist/ (JS, types, maps), the CLI, the native sources, README and LICENSE; nothing else', () => {
    const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    const files = (JSON.parse(out) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path);
    for (const f of ['package.json', 'README.md', 'LICENSE', 'bin/retnet.js', 'binding.gyp', 'dist/src/index.js'])
      assert.ok(files.includes(f), `${f} is in the tarball`);
    assert.ok(files.includes('dist/src/index.d.ts') && files.includes('dist/src/index.js.map'));
    assert.ok(
      files.some((f) => /^native\/.*\.cc$/.test(f)),
      'native sources for a source build',
    );
    for (const f of files.filter((p) => p.startsWith('dist/src/') && p.endsWith('.js'))) {
      assert.ok(files.includes(f.replace(/\.js$/, '.d.ts')), `${f} has its types`);
      assert.ok(files.includes(`${f}.map`), `${f} has its source map`);
      const source = join(ROOT, f.replace(/^dist\//, '').replace(/\.js$/, '.ts'));
      assert.ok(existsSync(source), `${f} is built from ${source} (npm run build clears stale output)`);
    }
    const unwanted = [
      /^test\//,
      /^dist\/(test|examples)\//,
      /^bench\/results\//,
      /^docs\//,
      /^\.ci\//,
      /^(eslint\.config\.js|tsconfig\.json|typedoc\.json|\.prettierrc\.json|\.prettierignore|BENCHMARKS\.md)$/,
      /\.test\.(js|ts|d\.ts)$/,
      /^dist\/bench\/.*\.d\.ts$/,
    ];
    for (const f of files) assert.ok(!unwanted.some((re) => re.test(f)), `${f} does not belong in the tarball`);
  });

  it('package.json: exports with types and ./package.json, engines, keywords, the bin', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Record<string, unknown>;
    const exports = pkg.exports as Record<string, unknown>;
    assert.equal(exports['./package.json'], './package.json');
    assert.ok(JSON.stringify(exports['.']).includes('"types":"./dist/src/index.d.ts"'));
    assert.deepEqual(pkg.engines, { node: '>=20' });
    assert.ok(Array.isArray(pkg.keywords) && pkg.keywords.includes('retnet'));
    assert.deepEqual(pkg.bin, { retnet: './bin/retnet.js' });
    // Optional peers are not installed with retnet, and every one of them is what src/optional.ts loads.
    const peers = Object.keys(pkg.peerDependencies as object).sort();
    assert.deepEqual(peers, ['@resvg/resvg-js', 'tokenizers', 'vega']);
    for (const p of peers)
      assert.equal((pkg.peerDependenciesMeta as Record<string, { optional: boolean }>)[p]!.optional, true);
    for (const p of peers) assert.equal((pkg.dependencies as Record<string, string>)[p], undefined);
  });

  it("import 'retnet' loads neither the HTTP server nor the optional packages", () => {
    const dir = tempDir('retnet-import-');
    const log = join(dir, 'loaded.txt');
    const hooks = join(dir, 'hooks.mjs');
    writeFileSync(
      hooks,
      "import { appendFileSync } from 'node:fs';\n" +
        'export async function resolve(s, c, next) { const r = await next(s, c); ' +
        "appendFileSync(process.env.LOG, r.url + '\\n'); return r; }\n",
    );
    const register = join(dir, 'register.mjs');
    writeFileSync(
      register,
      `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`,
    );
    // The package's name resolves through its own exports, as in a project that installed it: on Node that is
    // dist/src/node.js (the core plus the cpu device and the Node-only parts).
    const r = spawnSync(
      process.execPath,
      ['--import', register, '--input-type=module', '-e', "await import('retnet')"],
      { cwd: ROOT, env: { ...process.env, LOG: log }, encoding: 'utf8' },
    );
    assert.equal(r.status, 0, r.stderr);
    const loaded = readFileSync(log, 'utf8');
    assert.match(loaded, /dist\/src\/node\.js/);
    const heavy = ['fastify', '@fastify/cors', 'prom-client', '@huggingface/jinja', '@huggingface/tokenizers'];
    for (const p of [...heavy, 'vega', 'tokenizers', '@resvg/resvg-js'])
      assert.doesNotMatch(loaded, new RegExp(`/node_modules/${p}/`), `import 'retnet' loaded ${p}`);
  });

  it('a missing optional package is one clear line naming what needs it and how to install it', () => {
    // A resolve hook that finds no 'vega', as in an install without the optional peers.
    const dir = tempDir('retnet-optional-');
    const hooks = join(dir, 'hooks.mjs');
    writeFileSync(
      hooks,
      "export async function resolve(s, c, next) { if (s === 'vega') { const e = new Error(`Cannot find package 'vega' imported from ${c.parentURL}`); e.code = 'ERR_MODULE_NOT_FOUND'; throw e; } return next(s, c); }\n",
    );
    const register = join(dir, 'register.mjs');
    writeFileSync(
      register,
      `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`,
    );
    writeFileSync(join(dir, 'metrics.jsonl'), '{"type":"train","step":1,"loss":2}\n');
    const r = spawnSync(
      process.execPath,
      ['--import', register, join(ROOT, 'bin', 'retnet.js'), 'plot', dir, '--out', join(dir, 'chart')],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 1, r.stderr);
    assert.equal(
      r.stderr,
      "retnet plot: drawing charts (retnet plot, benchmark charts) needs the optional package 'vega', which is not " +
        'installed; install it beside retnet: npm install vega@6.4.0\n',
    );
  });
});
