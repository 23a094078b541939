// Error classes: each names what went wrong and what was expected, so a user can act on the message.

export class RetnetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

/** An op received tensors whose shapes do not fit together. */
export class ShapeError extends RetnetError {}

/** An op received a tensor of a dtype it does not accept, or a backend cannot hold that dtype. */
export class DTypeError extends RetnetError {}

/** A tensor was used after `dispose()`. */
export class DisposedError extends RetnetError {}

/** Tensors of different backends were mixed, or a backend is unavailable. */
export class BackendError extends RetnetError {}

/** A configuration field is missing or invalid. */
export class ConfigError extends RetnetError {}

/** A checkpoint, safetensors file or other input file is malformed or does not match the model. */
export class FormatError extends RetnetError {}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}
