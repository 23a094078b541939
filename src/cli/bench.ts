// `retnet bench SUITE [--quick]`: runs a benchmark suite of bench/ (decode, batch, train, quality, peer, and the
// kernel benchmarks): prints tables, writes bench/results/<SUITE>.json, charts and the suite's section of
// BENCHMARKS.md. Exits 1 when a measured point failed (the results are still written).

import { type Command, UsageError } from './command.js';

export const benchCommand: Command = {
  name: 'bench',
  summary: 'run a benchmark suite (decode, batch, train, quality, peer, ...) and write its results',
  usage: 'retnet bench SUITE [--quick] [flags]   (retnet bench --list names the suites)',
  async run(argv) {
    // The suites live in bench/ (compiled to dist/bench/); loaded here so that other commands do not pay for them.
    const { suites, suitesUsage } = await import('../../bench/suites.js');
    const [name, ...rest] = argv;
    if (name === '--list') {
      process.stdout.write(suitesUsage('retnet bench'));
      return 0;
    }
    if (name === undefined) throw new UsageError(`bench: give a SUITE\n${suitesUsage('retnet bench')}`);
    const suite = suites[name];
    if (!suite) throw new UsageError(`bench: unknown suite '${name}'\n${suitesUsage('retnet bench')}`);
    await suite.run(rest);
    return 0;
  },
};
