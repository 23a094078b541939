// The CLI's commands and their flags. Each command declares its flags once, in a table of typed entries (`int`,
// `num`, `text`, `choice`, `bool`, `list` below): the entry is the flag's parser, its bounds, its default and its line
// in `--help`. Commander (a maintained parser) turns the tables into the command line: per-command help with every
// flag, its type and default, `--version`, did-you-mean for unknown commands and flags, and every value checked while
// parsing, before a command starts any work. Adding a flag to a command is one entry in its table.

import { Command as Commander, CommanderError, InvalidArgumentError, Option } from 'commander';

import { setBackend } from '../backend/select.js';
import { RetnetError } from '../errors.js';
import { SIZE_BOUNDS } from '../models/bounds.js';
import { RETNET_DEFAULTS, configuredForm } from '../models/retnet/config.js';
import { WEIGHT_FORMATS } from '../quant/formats.js';

/** A user error on the command line: printed as one line with a pointer to the command's help, exit code 2. */
export class UsageError extends RetnetError {}

/** One flag: how its value is parsed and shown. `T` is the type a command reads (undefined: not given, no default). */
export interface Flag<T> {
  /** The value's placeholder in help: `int`, `number`, `text`, `dir`, `a|b|c`, ...; null for a boolean flag. */
  placeholder: string | null;
  help: string;
  /** Parses (and checks) one raw value; throws InvalidArgumentError naming the problem. */
  parse?: (raw: string) => T;
  default?: T;
  /** The default as help shows it, when it is not a plain value ("10% of --steps", "from run.json"). */
  defaultHelp?: string;
  /** An environment variable that gives the value when the flag is absent. */
  env?: string;
  required?: boolean;
  choices?: readonly string[];
  /** Left out of help (internal flags). */
  hidden?: boolean;
  /** The bounds of a numeric flag. */
  range?: Bounds & { integer: boolean };
}

export type Flags = Record<string, Flag<unknown>>;
export type FlagValues<F extends Flags> = { [K in keyof F]: F[K] extends Flag<infer T> ? T : never };

// Numbers are read strictly: decimal notation with an optional exponent, nothing else ('' and ' ' are not 0, nor
// are '0x10', 'Infinity' or '1_000'); -0 is 0.
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;

function readNumber(raw: string, integer: boolean, min: number, max: number): number {
  const what = `${integer ? 'an integer' : 'a number'} in [${min}, ${max}]`;
  const n = NUMBER.test(raw) ? Number(raw) + 0 : NaN;
  if (!Number.isFinite(n) || (integer && !Number.isSafeInteger(n)) || n < min || n > max)
    throw new InvalidArgumentError(`expected ${what}, got '${raw}'`);
  return n;
}

interface Bounds {
  min: number;
  max: number;
}
type Defaults<T> = { default: T; defaultHelp?: string } | { default?: undefined; defaultHelp?: string };
type Required = { required: true; default?: undefined };

function numeric(help: string, o: Bounds & Defaults<number>, integer: boolean): Flag<number | undefined> {
  return {
    placeholder: integer ? 'int' : 'number',
    help: `${help} (${integer ? 'integer' : 'number'} in [${o.min}, ${o.max}])`,
    range: { min: o.min, max: o.max, integer },
    parse: (raw) => readNumber(raw, integer, o.min, o.max),
    default: o.default,
    defaultHelp: o.defaultHelp,
  };
}

/** An integer flag within [min, max]. */
export function int(help: string, o: Bounds & { default: number; defaultHelp?: string }): Flag<number>;
export function int(help: string, o: Bounds & Defaults<number>): Flag<number | undefined>;
export function int(help: string, o: Bounds & Defaults<number>): Flag<number | undefined> {
  return numeric(help, o, true);
}

/** A finite number flag within [min, max]. */
export function num(help: string, o: Bounds & { default: number; defaultHelp?: string }): Flag<number>;
export function num(help: string, o: Bounds & Defaults<number>): Flag<number | undefined>;
export function num(help: string, o: Bounds & Defaults<number>): Flag<number | undefined> {
  return numeric(help, o, false);
}

type TextOptions = { placeholder?: string; env?: string; nonEmpty?: boolean };

/** A string flag (a path, a name, a prompt). `nonEmpty` rejects ''. */
export function text(help: string, o: TextOptions & Required): Flag<string>;
export function text(help: string, o: TextOptions & { default: string; defaultHelp?: string }): Flag<string>;
export function text(help: string, o?: TextOptions & Defaults<string>): Flag<string | undefined>;
export function text(
  help: string,
  o: TextOptions & { required?: boolean; default?: string; defaultHelp?: string } = {},
): Flag<string | undefined> {
  return {
    placeholder: o.placeholder ?? 'text',
    help,
    parse: (raw) => {
      if (o.nonEmpty && raw.trim() === '') throw new InvalidArgumentError('must not be empty');
      return raw;
    },
    default: o.default,
    defaultHelp: o.defaultHelp,
    env: o.env,
    required: o.required,
  };
}

/** One of a list of choices. */
export function choice<const C extends string>(
  help: string,
  choices: readonly C[],
  o: { default: NoInfer<C> },
): Flag<C>;
export function choice<const C extends string>(
  help: string,
  choices: readonly C[],
  o?: Defaults<NoInfer<C>>,
): Flag<C | undefined>;
export function choice<const C extends string>(
  help: string,
  choices: readonly C[],
  o: Defaults<C> = {},
): Flag<C | undefined> {
  return {
    placeholder: choices.join('|'),
    help,
    choices,
    parse: (raw) => {
      if (!(choices as readonly string[]).includes(raw))
        throw new InvalidArgumentError(`expected one of ${choices.join(', ')}, got '${raw}'`);
      return raw as C;
    },
    default: o.default,
    defaultHelp: o.defaultHelp,
  };
}

/** A boolean switch: false unless given. */
export function bool(help: string): Flag<boolean> {
  return { placeholder: null, help, default: false };
}

/** A comma-separated list, each item parsed by `item` (which throws InvalidArgumentError). */
export function list<T>(
  help: string,
  item: (raw: string, index: number) => T,
  o: { placeholder: string; maxItems: number; required?: boolean },
): Flag<T[] | undefined> {
  return {
    placeholder: o.placeholder,
    help,
    required: o.required,
    parse: (raw) => {
      const parts = raw.split(',');
      if (raw.trim() === '') throw new InvalidArgumentError('must not be empty');
      if (parts.length > o.maxItems) throw new InvalidArgumentError(`at most ${o.maxItems} items, got ${parts.length}`);
      return parts.map((p, i) => {
        try {
          return item(p.trim(), i);
        } catch (e) {
          throw new InvalidArgumentError(`item ${i} ('${p}'): ${(e as Error).message}`);
        }
      });
    },
  };
}

/** An integer list item within [min, max] (for `list`). */
export const intItem = (min: number, max: number) => (raw: string) => readNumber(raw, true, min, max);

/** `--weights` (generate, serve, eval, logits): the format every Linear's weight is converted to at load (src/quant). */
export const WEIGHTS_FLAG = {
  weights: choice("convert every Linear's weight to this format at load", WEIGHT_FORMATS, {
    defaultHelp: 'as the checkpoint holds them',
  }),
};

/** `--state` (generate, serve): the dtype of the decode states a RetNet keeps (RetNetModel.stateDType). */
export const STATE_FLAG = {
  state: choice("a RetNet's decode state: f16 halves the bytes each sequence holds and a step moves", ['f32', 'f16'], {
    default: 'f32',
  }),
};

/**
 * `--device` (train, generate, serve, eval, logits, the bench suites): the device every model and tensor of the
 * command is made on, applied by defineCommand before the command runs (the same choice as RETNET_BACKEND).
 */
export const DEVICE_FLAG = {
  device: text('the device to compute on: cpu, cuda, reference, or another registered one', {
    placeholder: 'name',
    nonEmpty: true,
    defaultHelp: 'cpu when its addon loads, else reference',
  }),
};

/**
 * `--form` and `--chunk-size` (train, eval, logits): a RetNet's retention form for full-sequence passes (of `forms`,
 * what the command can run) and the chunk size of the chunkwise form. Not given, the model's config decides
 * (chunkwise_recurrent, recurrent_chunk_size; a new model: RetNetConfig's defaults).
 */
export function formFlags<const F extends string>(forms: readonly F[]) {
  return {
    form: choice('RetNet only: the retention form of the pass', forms, {
      defaultHelp: `the model config's (a new RetNet: ${configuredForm(RETNET_DEFAULTS)})`,
    }),
    'chunk-size': int('RetNet only: the chunk size of the chunkwise form', {
      min: 1,
      max: SIZE_BOUNDS.chunkSize,
      defaultHelp: `the model config's (a new RetNet: ${RETNET_DEFAULTS.chunkSize})`,
    }),
  };
}

/** What a command's `run` receives: the flag values (defaults applied), positionals, and which flags were given. */
export interface Parsed<F extends Flags> {
  values: FlagValues<F>;
  positionals: string[];
  /** True when the flag came from the command line (or its environment variable), not from its default. */
  given(flag: keyof F & string): boolean;
}

export interface CommandSpec<F extends Flags> {
  name: string;
  summary: string;
  flags: F;
  /** Positional arguments, as Commander writes them: `<run-dir...>`, `[suite]`. */
  args?: { name: string; help: string }[];
  /** Help text after the flags (examples, environment). */
  epilog?: string;
  /** Sub-commands (the bench suites). */
  subcommands?: () => Command[];
  /** Returns the process exit code. A command of subcommands alone has none (it shows its help). */
  run?(parsed: Parsed<F>): Promise<number>;
}

export interface Command {
  name: string;
  summary: string;
  flags: Flags;
  /** The Commander definition of this command; its action stores the exit code in `result.code`. */
  build(result: { code: number }): Commander;
  /** Parses `argv` (the words after the command's name) and runs the command: for one command calling another. */
  run(argv: string[]): Promise<number>;
}

/** The flag's line in help: what it does, its bounds, its default and its environment variable. */
function describe(flag: Flag<unknown>): string {
  const shown =
    flag.defaultHelp ??
    (flag.default === undefined || flag.placeholder === null
      ? undefined
      : typeof flag.default === 'string'
        ? `'${flag.default}'`
        : String(flag.default));
  const extra = [
    flag.required ? 'required' : null,
    shown === undefined ? null : `default: ${shown}`,
    flag.env ? `env: ${flag.env}` : null,
  ].filter((x) => x !== null);
  return extra.length === 0 ? flag.help : `${flag.help}; ${extra.join(', ')}`;
}

/** Commander's option for a flag table entry (required flags are checked by defineCommand, after unknown ones). */
function option(name: string, flag: Flag<unknown>): Option {
  const o = new Option(flag.placeholder === null ? `--${name}` : `--${name} <${flag.placeholder}>`, describe(flag));
  if (flag.parse) o.argParser((raw: string) => flag.parse!(raw));
  if (flag.env) o.env(flag.env);
  if (flag.hidden) o.hideHelp();
  return o;
}

/** Commander keys options by camel case; the tables use the flag's own name. */
const attribute = (name: string) => name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

/** Applies the program-wide settings: errors are thrown (main decides the exit code), output goes to `out`. */
export function configure(c: Commander): Commander {
  return c
    .exitOverride()
    .showSuggestionAfterError(true)
    .configureHelp({ sortOptions: false, helpWidth: 120, optionDescription: (o) => o.description })
    .allowExcessArguments(false);
}

export function defineCommand<F extends Flags>(spec: CommandSpec<F>): Command {
  const build = (result: { code: number }): Commander => {
    const c = configure(new Commander(spec.name)).description(spec.summary);
    /** 'retnet bench decode': the names from the program down to this command. */
    const fullName = () => {
      const names: string[] = [];
      for (let x: Commander | null = c; x; x = x.parent) names.unshift(x.name());
      return names[0] === 'retnet' ? names.join(' ') : ['retnet', ...names].join(' ');
    };
    c.configureOutput({
      outputError: (message, write) =>
        write(`${message.replace(/^error: /, `${fullName()}: `)}(${fullName()} --help lists its flags)\n`),
    });
    for (const [name, flag] of Object.entries(spec.flags)) c.addOption(option(name, flag));
    for (const a of spec.args ?? []) c.argument(a.name, a.help);
    if (spec.epilog) c.addHelpText('after', `\n${spec.epilog}`);
    for (const sub of spec.subcommands?.() ?? []) c.addCommand(sub.build(result));
    if (!spec.run) return c;
    const run = spec.run;
    c.action(async (...actionArgs: unknown[]) => {
      const cmd = actionArgs[actionArgs.length - 1] as Commander;
      const opts = cmd.opts();
      const values = Object.fromEntries(
        Object.entries(spec.flags).map(([name, flag]) => [name, opts[attribute(name)] ?? flag.default]),
      ) as FlagValues<F>;
      const given = (flag: string) => {
        const source = cmd.getOptionValueSource(attribute(flag));
        return source === 'cli' || source === 'env';
      };
      for (const [name, flag] of Object.entries(spec.flags))
        if (flag.required && values[name] === undefined)
          cmd.error(`error: --${name} is required`, { code: 'retnet.missingFlag', exitCode: 2 });
      const device = (values as { device?: unknown }).device;
      if ('device' in spec.flags && typeof device === 'string') setBackend(device);
      result.code = await run({ values, positionals: cmd.args, given });
    });
    return c;
  };
  return {
    name: spec.name,
    summary: spec.summary,
    flags: spec.flags,
    build,
    async run(argv) {
      const result = { code: 0 };
      const c = build(result).configureOutput({ writeErr: () => {} });
      try {
        await c.parseAsync(argv, { from: 'user' });
      } catch (e) {
        if (e instanceof CommanderError) throw new UsageError(`${spec.name}: ${e.message.replace(/^error: /, '')}`);
        throw e;
      }
      return result.code;
    },
  };
}
