// `retnet bench SUITE [--quick]`: runs a benchmark suite of bench/ (decode, batch, train, quality, peer, and the
// kernel benchmarks): prints tables and writes its results under --out (runs/bench/ by default), or with --save the
// committed bench/results/ and BENCHMARKS.md. Exits 1 when a measured point failed (the results are still written).

import { suites } from '../../bench/suites.js';
import { defineCommand } from './command.js';

export const benchCommand = defineCommand({
  name: 'bench',
  summary: 'run a benchmark suite (decode, batch, train, quality, peer, ...) and write its results',
  flags: {},
  subcommands: () => suites,
  epilog: 'retnet bench SUITE --help lists the flags of a suite.',
});
