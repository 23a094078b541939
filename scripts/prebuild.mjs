#!/usr/bin/env node
// `npm run prebuild`: turns the source build in build/Release into the prebuilt binaries the npm package carries
// for this platform, so that installing retnet needs no compiler and no OpenBLAS (docs/packaging.md):
//
//   prebuilds/linux-x64/retnet.napi.glibc.node            the baseline build (x86-64), found by node-gyp-build
//   prebuilds/linux-x64/avx2/retnet_cpu_avx2.node         the x86-64-v3 build, loaded instead when the CPU has it
//                                                          (x64 only; on linux-arm64 the folder is linux-arm64)
//   prebuilds/linux-x64/libopenblas.so.0, libgfortran.so.5, libquadmath.so.0, libgomp.so.1
//                                                          the shared libraries the addon needs beyond those Node
//                                                          itself links (libc, libm, libstdc++, libgcc_s)
//   prebuilds/linux-x64/licenses/                         their Debian copyright files and where their sources are
//
// The addon's rpath is $ORIGIN (binding.gyp); each copied library gets rpath $ORIGIN too (patchelf), so the dynamic
// loader finds all of them beside each other and never the system's, as Python wheels bundle theirs. Linux only
// (ldd, patchelf, dpkg for the license files); the other platforms' steps are in docs/packaging.md.
//
//   node scripts/prebuild.mjs [--from build/Release] [--out prebuilds]

import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const ROOT = resolve(import.meta.dirname, '..');
const { values } = parseArgs({
  options: { from: { type: 'string', default: join(ROOT, 'build', 'Release') }, out: { type: 'string' } },
});
const from = resolve(values.from);
const out = join(resolve(values.out ?? join(ROOT, 'prebuilds')), `${process.platform}-${process.arch}`);

/** Libraries every Linux system with Node.js has (Node links them itself); never bundled. */
const SYSTEM = /^(linux-vdso|ld-linux-x86-64|libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s)\.so/;

function fail(message) {
  console.error(`prebuild: ${message}`);
  process.exit(1);
}

const run = (cmd, args) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

if (process.platform !== 'linux')
  fail(`this script bundles for Linux (x64, arm64); on ${process.platform} see docs/packaging.md`);
for (const tool of ['ldd', 'readelf', 'patchelf', 'dpkg-query'])
  try {
    run(tool, ['--version']);
  } catch {
    fail(`needs ${tool} (Debian: apt-get install patchelf binutils)`);
  }

// The avx2 build exists on x64 only (binding.gyp).
const builds = [{ from: join(from, 'retnet_cpu.node'), to: join(out, 'retnet.napi.glibc.node') }];
if (process.arch === 'x64')
  builds.push({ from: join(from, 'avx2', 'retnet_cpu_avx2.node'), to: join(out, 'avx2', 'retnet_cpu_avx2.node') });
for (const { from: f } of builds) {
  if (!existsSync(f)) fail(`${f} is missing: build first (npx node-gyp rebuild)`);
  if (!/RUNPATH.*\$ORIGIN/.test(run('readelf', ['-d', f]))) fail(`${f} has no $ORIGIN rpath (binding.gyp's ldflags)`);
}

/** The non-system libraries `file` loads, directly or through others: soname -> path on this machine. */
function bundledLibraries(file) {
  const libs = new Map();
  for (const line of run('ldd', [file]).split('\n')) {
    const m = /^\s*(\S+) => (\/\S+)/.exec(line);
    if (m && !SYSTEM.test(m[1])) libs.set(m[1], m[2]);
    if (/not found/.test(line)) fail(`${file}: ${line.trim()}`);
  }
  return libs;
}

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, 'avx2'), { recursive: true });
mkdirSync(join(out, 'licenses'), { recursive: true });
for (const b of builds) copyFileSync(b.from, b.to);

const libs = bundledLibraries(builds[0].from);
const packages = new Map();
for (const [soname, path] of libs) {
  const dest = join(out, soname);
  copyFileSync(realpathSync(path), dest);
  run('patchelf', ['--set-rpath', '$ORIGIN', dest]);
  // dpkg knows the file by the path it installed, which may sit behind the alternatives system's links.
  const owner = run('dpkg-query', ['-S', realpathSync(path)]).split(':')[0];
  const [source, version] = run('dpkg-query', ['-W', '-f=${source:Package} ${source:Version}', owner]).split(' ');
  packages.set(owner, { source, version, libs: [...(packages.get(owner)?.libs ?? []), soname] });
}

// Licenses: each package's Debian copyright file (OpenBLAS: BSD-3-Clause; libgfortran and libgomp: GPL-3 with the
// GCC Runtime Library Exception, whose text the file includes; libquadmath: LGPL-2.1) and the full texts it refers
// to, plus where the sources of these exact builds are.
const texts = new Set();
const index = ['Shared libraries bundled with the prebuilt retnet addon, copied from Debian packages', ''];
for (const [pkg, { source, version, libs: names }] of packages) {
  // One file per source package (libgfortran5, libgomp1 and libquadmath0 share gcc-12's).
  const copyright = `/usr/share/doc/${pkg}/copyright`;
  copyFileSync(copyright, join(out, 'licenses', `${source}.copyright`));
  const text = readFileSync(copyright, 'utf8');
  for (const m of text.matchAll(/\/usr\/share\/common-licenses\/([A-Za-z0-9.+-]+)/g))
    texts.add(m[1].replace(/[.]$/, ''));
  // Named without a path: libquadmath's parts under the Library GPL 2 and the Lesser GPL 2.1.
  if (/GNU Library General Public/.test(text)) texts.add('LGPL-2');
  if (/GNU Lesser General Public[\s\S]{0,80}version 2\.1/.test(text)) texts.add('LGPL-2.1');
  index.push(
    `${names.join(', ')}: Debian package ${pkg} (source package ${source} ${version}); license: ${source}.copyright;`,
    `  sources: https://snapshot.debian.org/package/${source}/${version}/`,
  );
}
for (const t of texts)
  if (existsSync(`/usr/share/common-licenses/${t}`))
    copyFileSync(`/usr/share/common-licenses/${t}`, join(out, 'licenses', `common-licenses-${t}`));
index.push('', 'Only the rpath of each library was changed (to $ORIGIN, with patchelf), so they find each other here.');
writeFileSync(join(out, 'licenses', 'README'), `${index.join('\n')}\n`);

// The result must resolve every bundled library beside itself.
for (const { to } of builds)
  for (const [soname, path] of bundledLibraries(to))
    if (!resolve(path).startsWith(`${out}/`)) fail(`${to} resolves ${soname} to ${path}, not to the bundled copy`);

const mib = (f) => (statSync(f).size / 2 ** 20).toFixed(1);
console.log(`prebuild: ${out}`);
for (const f of [...builds.map((b) => b.to), ...[...libs.keys()].map((l) => join(out, l))])
  console.log(`  ${f.slice(out.length + 1).padEnd(28)} ${mib(f).padStart(6)} MiB`);
console.log(`  licenses/ (${[...packages.keys()].join(', ')}; ${[...texts].join(', ')})`);
