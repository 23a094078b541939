// `npm run bench -- SUITE [flags]`: runs one benchmark suite (the same as `retnet bench SUITE`; see bench/suites.ts).

import { RetnetError } from '../src/errors.js';
import { suites, suitesUsage } from './suites.js';

const [name, ...argv] = process.argv.slice(2);
const suite = name === undefined ? undefined : suites[name];
if (suite === undefined) {
  process.stderr.write(
    name === undefined
      ? suitesUsage('npm run bench --')
      : `bench: unknown suite '${name}'\n${suitesUsage('npm run bench --')}`,
  );
  process.exit(2);
}
try {
  await suite.run(argv);
} catch (e) {
  if (!(e instanceof RetnetError)) throw e;
  process.stderr.write(`bench ${name}: ${e.message}\n`);
  process.exit(1);
}
