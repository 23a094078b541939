// The portable native build (binding.gyp): the loader picks the avx2 build exactly when the CPU has x86-64-v3, the
// baseline build forced on this CPU computes what the reference does (the op suite), and no instruction beyond a
// build's instruction set appears outside the files that carry their own target and are chosen at run time.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const ROOT = join(import.meta.dirname, '..');
const OBJ = join(ROOT, 'build', 'Release', 'obj.target');

function info(env: Record<string, string>) {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'src', 'cli', 'run.ts'), 'info', '--json'], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
  return { code: r.status, stderr: r.stderr, info: r.status === 0 ? JSON.parse(r.stdout) : null };
}

// Instructions above x86-64's SSE2, by extension (mnemonics as objdump prints them; the VEX and EVEX encodings
// of AVX and later are recognised by their prefix bytes instead).
const ABOVE_SSE2 = new Set(
  [
    'addsubps addsubpd haddps haddpd hsubps hsubpd movshdup movsldup movddup lddqu', // SSE3
    'pshufb phaddw phaddd phaddsw phsubw phsubd phsubsw pmaddubsw pmulhrsw palignr psignb psignw psignd pabsb pabsw ' +
      'pabsd', // SSSE3
    'blendps blendpd blendvps blendvpd pblendw pblendvb roundps roundpd roundss roundsd pminsb pminsd pminuw pminud ' +
      'pmaxsb pmaxsd pmaxuw pmaxud ptest pmovsxbw pmovsxbd pmovsxbq pmovsxwd pmovsxwq pmovsxdq pmovzxbw pmovzxbd ' +
      'pmovzxbq pmovzxwd pmovzxwq pmovzxdq pmulld pmuldq pinsrb pinsrd pinsrq pextrb pextrd pextrq insertps ' +
      'extractps dpps dppd mpsadbw packusdw pcmpeqq phminposuw movntdqa', // SSE4.1
    'pcmpgtq pcmpestri pcmpestrm pcmpistri pcmpistrm crc32 popcnt', // SSE4.2
    'lzcnt tzcnt movbe', // x86-64-v3's scalar extras (BMI1/2 are VEX-encoded)
  ]
    .join(' ')
    .split(' '),
);

/** Instructions of an object file beyond `level` ('x86-64': SSE2; 'x86-64-v3': AVX2 but no AVX-512), counted. */
function beyond(object: string, level: 'x86-64' | 'x86-64-v3'): Map<string, number> {
  const found = new Map<string, number>();
  const text = execFileSync('objdump', ['-d', '--wide', object], { encoding: 'utf8', maxBuffer: 1 << 28 });
  for (const line of text.split('\n')) {
    // "  4f:	c5 fc 28 07          	vmovaps (%rdi),%ymm0"
    const m = /^\s*[0-9a-f]+:\t([0-9a-f ]+)\t(\S+)/.exec(line);
    if (!m) continue;
    const bytes = m[1]!.trim().split(' ');
    let i = 0;
    while (['26', '2e', '36', '3e', '64', '65', '67'].includes(bytes[i]!)) i++; // segment and address-size prefixes
    const evex = bytes[i] === '62'; // in 64-bit mode 0x62 is always EVEX (AVX-512), 0xc4/0xc5 always VEX
    const vex = bytes[i] === 'c4' || bytes[i] === 'c5';
    const mnemonic = m[2]!;
    const bad = level === 'x86-64' ? evex || vex || ABOVE_SSE2.has(mnemonic) : evex;
    if (bad) found.set(mnemonic, (found.get(mnemonic) ?? 0) + 1);
  }
  return found;
}

const hasObjdump = spawnSync('objdump', ['--version']).status === 0;

describe('portable native build', () => {
  it('the avx2 build loads exactly when the CPU has x86-64-v3; RETNET_CPU_VARIANT chooses', () => {
    const auto = info({});
    assert.equal(auto.code, 0, auto.stderr);
    const build = auto.info.addonBuild;
    assert.equal(build.variant, build.cpuX86_64V3 ? 'avx2' : 'baseline');
    if (build.variant === 'avx2') assert.match(build.path, /\/avx2\/retnet_cpu_avx2\.node$/);
    const baseline = info({ RETNET_CPU_VARIANT: 'baseline' });
    assert.equal(baseline.code, 0, baseline.stderr);
    assert.equal(baseline.info.addonBuild.variant, 'baseline');
    assert.doesNotMatch(baseline.info.addonBuild.path, /\/avx2\//);
    const bad = info({ RETNET_CPU_VARIANT: 'fastest' });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /RETNET_CPU_VARIANT must be auto, baseline or avx2, got 'fastest'/);
    if (!build.cpuX86_64V3) {
      const forced = info({ RETNET_CPU_VARIANT: 'avx2' });
      assert.match(forced.stderr, /this CPU lacks x86-64-v3/);
    }
  });

  it('the baseline build, forced on this CPU, passes the op suite on the cpu device', () => {
    // NODE_TEST_CONTEXT would make the child report to this runner instead of printing its summary.
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT;
    const r = spawnSync(
      process.execPath,
      ['--import', 'tsx', '--test', '--test-reporter=tap', join(ROOT, 'test', 'conformance.test.ts')],
      { encoding: 'utf8', env: { ...env, RETNET_TEST_DEVICE: 'cpu', RETNET_CPU_VARIANT: 'baseline' } },
    );
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    const passed = Number(/^# pass (\d+)$/m.exec(r.stdout)?.[1]);
    assert.ok(passed > 50 && /^# fail 0$/m.test(r.stdout), r.stdout.slice(-500));
  });

  it('no instruction beyond the build target outside the run-time dispatched lowp files', (t) => {
    if (!hasObjdump || !existsSync(join(OBJ, 'retnet_cpu'))) {
      t.skip(`needs objdump and the x86-64 objects of a source build under ${OBJ}`);
      return;
    }
    // lowp_avx2.cc and lowp_avx512.cc compile under their own target pragmas; lowp.cc calls into them only after
    // checking the CPU (lowp::cpuHas).
    const targets = [
      { dir: 'retnet_cpu', level: 'x86-64', dispatched: ['lowp_avx2.o', 'lowp_avx512.o'] },
      { dir: 'retnet_cpu_avx2', level: 'x86-64-v3', dispatched: ['lowp_avx512.o'] },
    ] as const;
    for (const { dir, level, dispatched } of targets) {
      const objects = readdirSync(join(OBJ, dir, 'native', 'cpu')).filter((f) => f.endsWith('.o'));
      assert.ok(objects.length > 10, `${dir} objects`);
      for (const o of objects) {
        const found = beyond(join(OBJ, dir, 'native', 'cpu', o), level);
        if (dispatched.includes(o as never)) assert.ok(found.size > 0, `${dir}/${o} holds the dispatched variants`);
        else assert.deepEqual([...found], [], `${dir}/${o}: instructions beyond ${level}`);
      }
    }
  });
});
