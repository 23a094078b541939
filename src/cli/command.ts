// The shape of a CLI subcommand and the argument parsing they share (node:util parseArgs, Node's own parser).

import { parseArgs, type ParseArgsConfig } from 'node:util';

import { RetnetError } from '../errors.js';
import { WEIGHT_FORMATS, type WeightFormat } from '../quant/formats.js';

export interface Command {
  name: string;
  summary: string;
  usage: string;
  /** Returns the process exit code. */
  run(argv: string[]): Promise<number>;
}

/** A user error on the command line: printed as one line with the command's usage, exit code 2. */
export class UsageError extends RetnetError {}

type FlagSpec = Record<string, { type: 'string' | 'boolean'; short?: string }>;

export interface ParsedFlags<T extends FlagSpec> {
  values: { [K in keyof T]?: T[K]['type'] extends 'boolean' ? boolean : string };
  positionals: string[];
}

export function parseFlags<T extends FlagSpec>(
  command: string,
  argv: string[],
  options: T,
  allowPositionals = false,
): ParsedFlags<T> {
  try {
    const config: ParseArgsConfig = { args: argv, options, allowPositionals, strict: true };
    return parseArgs(config) as unknown as ParsedFlags<T>;
  } catch (e) {
    throw new UsageError(`${command}: ${(e as Error).message}`);
  }
}

/** `--weights f32|bf16|int8|q4` (generate, serve, eval, logits): the format every Linear's weight is converted to at
 * load (src/quant); absent, the weights stay as the checkpoint loads them. */
export const WEIGHTS_FLAG = { weights: { type: 'string' } } as const;
export const WEIGHTS_USAGE = `[--weights ${WEIGHT_FORMATS.join('|')}]`;

export function weightsFlag(command: string, value: string | undefined): WeightFormat | undefined {
  if (value === undefined) return undefined;
  if (!(WEIGHT_FORMATS as readonly string[]).includes(value))
    throw new UsageError(`${command}: --weights must be one of ${WEIGHT_FORMATS.join(', ')}, got '${value}'`);
  return value as WeightFormat;
}

/** Parses a flag value as an integer within [min, max]. */
export function intFlag(
  command: string,
  flag: string,
  value: string | undefined,
  fallback: number,
  min = 1,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new UsageError(`${command}: --${flag} must be an integer in [${min}, ${max}], got '${value}'`);
  return n;
}

/** Parses a flag value as a finite number within [min, max]. */
export function numberFlag(
  command: string,
  flag: string,
  value: string | undefined,
  fallback: number,
  min = -Infinity,
  max = Infinity,
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max)
    throw new UsageError(`${command}: --${flag} must be a number in [${min}, ${max}], got '${value}'`);
  return n;
}

/** Checks a flag value against a list of choices. */
export function choiceFlag<C extends string>(
  command: string,
  flag: string,
  value: string | undefined,
  choices: readonly C[],
  fallback: C,
): C {
  if (value === undefined) return fallback;
  if (!(choices as readonly string[]).includes(value))
    throw new UsageError(`${command}: --${flag} must be one of ${choices.join(', ')}, got '${value}'`);
  return value as C;
}
