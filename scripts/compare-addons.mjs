#!/usr/bin/env node
// Runs benchmark suites against two or more builds of the cpu addon in turns, so that load from other processes
// falls on every build alike: `node scripts/compare-addons.mjs --out DIR --turns 2 --suite "gemm --quick"
// --suite "lowp --quick" portable=build/Release/retnet_cpu.node native=/tmp/native.node`.
// Each run is `retnet bench SUITE --out DIR/LABEL-TURN` with RETNET_ADDON=PATH (src/backend/cpu/load.ts); its
// printed table goes to DIR/LABEL-TURN/SUITE.log and to stdout, and its JSON (with other_load) lands beside it.

import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const ROOT = resolve(import.meta.dirname, '..');
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    out: { type: 'string' },
    turns: { type: 'string', default: '2' },
    suite: { type: 'string', multiple: true, default: [] },
  },
});
const turns = Number(values.turns);
const builds = positionals.map((p) => {
  const at = p.indexOf('=');
  if (at < 1) throw new Error(`expected LABEL=PATH, got '${p}'`);
  return { label: p.slice(0, at), path: resolve(p.slice(at + 1)) };
});
if (!values.out || builds.length < 2 || values.suite.length === 0 || !Number.isInteger(turns) || turns < 1) {
  console.error('usage: compare-addons.mjs --out DIR [--turns N] --suite "NAME FLAGS" ... LABEL=ADDON LABEL=ADDON ...');
  process.exit(2);
}

for (let turn = 1; turn <= turns; turn++) {
  for (const suite of values.suite) {
    // Alternate which build goes first from one turn to the next.
    const order = turn % 2 === 1 ? builds : [...builds].reverse();
    for (const { label, path } of order) {
      const dir = join(resolve(values.out), `${label}-${turn}`);
      mkdirSync(dir, { recursive: true });
      const args = ['--import', 'tsx', join(ROOT, 'src/cli/run.ts'), 'bench', ...suite.split(/\s+/), '--out', dir];
      console.log(`\n== turn ${turn}, ${label} (${path}): bench ${suite}`);
      const r = spawnSync(process.execPath, args, {
        cwd: ROOT,
        env: { ...process.env, RETNET_ADDON: path },
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      process.stdout.write(r.stdout);
      writeFileSync(join(dir, `${suite.split(/\s+/)[0]}.log`), r.stdout);
      if (r.status !== 0) throw new Error(`bench ${suite} with ${label} exited with ${r.status}`);
    }
  }
}
