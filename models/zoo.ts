import { ElemType, encodeModel, floatTensor } from "./onnx-builder.ts";

/** Every Open Inference Protocol (V2) tensor datatype and the ONNX element type it maps to. */
export const V2_DATATYPE_ELEM_TYPES = {
  BOOL: ElemType.BOOL,
  UINT8: ElemType.UINT8,
  UINT16: ElemType.UINT16,
  UINT32: ElemType.UINT32,
  UINT64: ElemType.UINT64,
  INT8: ElemType.INT8,
  INT16: ElemType.INT16,
  INT32: ElemType.INT32,
  INT64: ElemType.INT64,
  FP16: ElemType.FLOAT16,
  FP32: ElemType.FLOAT,
  FP64: ElemType.DOUBLE,
  BYTES: ElemType.STRING,
} as const;
export type V2Datatype = keyof typeof V2_DATATYPE_ELEM_TYPES;
export const V2_DATATYPES = Object.keys(V2_DATATYPE_ELEM_TYPES) as V2Datatype[];

/**
 * One Identity per V2 datatype: `in_<dt>` -> `out_<dt>` (e.g. `in_fp16` -> `out_fp16`), shape
 * ["batch", "n"], so a server can be checked to carry every datatype through unchanged.
 */
export function buildDatatypeZooModel(): Uint8Array {
  const signatures = V2_DATATYPES.map((datatype) => ({
    suffix: datatype.toLowerCase(),
    elemType: V2_DATATYPE_ELEM_TYPES[datatype],
  }));
  return encodeModel({
    graphName: "datatype_zoo",
    docString: "Identity for every V2 datatype, to test tensor encoding end to end.",
    inputs: signatures.map(({ suffix, elemType }) => ({
      name: `in_${suffix}`,
      elemType,
      dims: ["batch", "n"],
    })),
    outputs: signatures.map(({ suffix, elemType }) => ({
      name: `out_${suffix}`,
      elemType,
      dims: ["batch", "n"],
    })),
    nodes: signatures.map(({ suffix }) => ({
      name: `identity_${suffix}`,
      opType: "Identity",
      inputs: [`in_${suffix}`],
      outputs: [`out_${suffix}`],
    })),
    metadata: { description: "Echoes each in_<datatype> input as out_<datatype>." },
  });
}

/** `x` FP32 [2, 3] -> `y` = 2x: fixed dims, for tests of shape validation. */
export function buildFixedShapeModel(): Uint8Array {
  return encodeModel({
    graphName: "fixed_shape",
    docString: "Doubles a fixed-shape [2, 3] FP32 tensor.",
    inputs: [{ name: "x", elemType: ElemType.FLOAT, dims: [2, 3] }],
    outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: [2, 3] }],
    initializers: [floatTensor("two", [], Float32Array.of(2))],
    nodes: [{ opType: "Mul", inputs: ["x", "two"], outputs: ["y"] }],
    metadata: { description: "y = 2 * x for x of shape [2, 3]." },
  });
}

/**
 * `image` FP32 [batch, 3, 640, 640] -> `mean` [batch, 1, 1, 1], each image's mean: a model whose work is
 * reading every element of an image-sized input (binary tensors, asynchronous inference).
 */
export function buildImageMeanModel(): Uint8Array {
  return encodeModel({
    graphName: "image_mean",
    inputs: [{ name: "image", elemType: ElemType.FLOAT, dims: ["batch", 3, 640, 640] }],
    outputs: [{ name: "mean", elemType: ElemType.FLOAT, dims: ["batch", 1, 1, 1] }],
    nodes: [
      {
        opType: "ReduceMean",
        inputs: ["image"],
        outputs: ["mean"],
        attributes: { axes: { ints: [1, 2, 3] }, keepdims: { int: 1 } },
      },
    ],
    opsetVersion: 13,
  });
}
