// `retnet <command> [flags]`: dispatches to the subcommands. Errors of the command line (exit code 2), of the library
// (RetnetError, exit code 1) and of the filesystem (ENOSPC, EROFS, ..., exit code 1) print as one line on stderr;
// anything else is a bug and prints its stack.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { Command as Commander, CommanderError } from 'commander';

import { packageRoot } from '../backend/cpu/load.js';
import { RetnetError, describeSystemError } from '../errors.js';
import { benchCommand } from './bench.js';
import { type Command, UsageError, configure } from './command.js';
import { demoCommand } from './demo.js';
import { evalCommand } from './eval.js';
import { generateCommand } from './generate.js';
import { infoCommand } from './info.js';
import { logitsCommand } from './logits.js';
import { plotCommand } from './plot.js';
import { quantizeCommand } from './quantize.js';
import { serveCommand } from './serve.js';
import { serveWebCommand } from './serve-web.js';
import { trainCommand } from './train.js';

export const commands: Command[] = [
  demoCommand,
  infoCommand,
  trainCommand,
  evalCommand,
  generateCommand,
  serveCommand,
  serveWebCommand,
  logitsCommand,
  quantizeCommand,
  plotCommand,
  benchCommand,
];

export function version(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

/** The whole command line as one Commander program; each command's action stores its exit code in `result`. */
export function program(result: { code: number }): Commander {
  const p = configure(new Commander('retnet'))
    .description('RetNet for TypeScript/Node: train, evaluate, generate, serve, benchmark')
    .version(version(), '-V, --version', 'print the version')
    .addHelpText('after', '\nretnet <command> --help lists the flags of a command, their types and defaults.');
  for (const c of commands) p.addCommand(c.build(result));
  return p;
}

export async function main(argv: string[]): Promise<number> {
  const result = { code: 0 };
  try {
    await program(result).parseAsync(argv, { from: 'user' });
    return result.code;
  } catch (e) {
    // Commander has printed its message (an unknown command or flag with a suggestion, a bad value, or the help).
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    const name = argv[0];
    if (e instanceof UsageError) {
      // The message starts with the command it is about ('train: ...', 'bench decode: ...').
      const where = /^([a-z][a-z ]*):/.exec(e.message)?.[1] ?? name;
      process.stderr.write(`retnet ${e.message}\n(retnet ${where} --help lists its flags)\n`);
      return 2;
    }
    if (e instanceof RetnetError) {
      process.stderr.write(`retnet ${name}: ${e.message}\n`);
      return 1;
    }
    const system = describeSystemError(e);
    if (system !== null) {
      process.stderr.write(`retnet ${name}: ${system}\n`);
      return 1;
    }
    throw e;
  }
}
