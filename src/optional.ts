// Optional dependencies: heavy packages only some users need (`tokenizers`, 64 MB, to train a BPE; `vega` and
// `@resvg/resvg-js` to draw charts). package.json lists them as optional peer dependencies, so npm does not install
// them with retnet; they load on first use, and a missing one is an error that says what needs it and how to add it.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';

import { packageRoot } from './backend/cpu/load.js';
import { RetnetError } from './errors.js';

/** An optional dependency is not installed. */
export class MissingDependencyError extends RetnetError {}

/** What each optional package is for (the versions are package.json's peerDependencies). */
export const OPTIONAL_PACKAGES = {
  tokenizers: 'training a byte-level BPE (--tokenizer bpe)',
  vega: 'drawing charts (retnet plot, benchmark charts)',
  '@resvg/resvg-js': 'drawing charts as PNG (retnet plot, benchmark charts)',
} as const;
export type OptionalPackage = keyof typeof OPTIONAL_PACKAGES;

function missing(name: OptionalPackage): MissingDependencyError {
  const pkg = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as {
    peerDependencies?: Record<string, string>;
  };
  const version = pkg.peerDependencies?.[name];
  return new MissingDependencyError(
    `${OPTIONAL_PACKAGES[name]} needs the optional package '${name}', which is not installed; ` +
      `install it beside retnet: npm install ${name}${version ? `@${version}` : ''}`,
  );
}

const notFound = (e: unknown, name: string) =>
  ['MODULE_NOT_FOUND', 'ERR_MODULE_NOT_FOUND'].includes((e as NodeJS.ErrnoException).code ?? '') &&
  (e as Error).message.includes(`'${name}'`);

/** `require(name)` from retnet's own folder, or MissingDependencyError. */
export function requireOptional<T>(name: OptionalPackage): T {
  try {
    return createRequire(import.meta.url)(name) as T;
  } catch (e) {
    if (notFound(e, name)) throw missing(name);
    throw e;
  }
}

/** `import(name)`, or MissingDependencyError. */
export async function importOptional<T>(name: OptionalPackage): Promise<T> {
  try {
    return (await import(name)) as T;
  } catch (e) {
    if (notFound(e, name)) throw missing(name);
    throw e;
  }
}
