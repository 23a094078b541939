// `npm run bench -- SUITE [flags]`: runs one benchmark suite. Each suite prints its tables and writes
// bench/results/<SUITE>.json (see bench/lib.ts). Add a suite by adding a line to `suites`.

import { RetnetError } from '../src/errors.js';
import { attentionSuite } from './attention.js';
import { gemmSuite } from './gemm.js';
import { generateSuite } from './generate.js';

interface Suite {
  summary: string;
  run(argv: string[]): Promise<void>;
}

const suites: Record<string, Suite> = {
  attention: {
    summary: 'causal attention naive vs flash: validation, fwd/fwd+bwd by length, peak bytes, decode [--quick]',
    run: attentionSuite,
  },
  gemm: {
    summary: 'GEMM GFLOP/s vs OpenBLAS from C, tiny-op overhead, copy bandwidth [--quick] [--sizes 256,1024]',
    run: gemmSuite,
  },
  generate: {
    summary: 'generate() prefill/decode tokens/s at batch 1/4/16; the server with 1/4/16 streaming clients [--quick]',
    run: generateSuite,
  },
};

function usage(): string {
  const lines = Object.entries(suites).map(([name, s]) => `  ${name.padEnd(10)} ${s.summary}`);
  return `usage: npm run bench -- SUITE [flags]\nsuites:\n${lines.join('\n')}\n`;
}

const [name, ...argv] = process.argv.slice(2);
const suite = name === undefined ? undefined : suites[name];
if (suite === undefined) {
  process.stderr.write(name === undefined ? usage() : `bench: unknown suite '${name}'\n${usage()}`);
  process.exit(2);
}
try {
  await suite.run(argv);
} catch (e) {
  if (!(e instanceof RetnetError)) throw e;
  process.stderr.write(`bench ${name}: ${e.message}\n`);
  process.exit(1);
}
