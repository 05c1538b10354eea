import type onnxProto from "onnx-proto";

/**
 * What reading a graph's nodes needs without onnx-proto's decoder: the inference function loads that
 * only when it checks a model for inline runs (shape-bound.ts), so its cold start does not parse it.
 */

/** Domain of onnxruntime's contrib operators. */
export const MICROSOFT_DOMAIN = "com.microsoft";

/** ONNX TensorProto.DataType.STRING. */
export const STRING_ELEMENT = 8;

/** The graphs a node's attributes carry: the bodies of If, Loop and Scan. */
export function subgraphs(node: onnxProto.onnx.INodeProto): onnxProto.onnx.IGraphProto[] {
  const graphs: onnxProto.onnx.IGraphProto[] = [];
  for (const entry of node.attribute ?? []) {
    if (entry.g) graphs.push(entry.g);
    for (const sub of entry.graphs ?? []) graphs.push(sub);
  }
  return graphs;
}
