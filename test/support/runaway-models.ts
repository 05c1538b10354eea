import { ElemType, encodeModel, floatTensor, int64Tensor } from "../../models/onnx-builder.ts";

/**
 * Models whose work or output size a caller controls through an input's values, as the probe of the
 * local stack crafted them: each is valid ONNX, and each is harmless for small values.
 */

/** A Loop whose trip count is the input `M`: `M = 1e12` runs for days. Returns `x` unchanged. */
export function callerLoopModel(): Uint8Array {
  return encodeModel({
    graphName: "caller_loop",
    inputs: [
      { name: "M", elemType: ElemType.INT64, dims: [] },
      { name: "x", elemType: ElemType.FLOAT, dims: [1] },
    ],
    outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: [1] }],
    nodes: [
      {
        opType: "Loop",
        inputs: ["M", "", "x"],
        outputs: ["y"],
        attributes: {
          body: {
            graph: {
              graphName: "body",
              inputs: [
                { name: "i", elemType: ElemType.INT64, dims: [] },
                { name: "cond_in", elemType: ElemType.BOOL, dims: [] },
                { name: "x_in", elemType: ElemType.FLOAT, dims: [1] },
              ],
              outputs: [
                { name: "cond_out", elemType: ElemType.BOOL, dims: [] },
                { name: "x_out", elemType: ElemType.FLOAT, dims: [1] },
              ],
              nodes: [
                { opType: "Identity", inputs: ["cond_in"], outputs: ["cond_out"] },
                { opType: "Add", inputs: ["x_in", "zero"], outputs: ["x_out"] },
              ],
              initializers: [floatTensor("zero", [1], new Float32Array([0]))],
            },
          },
        },
      },
    ],
  });
}

/** ConstantOfShape of the caller's `shape`: `[1e5, 1e5, 1]` asks for 40 GB. */
export function constantOfShapeBombModel(): Uint8Array {
  return encodeModel({
    graphName: "constant_of_shape_bomb",
    inputs: [{ name: "shape", elemType: ElemType.INT64, dims: [3] }],
    outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: ["a", "b", "c"] }],
    nodes: [{ opType: "ConstantOfShape", inputs: ["shape"], outputs: ["y"] }],
  });
}

/** Expand of `x` ([1, 1]) to the caller's `shape`: `[1e5, 1e5]` asks for 40 GB. */
export function expandBombModel(): Uint8Array {
  return encodeModel({
    graphName: "expand_bomb",
    inputs: [
      { name: "x", elemType: ElemType.FLOAT, dims: [1, 1] },
      { name: "shape", elemType: ElemType.INT64, dims: [2] },
    ],
    outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: ["rows", "columns"] }],
    nodes: [{ opType: "Expand", inputs: ["x", "shape"], outputs: ["y"] }],
  });
}

/** Reshape of `x` ([2, 3]) to the caller's `shape`: `[-1, 5]` or `[-2, 3]` cannot hold. */
export function callerReshapeModel(): Uint8Array {
  return encodeModel({
    graphName: "caller_reshape",
    inputs: [
      { name: "x", elemType: ElemType.FLOAT, dims: [2, 3] },
      { name: "shape", elemType: ElemType.INT64, dims: [2] },
    ],
    outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: ["rows", "columns"] }],
    nodes: [{ opType: "Reshape", inputs: ["x", "shape"], outputs: ["y"] }],
  });
}

/**
 * Output size from the input: a ~100-byte request for `n = 5e7` makes 200 MB of FP32 (Range then
 * Cast), which the probe saw come back as 200 MB of JSON.
 */
export function outputSizeBombModel(): Uint8Array {
  return encodeModel({
    graphName: "output_size_bomb",
    inputs: [{ name: "n", elemType: ElemType.INT64, dims: [] }],
    outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: ["n"] }],
    nodes: [
      { opType: "Range", inputs: ["start", "n", "step"], outputs: ["r"] },
      { opType: "Cast", inputs: ["r"], outputs: ["y"], attributes: { to: { int: ElemType.FLOAT } } },
    ],
    initializers: [int64Tensor("start", [], [0n]), int64Tensor("step", [], [1n])],
  });
}
