// The CLI shell: help, unknown commands, `retnet info`, and the fallback to the reference backend.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const ROOT = join(import.meta.dirname, '..');

function cli(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'run.ts'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('retnet CLI', () => {
  it('info reports the native backend, BLAS core type and threads', () => {
    const r = cli(['info', '--json'], { RETNET_THREADS: '2' });
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout);
    assert.equal(info.backend, 'cpu');
    assert.equal(info.blas, 'OpenBLAS');
    assert.ok(typeof info.blasCoreType === 'string' && info.blasCoreType.length > 0);
    assert.equal(info.threads, 2);
    assert.ok(['baseline', 'avx2'].includes(info.addonBuild.variant), info.addonBuild.variant);
  });

  it('without the addon the library falls back to the reference backend and says so once', () => {
    const r = cli(['info', '--json'], { RETNET_ADDON: '/nonexistent/retnet_cpu.node' });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).backend, 'reference');
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /using the reference backend \(cpu addon not built/);
  });

  it('bad thread counts, unknown commands and flags are clear errors', () => {
    assert.match(
      cli(['info'], { RETNET_THREADS: 'many' }).stderr,
      /RETNET_THREADS must be a positive integer, got 'many'/,
    );
    const unknown = cli(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command 'frobnicate'/);
    const flag = cli(['info', '--colour']);
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /retnet info: unknown option '--colour'/);
    assert.equal(cli(['--help']).code, 0);
  });
});
