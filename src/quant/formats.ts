// The weight formats of `--weights` and the API (issue 13): each names the dtype a Linear's weight is held in
// (src/tensor/dtype.ts defines their storage and rounding; native/cpu/lowp.h reads the same bytes). Activations and
// the decode state stay float32 whatever the format.

import { FormatError } from '../errors.js';
import type { DType } from '../tensor/dtype.js';

export type WeightFormat = 'f32' | 'bf16' | 'f16' | 'int8' | 'q4';

/** The dtype each format holds a weight in. */
export const WEIGHT_DTYPES: Record<WeightFormat, DType> = {
  f32: 'float32',
  bf16: 'bfloat16',
  f16: 'float16',
  int8: 'qint8',
  q4: 'qint4',
};

export const WEIGHT_FORMATS = Object.keys(WEIGHT_DTYPES) as WeightFormat[];

/** The format whose dtype is `dtype`, or null (float64, int32). */
export function weightFormatOf(dtype: DType): WeightFormat | null {
  return WEIGHT_FORMATS.find((f) => WEIGHT_DTYPES[f] === dtype) ?? null;
}

export function isWeightFormat(s: string): s is WeightFormat {
  return (WEIGHT_FORMATS as readonly string[]).includes(s);
}

export function parseWeightFormat(s: string, what = '--weights'): WeightFormat {
  if (isWeightFormat(s)) return s;
  throw new FormatError(`${what}: unknown weight format '${s}' (expected ${WEIGHT_FORMATS.join(', ')})`);
}
