// The command-line part of test/fuzz.test.ts, in a child process: runs main() on each argv of the JSON file given as
// argv[2] with stdout and stderr captured, appending one JSON line per case to the file argv[3] (a line before each
// case too, so a native abort names the case that caused it).
import { appendFileSync, readFileSync } from 'node:fs';

import { main } from '../src/cli/main.js';

const cases = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as string[][];
const results = process.argv[3]!;
const write = { out: process.stdout.write.bind(process.stdout), err: process.stderr.write.bind(process.stderr) };
for (const [i, argv] of cases.entries()) {
  appendFileSync(results, `${JSON.stringify({ start: i })}\n`);
  let stderr = '';
  process.stdout.write = (() => true) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
    return true;
  }) as typeof process.stderr.write;
  let code: number | null = null;
  let threw: string | null = null;
  try {
    code = await main(argv);
  } catch (e) {
    threw = `${(e as Error).name}: ${(e as Error).message}`;
  } finally {
    process.stdout.write = write.out;
    process.stderr.write = write.err;
  }
  appendFileSync(results, `${JSON.stringify({ case: i, code, threw, stderr, rss: process.memoryUsage().rss })}\n`);
}
