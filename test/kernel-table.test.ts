// The kernel table: a device that lacks a kernel runs the reference kernel through a host copy (and says so once),
// in-place kernels write their results back, `supports` and `implementedKernels` report what each device has, and
// the codes shared with the addon are generated from their one definition.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';

import { HostDevice } from '../src/backend/host/device.js';
import { KERNEL_NAMES, implementedKernels, kernels, kernelsOf, supports } from '../src/backend/kernels.js';
import { matmul } from '../src/ops/math.js';
import { Rng } from '../src/tensor/random.js';
import { CODES_HEADER, codesHeader } from '../scripts/gen-native-codes.js';
import { assertClose, copyTo, nat, randomData, randomTensor, ref } from './helpers.js';

/** Runs fn and returns what it wrote to stderr. */
function stderrOf(fn: () => void): string {
  const write = process.stderr.write;
  let text = '';
  process.stderr.write = ((chunk: string) => {
    text += chunk;
    return true;
  }) as typeof process.stderr.write;
  try {
    fn();
  } finally {
    process.stderr.write = write;
  }
  return text;
}

describe('kernel table', () => {
  // A host device with no kernels of its own: everything it computes comes from the reference through a copy.
  const bare = new HostDevice('bare-test', ['float32', 'int32']);

  it('a missing kernel runs the reference kernel through a host copy and says so once', () => {
    const rng = new Rng(1);
    const a = randomTensor(ref, rng, [5, 7]);
    const b = randomTensor(ref, rng, [7, 3]);
    const expected = matmul(a, b).data();
    const [a2, b2] = [copyTo(a, bare), copyTo(b, bare)];
    let y = matmul(a2, b2);
    const said = stderrOf(() => {
      y.dispose();
      y = matmul(a2, b2);
      matmul(a2, b2).dispose();
    });
    assert.equal(y.device, bare, 'the result lives on the calling device');
    assertClose(y.data(), expected, 1e-12, 'matmul through the reference');
    assert.equal(said, '', 'said once, at the first call (before this capture)');
    const first = stderrOf(() => kernels(bare, 'float32').softmax(a2).dispose());
    assert.match(first, /the bare-test device has no softmax kernel for float32; running the reference kernel/);
    for (const t of [a, b, a2, b2, y]) t.dispose();
    assert.equal(bare.memory.current, 0, 'the host copies were freed');
  });

  it('in-place kernels write their results back to the calling device', () => {
    // v (the second moment) must be non-negative.
    const data = [0, 1, 2, 3].map((i) => randomData(new Rng(3 + i), 9).map((x) => (i === 3 ? x * x : x)));
    const make = (be: typeof ref) => data.map((d) => be.fromData(d, [9], 'float32'));
    const hp = { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.1, step: 1, gradScale: 0.5 };
    const [p, g, m, v] = make(ref);
    const [p2, g2, m2, v2] = make(bare);
    kernelsOf(p!).adamw(p!, g!, m!, v!, hp);
    stderrOf(() => kernelsOf(p2!).adamw(p2!, g2!, m2!, v2!, hp));
    for (const [x, y] of [
      [p, p2],
      [m, m2],
      [v, v2],
    ])
      assertClose(y!.data(), x!.data(), 1e-12, 'adamw in place');
    for (const t of [p, g, m, v, p2, g2, m2, v2]) t!.dispose();
  });

  it('a kernel no device has for a dtype is an error naming the kernel, device and dtype', () => {
    const ids = bare.fromData([1, 2], [1, 2], 'int32');
    assert.throws(
      () => kernelsOf(ids).matmul(ids, ids, false, true),
      /matmul: no kernel for int32 tensors on the bare-test device/,
    );
    ids.dispose();
  });

  it('supports and implementedKernels report each device', () => {
    const cpu = nat();
    assert.ok(supports('matmul', 'cpu', ['float32']));
    assert.ok(!supports('matmul', 'cpu', ['float64']));
    assert.ok(supports('permute', 'cpu', ['float32', 'int32']));
    assert.ok(!supports('matmul', 'bare-test', ['float32']));
    const listed = implementedKernels(cpu.name);
    for (const name of KERNEL_NAMES) {
      assert.ok(listed[name]?.includes('float32'), `cpu implements ${name}`);
      assert.ok(implementedKernels('reference')[name]?.includes('float64'), `reference implements ${name}`);
    }
    assert.deepEqual(implementedKernels('bare-test'), {});
  });
});

describe('codes shared with the addon', () => {
  it('native/common/codes.h is what scripts/gen-native-codes.ts writes', () => {
    assert.equal(
      readFileSync(CODES_HEADER, 'utf8'),
      codesHeader(),
      'run: node --import tsx scripts/gen-native-codes.ts',
    );
  });
});
