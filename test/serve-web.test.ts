// `retnet serve-web DIR` as a process: it serves the built page (dist/web, `npm run build:web`), its script and the
// model directory's files under /model/, and nothing else: no path out of the directory ('..', encoded or not, a
// symbolic link), no other method than GET/HEAD; a missing directory or one without config.json is a usage error;
// SIGTERM stops it with exit code 0.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';

import { writeDemoModel } from '../examples/web/serve.js';
import { tempDir } from './temp.js';

const ROOT = join(import.meta.dirname, '..');
const RUN = ['--import', 'tsx', join(ROOT, 'src', 'cli', 'run.ts'), 'serve-web'];

/** A request with the path sent exactly as written (fetch would resolve '..' first). */
function raw(base: string, path: string, method = 'GET'): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ hostname, port, path, method }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('retnet serve-web', () => {
  let root: string;
  let dir: string;
  let proc: ChildProcess;
  let url = '';
  before(async () => {
    assert.ok(existsSync(join(ROOT, 'dist', 'web', 'app.js')), 'dist/web is not built: run npm run build:web');
    root = tempDir('retnet-serve-web-');
    dir = join(root, 'model');
    mkdirSync(dir);
    writeDemoModel(dir);
    writeFileSync(join(root, 'secret.txt'), 'not for the page');
    symlinkSync(join(root, 'secret.txt'), join(dir, 'link.txt'));
    proc = spawn(process.execPath, [...RUN, dir, '--port', '0'], { cwd: ROOT });
    for await (const line of createInterface({ input: proc.stdout! })) {
      const m = /at (http:\/\/localhost:\d+)\//.exec(line);
      if (m) {
        url = m[1]!;
        break;
      }
    }
    assert.ok(url, 'no URL printed');
  });
  after(() => {
    if (proc && proc.exitCode === null) proc.kill('SIGKILL');
  });

  it('serves the page, its script and the model files', async () => {
    const page = await raw(url, '/');
    assert.equal(page.status, 200);
    assert.match(page.body, /<script type="module" src="\/app.js">/);
    const app = await raw(url, '/app.js');
    assert.equal(app.status, 200);
    assert.match(app.body, /loadModel|webgpu/);
    const config = await raw(url, '/model/config.json');
    assert.equal(config.status, 200);
    assert.equal(config.body, readFileSync(join(dir, 'config.json'), 'utf8'));
    assert.equal((await raw(url, '/model/model.safetensors', 'HEAD')).status, 200);
  });

  it('serves nothing outside the page and the model directory', async () => {
    for (const path of [
      '/model/../secret.txt',
      '/model/%2e%2e/secret.txt',
      '/model/..%2fsecret.txt',
      '/model/%2e%2e%2f%2e%2e%2fpackage.json',
      '/model/link.txt',
      '/../package.json',
      '/package.json',
      '/index.html',
      '/model/%zz',
      '/etc/passwd',
    ]) {
      const r = await raw(url, path);
      assert.equal(r.status, 404, `${path}: ${r.status} ${r.body}`);
      assert.doesNotMatch(r.body, /not for the page|"name"/);
    }
    assert.equal((await raw(url, '/model/config.json', 'POST')).status, 405);
  });

  it('exits 0 on SIGTERM', async () => {
    const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
    proc.kill('SIGTERM');
    assert.equal(await exited, 0);
  });

  it('a missing directory, a file, or a directory without config.json is a usage error naming it', () => {
    for (const [arg, why] of [
      [join(root, 'nope'), /model directory does not exist/],
      [join(root, 'secret.txt'), /not a directory/],
      [root, /has no config\.json/],
    ] as const) {
      const r = spawnSync(process.execPath, [...RUN, arg], { cwd: ROOT, encoding: 'utf8' });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, why);
      // The CLI's usage errors: the message and a pointer to --help, no stack trace.
      assert.match(r.stderr.trim(), /^retnet serve-web: .*\n\(retnet serve-web --help lists its flags\)$/, r.stderr);
    }
    const none = spawnSync(process.execPath, RUN, { cwd: ROOT, encoding: 'utf8' });
    assert.equal(none.status, 2);
    assert.match(none.stderr, /dir/);
  });
});
