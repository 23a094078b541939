// Element types. float32 is the working type on every backend; float64 exists on the reference backend for gradient
// checks and for matching reference vectors exactly; int32 holds token ids and targets.

export type DType = 'float32' | 'float64' | 'int32';

export type FloatArray = Float32Array | Float64Array;
export type DataArray = Float32Array | Float64Array | Int32Array;

export function bytesPerElement(dtype: DType): number {
  return dtype === 'float64' ? 8 : 4;
}

export function allocArray(dtype: DType, size: number): DataArray {
  switch (dtype) {
    case 'float32':
      return new Float32Array(size);
    case 'float64':
      return new Float64Array(size);
    case 'int32':
      return new Int32Array(size);
  }
}

export function isFloat(dtype: DType): boolean {
  return dtype !== 'int32';
}
