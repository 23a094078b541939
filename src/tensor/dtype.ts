// Element types. float32 is the working type on every device; float64 exists on the reference device for gradient
// checks and for matching reference vectors exactly; int32 holds token ids and targets.

export type DType = 'float32' | 'float64' | 'int32';

export type FloatArray = Float32Array | Float64Array;
export type DataArray = Float32Array | Float64Array | Int32Array;

interface DTypeInfo {
  /** Bytes of storage per element. */
  bytes: number;
  /** 'float' values are stored as they are computed (results of a cast-through kernel are cast back to it). */
  kind: 'float' | 'int';
  /** The dtype a kernel computes in when a device has no kernel for this one (see backend/kernels.ts). */
  compute: DType;
}

const DTYPES: Record<DType, DTypeInfo> = {
  float32: { bytes: 4, kind: 'float', compute: 'float32' },
  float64: { bytes: 8, kind: 'float', compute: 'float64' },
  int32: { bytes: 4, kind: 'int', compute: 'int32' },
};

export function dtypeInfo(dtype: DType): DTypeInfo {
  return DTYPES[dtype];
}

export function bytesPerElement(dtype: DType): number {
  return DTYPES[dtype].bytes;
}

/** The dtype a kernel computes in when a device has no kernel for `dtype` itself. */
export function computeDType(dtype: DType): DType {
  return DTYPES[dtype].compute;
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
