// The npm package as a user gets it: `npm pack`, with the prebuilt addon for this platform added as a release
// would add it (scripts/prebuild.mjs from this checkout's build), installed into a fresh folder offline (npm's cache
// and the tarball only) with a PATH that has no compiler, make or python. From that folder: the README's TypeScript
// example type-checked by tsc against the shipped types and run, a plain .mjs, `npx retnet info` (the cpu backend
// from the prebuilt binary) and `npx retnet demo --steps 3`.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, realpathSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { tempDir } from './temp.js';

const ROOT = join(import.meta.dirname, '..');

/** The ```ts block of the README's "The TypeScript API" section. */
function readmeExample(): string {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const m = /## The TypeScript API\n[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme);
  assert.ok(m, 'the README has a TypeScript example');
  return m[1]!;
}

describe('installed package', () => {
  it('installs offline without a compiler and runs from another project', { timeout: 300_000 }, () => {
    const work = tempDir('retnet-install-');
    const run = (cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env) =>
      execFileSync(cmd, args, { cwd, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

    // The tarball (dist/ is built by `pretest`), unpacked, given the prebuilds and packed again.
    const packed = JSON.parse(
      run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work], ROOT),
    )[0] as { filename: string };
    const stage = join(work, 'stage');
    mkdirSync(stage);
    run('tar', ['xzf', join(work, packed.filename), '-C', stage], work);
    const pkg = join(stage, 'package');
    run(process.execPath, [join(ROOT, 'scripts', 'prebuild.mjs'), '--out', join(pkg, 'prebuilds')], ROOT);
    const release = JSON.parse(
      run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work], pkg),
    )[0] as { filename: string; files: { path: string }[] };
    const files = release.files.map((f) => f.path);
    for (const f of ['prebuilds/linux-x64/retnet.napi.glibc.node', 'prebuilds/linux-x64/libopenblas.so.0'])
      assert.ok(files.includes(f), `${f} is in the release tarball`);
    assert.ok(files.some((f) => f.startsWith('prebuilds/linux-x64/licenses/')));

    // A PATH with node, npm, npx and sh only.
    const bin = join(work, 'bin');
    mkdirSync(bin);
    const npmCli = realpathSync(run('sh', ['-c', 'command -v npm'], work).trim());
    const npxCli = realpathSync(run('sh', ['-c', 'command -v npx'], work).trim());
    symlinkSync(process.execPath, join(bin, 'node'));
    symlinkSync(npmCli, join(bin, 'npm'));
    symlinkSync(npxCli, join(bin, 'npx'));
    symlinkSync('/bin/sh', join(bin, 'sh'));
    const env: NodeJS.ProcessEnv = { ...process.env, PATH: bin, RETNET_CACHE: join(work, 'cache') };
    delete env.RETNET_ADDON;
    delete env.NODE_TEST_CONTEXT;
    for (const tool of ['g++', 'gcc', 'cc', 'c++', 'make', 'python3', 'python'])
      assert.notEqual(spawnSync('/bin/sh', ['-c', `command -v ${tool}`], { env }).status, 0, `${tool} on PATH`);

    const app = join(work, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), '{ "name": "app", "private": true, "type": "module" }\n');
    const npm = ['--offline', '--no-audit', '--no-fund', '--no-update-notifier'];
    run(join(bin, 'npm'), ['install', ...npm, join(work, release.filename)], app, env);
    const installed = join(app, 'node_modules', 'retnet');
    assert.ok(!existsSync(join(installed, 'build')), 'the prebuilt binary was used: no source build ran');

    // The README's example, type-checked against the shipped .d.ts (with the checkout's tsc and Node types), then run.
    writeFileSync(join(app, 'example.ts'), readmeExample());
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          skipLibCheck: false,
          outDir: 'out',
          types: ['node'],
          typeRoots: [join(ROOT, 'node_modules', '@types')],
        },
        files: ['example.ts'],
      }),
    );
    const tsc = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', app], {
      cwd: app,
      env,
      encoding: 'utf8',
    });
    assert.equal(tsc.status, 0, `tsc on the README example:\n${tsc.stdout}${tsc.stderr}`);
    const example = spawnSync(join(bin, 'node'), [join(app, 'out', 'example.js')], { cwd: app, env, encoding: 'utf8' });
    assert.equal(example.status, 0, example.stderr);
    assert.ok(example.stdout.length > 0, 'the example streams text');

    // A plain .mjs.
    writeFileSync(
      join(app, 'plain.mjs'),
      "import { createModel, noGrad, tensor } from 'retnet';\n" +
        "const model = createModel('retnet', 'tiny', { vocabSize: 17, layers: 1 }, { seed: 1 });\n" +
        "const y = noGrad(() => model.forward(tensor([1, 2, 3], [1, 3], { dtype: 'int32' })));\n" +
        'console.log(JSON.stringify({ shape: y.shape, device: y.device.name }));\n',
    );
    const plain = JSON.parse(run(join(bin, 'node'), [join(app, 'plain.mjs')], app, env));
    assert.deepEqual(plain, { shape: [1, 3, 17], device: 'cpu' });

    const info = spawnSync(join(bin, 'npx'), [...npm, 'retnet', 'info', '--json'], { cwd: app, env, encoding: 'utf8' });
    assert.equal(info.status, 0, info.stderr);
    assert.equal(info.stderr, '', 'no fallback warning');
    const report = JSON.parse(info.stdout);
    assert.equal(report.backend, 'cpu');
    assert.match(report.addonBuild.path, /node_modules\/retnet\/prebuilds\/linux-x64\//);

    const demo = spawnSync(join(bin, 'npx'), [...npm, 'retnet', 'demo', '--steps', '3'], {
      cwd: app,
      env,
      encoding: 'utf8',
    });
    assert.equal(demo.status, 0, `${demo.stdout}\n${demo.stderr}`);
    assert.ok(existsSync(join(app, 'runs', 'demo', 'model.safetensors')), demo.stdout);
  });
});
