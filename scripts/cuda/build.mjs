// `npm run build:cuda`: builds the CUDA addon, build/Release/retnet_cuda.node, from native/cuda/ when a CUDA toolkit
// (nvcc: CUDA_HOME or PATH) and cuBLAS (CUBLAS_HOME, the toolkit's own, or the nvidia-cublas Python package) are
// found; otherwise says why and exits 0, as it does when the build fails, so that machines without them (CI) are
// unaffected. Run it after `node-gyp rebuild`, which empties build/. The kernels are built for
// sm_90 (Hopper) with PTX for newer GPUs; RETNET_CUDA_ARCH overrides the gencode list (e.g. "80,90").
// cudart is linked statically (it loads the driver at run time), cuBLAS dynamically: where cuBLAS lives somewhere
// other than at build time, put its lib folder on LD_LIBRARY_PATH.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const src = join(root, 'native', 'cuda');
const out = join(root, 'build', 'Release');
const objDir = join(root, 'build', 'cuda-obj');

function skip(why) {
  process.stdout.write(`retnet: CUDA addon not built (${why})\n`);
  process.exit(0);
}

function which(cmd) {
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir && existsSync(join(dir, cmd))) return join(dir, cmd);
  return null;
}

const nvcc = process.env.CUDA_HOME ? join(process.env.CUDA_HOME, 'bin', 'nvcc') : which('nvcc');
if (!nvcc || !existsSync(nvcc)) skip('no CUDA toolkit: set CUDA_HOME or put nvcc on PATH');
// nvcc may be a link or wrapper outside the toolkit (/usr/local/bin/nvcc): the toolkit is the folder with the headers.
const cudaHome = [process.env.CUDA_HOME, resolve(dirname(realpathSync(nvcc)), '..'), '/usr/local/cuda']
  .filter((d) => d !== undefined)
  .find((d) => existsSync(join(d, 'include', 'cuda_runtime.h')));
if (!cudaHome) skip(`no CUDA headers (cuda_runtime.h) next to ${nvcc}: set CUDA_HOME`);

function findCublas() {
  const candidates = [];
  if (process.env.CUBLAS_HOME) candidates.push(process.env.CUBLAS_HOME);
  candidates.push(cudaHome);
  try {
    const py = execFileSync('python3', ['-c', 'import nvidia.cublas as m, os; print(list(m.__path__)[0])'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    if (py) candidates.push(py, join(py, '..', 'cu13'));
  } catch {
    // no Python package
  }
  for (const dir of candidates) {
    const inc = join(dir, 'include');
    if (!existsSync(join(inc, 'cublas_v2.h'))) continue;
    for (const lib of ['lib', 'lib64'])
      if (existsSync(join(dir, lib)) && readdirSync(join(dir, lib)).some((f) => f.startsWith('libcublas.so')))
        return { inc, lib: join(dir, lib) };
  }
  return null;
}

const cublas = findCublas();
if (!cublas) skip(`no cuBLAS next to ${cudaHome}, in CUBLAS_HOME or in the nvidia-cublas Python package`);

function nodeHeaders() {
  const candidates = [
    ...(process.env.RETNET_NODE_INCLUDE ? [process.env.RETNET_NODE_INCLUDE] : []),
    join(dirname(process.execPath), '..', 'include', 'node'),
    '/usr/include/node',
    join(process.env.HOME ?? '', '.cache', 'node-gyp', process.versions.node, 'include', 'node'),
  ];
  return candidates.find((d) => existsSync(join(d, 'node_api.h'))) ?? null;
}
const nodeInc = nodeHeaders();
if (!nodeInc) skip('no Node headers (node_api.h) found');
const require = createRequire(import.meta.url);
const napiInc = require('node-addon-api').include_dir;

const archs = (process.env.RETNET_CUDA_ARCH ?? '90').split(',').map((a) => a.trim());
const newest = archs[archs.length - 1];
const gencode = [
  ...archs.map((a) => `-gencode=arch=compute_${a},code=sm_${a}`),
  `-gencode=arch=compute_${newest},code=compute_${newest}`,
];
const archLabel = `${archs.map((a) => `sm_${a}`).join(',')}+PTX`;

mkdirSync(out, { recursive: true });
mkdirSync(objDir, { recursive: true });

function exec(cmd, args) {
  return new Promise((ok, fail) => {
    const p = spawn(cmd, args, { stdio: 'inherit' });
    p.on('exit', (code) => (code === 0 ? ok() : fail(new Error(`${cmd} exited with ${code}`))));
  });
}

const cuFiles = readdirSync(src)
  .filter((f) => f.endsWith('.cu'))
  .sort();
const objects = cuFiles.map((f) => join(objDir, f.replace(/\.cu$/, '.o')));
const jobs = cuFiles.map((f, i) => [
  nvcc,
  ['-std=c++17', '-O3', ...gencode, '-Xcompiler', '-fPIC', `-I${cublas.inc}`, '-c', join(src, f), '-o', objects[i]],
]);
const glue = join(objDir, 'addon.o');
jobs.push([
  'g++',
  [
    '-std=c++17',
    '-O2',
    '-fPIC',
    '-Wall',
    '-Wextra',
    '-Wno-unused-parameter',
    '-DNAPI_VERSION=8',
    '-DNODE_ADDON_API_DISABLE_CPP_EXCEPTIONS',
    `-DRETNET_CUDA_ARCHS="${archLabel}"`,
    `-I${nodeInc}`,
    `-I${napiInc}`,
    `-I${join(root, 'native', 'common')}`,
    `-I${join(cudaHome, 'include')}`,
    `-I${cublas.inc}`,
    '-c',
    join(src, 'addon.cc'),
    '-o',
    glue,
  ],
]);

// An object newer than its source and every header it may include is kept (nvcc takes minutes for the set).
const headers = [src, join(root, 'native', 'common')].flatMap((d) =>
  readdirSync(d)
    .filter((f) => f.endsWith('.h'))
    .map((f) => join(d, f)),
);
const newestInput = (file) => Math.max(...[file, ...headers].map((f) => statSync(f).mtimeMs));
const stale = (job) => {
  const args = job[1];
  const [input, output] = [args[args.indexOf('-c') + 1], args[args.indexOf('-o') + 1]];
  return !existsSync(output) || statSync(output).mtimeMs < newestInput(input);
};

// A failed build must not fail `npm install`: the cuda device then says the addon is missing.
try {
  // Two compilations at a time: nvcc is memory-hungry and the CPU machines have two cores.
  const parallel = Math.max(1, Number(process.env.RETNET_CUDA_JOBS ?? 2));
  const queue = jobs.filter(stale);
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      for (let job = queue.shift(); job; job = queue.shift()) await exec(...job);
    }),
  );

  const cudaLib = ['lib64', 'lib', join('targets', 'x86_64-linux', 'lib')]
    .map((d) => join(cudaHome, d))
    .find((d) => existsSync(join(d, 'libcudart_static.a')));
  if (!cudaLib) skip(`no libcudart_static.a under ${cudaHome}`);
  await exec('g++', [
    '-shared', '-o', join(out, 'retnet_cuda.node'), ...objects, glue, `-L${cudaLib}`, '-lcudart_static',
    `-L${cublas.lib}`, '-l:libcublas.so.13', '-ldl', '-lpthread', '-lrt', `-Wl,-rpath,${cublas.lib}`,
  ]); // prettier-ignore
} catch (e) {
  process.stdout.write(`retnet: CUDA addon build failed (${e.message}); the cuda device is unavailable\n`);
  process.exit(0);
}
process.stdout.write(`retnet: built ${join(out, 'retnet_cuda.node')} (${archLabel})\n`);
