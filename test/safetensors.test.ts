// safetensors: round trips in every dtype we write (F16/BF16 kept as bit patterns), the format's structural rules
// (#17 item 4), positioned reads past 2 GiB, and peak memory while reading a BF16 file tensor by tensor.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  ftruncateSync,
  mkdtempSync,
  openSync,
  readdirSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';

import { FormatError } from '../src/errors.js';
import {
  SafetensorsReader,
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  tensorValues,
  writeSafetensors,
} from '../src/io/safetensors.js';
import { fromBFloat16, fromFloat16, toBFloat16, toFloat16 } from '../src/tensor/dtype.js';

const dir = mkdtempSync(join(tmpdir(), 'retnet-st-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A file from a header object and data bytes; `lenDelta` falsifies the header length. */
function fileOf(header: object, data: Uint8Array | number, lenDelta = 0, pad = 0): Buffer {
  const json = Buffer.from(JSON.stringify(header) + ' '.repeat(pad));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length + lenDelta));
  return Buffer.concat([len, json, typeof data === 'number' ? Buffer.alloc(data) : data]);
}

const rejects = (buf: Buffer, pattern: RegExp) =>
  assert.throws(
    () => parseSafetensors(buf, 'f.st'),
    (e: Error) => e instanceof FormatError && pattern.test(e.message),
  );

describe('safetensors', () => {
  it('round-trips F64, F32, I32, F16 and BF16 with metadata, written atomically', () => {
    const path = join(dir, 'a.safetensors');
    const bits = Uint16Array.of(0x3f80, 0xc2f7, 0x7f80, 0x0001);
    const tensors = new Map([
      ['w', { dtype: 'F32' as const, shape: [2, 3], data: [1, 2, 3, 4, 5, 6.5] }],
      ['d', { dtype: 'F64' as const, shape: [2], data: [Math.PI, -1e-300] }],
      ['i', { dtype: 'I32' as const, shape: [0], data: [] }],
      ['h', { dtype: 'F16' as const, shape: [3], data: [1, -2.5, 65504] }],
      ['b', { dtype: 'BF16' as const, shape: [2, 2], data: bits }],
    ]);
    writeSafetensors(path, tensors, { note: 'x' });
    const back = readSafetensors(path);
    assert.deepEqual(back.metadata, { note: 'x' });
    assert.deepEqual(Array.from(back.tensors.get('w')!.data), [1, 2, 3, 4, 5, 6.5]);
    assert.deepEqual(Array.from(back.tensors.get('d')!.data), [Math.PI, -1e-300]);
    assert.deepEqual(back.tensors.get('i')!.shape, [0]);
    assert.deepEqual(Array.from(back.tensors.get('h')!.data), [1, -2.5, 65504]);
    assert.deepEqual(Array.from(back.tensors.get('b')!.data), [1, -123.5, Infinity, 2 ** -133]);
    const r = SafetensorsReader.open(path);
    const b = r.read('b');
    r.close();
    assert.equal(b.dtype, 'BF16');
    assert.ok(b.bits instanceof Uint16Array, 'BF16 stays 16-bit in memory');
    assert.deepEqual(Array.from(b.bits), Array.from(bits));
    assert.deepEqual(readdirSync(dir), ['a.safetensors'], 'no temporary file is left behind');
    rmSync(path);
  });

  it('writes F16/BF16 values rounded to nearest even by the dtype table, and reads them back exactly', () => {
    const path = join(dir, 'sixteen.safetensors');
    const xs = [1 + 2 ** -11, 1 + 3 * 2 ** -11, 65520, 2 ** -25, -1.5];
    writeSafetensors(
      path,
      new Map([
        ['h', { dtype: 'F16' as const, shape: [5], data: xs }],
        ['b', { dtype: 'BF16' as const, shape: [5], data: xs }],
      ]),
    );
    const back = readSafetensors(path).tensors;
    assert.deepEqual(
      Array.from(back.get('h')!.data),
      xs.map((x) => fromFloat16(toFloat16(x))),
    );
    assert.deepEqual(
      Array.from(back.get('b')!.data),
      xs.map((x) => fromBFloat16(toBFloat16(x))),
    );
    rmSync(path);
  });

  it('streams the data: serializeSafetensors yields the header, then one chunk per tensor', () => {
    const chunks = [
      ...serializeSafetensors(
        new Map([
          ['a', { dtype: 'F32' as const, shape: [2], data: [1, 2] }],
          ['b', { dtype: 'BF16' as const, shape: [1], data: [1] }],
        ]),
      ),
    ];
    assert.equal(chunks.length, 4);
    const f = parseSafetensors(Buffer.concat(chunks), 'mem');
    assert.deepEqual(Array.from(f.tensors.get('b')!.data), [1]);
  });

  it('follows the format rules strictly, naming the file, the tensor and the rule (#17 item 4)', () => {
    const w = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
    assert.doesNotThrow(() => parseSafetensors(fileOf({ w }, 8), 'f.st'));
    assert.doesNotThrow(() => parseSafetensors(fileOf({ w }, 8, 0, 5), 'f.st'), 'space padding is allowed');
    rejects(fileOf({ w }, 8).subarray(0, 4), /f.st: not a safetensors file/);
    rejects(fileOf({ w }, 7), /f.st: tensor 'w': data_offsets \[0, 8\] lie outside the data section \(7 bytes\)/);
    // A header length one byte short (padding absorbs it as valid JSON) leaves a trailing byte: rejected.
    rejects(fileOf({ w }, 8, -1, 3), /f.st: 1 trailing bytes after the last tensor/);
    rejects(fileOf({ w }, 8, +1), /f.st: (header is not valid JSON|tensor 'w': data_offsets)/);
    rejects(fileOf({ w }, 12), /f.st: 4 trailing bytes after the last tensor/);
    rejects(fileOf({ w: null }, 8), /f.st: tensor 'w': entry must be an object with dtype, shape, data_offsets/);
    rejects(fileOf({ w: [1] }, 8), /tensor 'w': entry must be an object/);
    rejects(fileOf({ w: { ...w, dtype: 'Q4' } }, 8), /tensor 'w': unsupported dtype "Q4"/);
    rejects(fileOf({ w: { ...w, dtype: 'toString' } }, 8), /tensor 'w': unsupported dtype "toString"/);
    rejects(fileOf({ w: { ...w, shape: [3] } }, 8), /8 bytes of data for shape \[3\] of F32 \(need 12\)/);
    rejects(fileOf({ w: { ...w, shape: [2.5] } }, 8), /tensor 'w': shape must be a list of non-negative integers/);
    rejects(fileOf({ w: { ...w, shape: null } }, 8), /tensor 'w': shape must be a list/);
    rejects(fileOf({ w: { ...w, data_offsets: [0] } }, 8), /tensor 'w': data_offsets must be \[begin, end\]/);
    rejects(fileOf({ w: { ...w, data_offsets: [0, '8'] } }, 8), /tensor 'w': data_offsets must be/);
    rejects(fileOf({ w: { ...w, data_offsets: [8, 0] } }, 8), /tensor 'w': data_offsets \[8, 0\] end before/);
    rejects(fileOf({ w: { ...w, shape: [2 ** 40, 2 ** 20] } }, 8), /tensor 'w': shape .* too large/);
    const a = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
    rejects(fileOf({ a, b: { ...a, data_offsets: [4, 12] } }, 12), /tensors 'a' and 'b' overlap/);
    rejects(fileOf({ a, b: { ...a, data_offsets: [0, 8] } }, 8), /tensors '(a|b)' and '(a|b)' overlap/);
    rejects(
      fileOf({ a, b: { ...a, data_offsets: [12, 20] } }, 20),
      /tensor 'b' starts at byte 12 .* hole after byte 8/,
    );
    rejects(fileOf({ a: { ...a, data_offsets: [4, 12] } }, 12), /tensor 'a' starts at byte 4 .* hole after byte 0/);
    // Duplicate names: JSON.parse would keep the last one silently.
    const dup = Buffer.from(
      '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
    );
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(dup.length));
    rejects(Buffer.concat([len, dup, Buffer.alloc(4)]), /f.st: tensor 'w' appears twice in the header/);
    rejects(fileOf({ __metadata__: { format: 1 }, w }, 8), /__metadata__ value 'format' must be a string, got 1/);
    rejects(fileOf({ __metadata__: 'pt', w }, 8), /__metadata__ must be an object of strings/);
    rejects(fileOf([w], 8), /header must start with '\{'/);
    const badUtf8 = Buffer.concat([Buffer.from('{"'), Buffer.of(0xff), Buffer.from('":1}')]);
    const l2 = Buffer.alloc(8);
    l2.writeBigUInt64LE(BigInt(badUtf8.length));
    rejects(Buffer.concat([l2, badUtf8]), /header is not valid UTF-8/);
    const huge = Buffer.alloc(16);
    huge.writeBigUInt64LE(2n ** 62n);
    rejects(huge, /header length 4611686018427387904 exceeds the format's limit/);

    const path = join(dir, 'junk.safetensors');
    writeFileSync(path, 'not json at all, definitely');
    assert.throws(() => readSafetensors(path), /junk.safetensors: header length .* exceeds/);
    assert.throws(() => readSafetensors(join(dir, 'missing.safetensors')), /missing.safetensors: cannot read/);
    rmSync(path);
  });

  it('reads tensors that lie beyond 2 GiB with positioned reads (sparse file, nothing large in memory)', () => {
    const path = join(dir, 'big.safetensors');
    const pad = 2 ** 31 + 4096; // a U8 tensor larger than any single Buffer read; never read here
    const header = {
      __metadata__: { format: 'pt' },
      pad: { dtype: 'U8', shape: [pad], data_offsets: [0, pad] },
      tail: { dtype: 'BF16', shape: [3], data_offsets: [pad, pad + 6] },
    };
    const head = fileOf(header, 0);
    const fd = openSync(path, 'w');
    try {
      writeSync(fd, head, 0, head.length, 0);
      ftruncateSync(fd, head.length + pad + 6);
      writeSync(fd, Buffer.from(Uint16Array.of(0x3f80, 0x4000, 0xc040).buffer), 0, 6, head.length + pad);
    } finally {
      closeSync(fd);
    }
    const r = SafetensorsReader.open(path);
    try {
      const t = r.read('tail');
      assert.equal(t.dtype, 'BF16');
      assert.deepEqual(Array.from(tensorValues(t)), [1, 2, -3]);
      assert.equal(r.header.entries.get('pad')!.end, pad);
    } finally {
      r.close();
      rmSync(path);
    }
  });

  it('reads a 320 MB BF16 file with peak RSS within 1.25x its size (child process, VmHWM)', (t) => {
    const path = join(dir, 'bf16.safetensors');
    const tensors = new Map<string, { dtype: 'BF16'; shape: number[]; data: Uint16Array }>();
    const rows = 4096;
    const cols = 2048; // 16 MiB per tensor
    for (let i = 0; i < 20; i++) {
      const bits = new Uint16Array(rows * cols);
      for (let j = 0; j < bits.length; j += 997) bits[j] = 0x3f80 + i;
      tensors.set(`layers.${i}.weight`, { dtype: 'BF16', shape: [rows, cols], data: bits });
    }
    writeSafetensors(path, tensors);
    tensors.clear();
    const script = `
      import { SafetensorsReader } from ${JSON.stringify(new URL('../src/io/safetensors.ts', import.meta.url).href)};
      import { readFileSync, statSync } from 'node:fs';
      const kb = (k) => Number(readFileSync('/proc/self/status', 'utf8').match(new RegExp(k + ':\\\\s+(\\\\d+)'))[1]) * 1024;
      const base = kb('VmRSS');
      const r = SafetensorsReader.open(process.argv[1]);
      const kept = [...r.header.entries.keys()].map((n) => r.read(n));
      r.close();
      let check = 0;
      for (const t of kept) check += t.bits[0];
      console.log(JSON.stringify({ base, peak: kb('VmHWM'), size: statSync(process.argv[1]).size, check }));
    `;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, path], {
      encoding: 'utf8',
    });
    rmSync(path);
    const m = JSON.parse(out.trim().split('\n').pop()!) as { base: number; peak: number; size: number; check: number };
    assert.equal(m.check, 20 * 0x3f80 + 190, 'every tensor was read');
    const grown = m.peak - m.base;
    const mib = (x: number) => `${(x / 2 ** 20).toFixed(1)} MiB`;
    t.diagnostic(`file ${mib(m.size)}, RSS before ${mib(m.base)}, peak ${mib(m.peak)}, grown ${mib(grown)}`);
    assert.ok(
      grown <= 1.25 * m.size,
      `peak RSS grew by ${(grown / 2 ** 20).toFixed(0)} MiB while loading ${(m.size / 2 ** 20).toFixed(0)} MiB`,
    );
  });
});
