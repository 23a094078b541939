// `retnet <command> [flags]`: dispatches to the subcommands. Errors of the library (RetnetError), of the command line
// and of the filesystem (ENOSPC, EROFS, ...) print as one line on stderr; anything else is a bug and prints its stack.

import { RetnetError, describeSystemError } from '../errors.js';
import { benchCommand } from './bench.js';
import { type Command, UsageError } from './command.js';
import { demoCommand } from './demo.js';
import { generateCommand } from './generate.js';
import { infoCommand } from './info.js';
import { evalCommand } from './eval.js';
import { logitsCommand } from './logits.js';
import { plotCommand } from './plot.js';
import { serveCommand } from './serve.js';
import { trainCommand } from './train.js';

const commands: Command[] = [
  demoCommand,
  infoCommand,
  trainCommand,
  evalCommand,
  generateCommand,
  serveCommand,
  logitsCommand,
  plotCommand,
  benchCommand,
];

function help(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    'usage: retnet <command> [flags]',
    '',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'retnet <command> --help shows the flags of a command.',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${help()}\n`);
    return name === undefined ? 2 : 0;
  }
  const command = commands.find((c) => c.name === name);
  if (!command) {
    process.stderr.write(`retnet: unknown command '${name}'\n\n${help()}\n`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`usage: ${command.usage}\n`);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`retnet ${e.message}\nusage: ${command.usage}\n`);
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
