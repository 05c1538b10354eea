/** Tensors as onnxruntime takes and gives them, apart from any wire format. */

/** Element types as onnxruntime names them (ort.Tensor's `type`). */
export type OrtElementType =
  | "bool"
  | "uint8"
  | "uint16"
  | "uint32"
  | "uint64"
  | "int8"
  | "int16"
  | "int32"
  | "int64"
  | "float16"
  | "float32"
  | "float64"
  | "string";

export type TensorData =
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Float32Array
  | Float64Array
  | readonly string[];

/** A tensor in the form onnxruntime takes and gives: element type, dims, flat row-major data. */
export interface RawTensor {
  readonly type: OrtElementType;
  readonly dims: readonly number[];
  readonly data: TensorData;
}

export interface NamedTensor extends RawTensor {
  readonly name: string;
}
