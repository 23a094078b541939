// `npm run bench -- SUITE [flags]`: the same as `retnet bench SUITE [flags]` (see bench/suites.ts), through tsx.

import { main } from '../src/cli/main.js';

process.exitCode = await main(['bench', ...process.argv.slice(2)]);
