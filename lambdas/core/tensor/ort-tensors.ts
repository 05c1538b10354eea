import type * as Ort from "onnxruntime-node";
import type { NamedTensor, OrtElementType, TensorData } from "./tensor.ts";

/** Our tensors as onnxruntime feeds (the typed arrays are shared, not copied). */
export function toOrtFeeds(ort: typeof Ort, inputs: readonly NamedTensor[]): Record<string, Ort.Tensor> {
  const feeds: Record<string, Ort.Tensor> = {};
  for (const input of inputs) {
    feeds[input.name] = new ort.Tensor(input.type, input.data as Ort.Tensor.DataType, input.dims as number[]);
  }
  return feeds;
}

/** onnxruntime's results, in the order the outputs were asked for. */
export function fromOrtResults(
  results: Ort.InferenceSession.OnnxValueMapType,
  outputs: readonly string[],
): NamedTensor[] {
  return outputs.map((name) => {
    const tensor = results[name] as Ort.Tensor;
    return { name, type: tensor.type as OrtElementType, dims: tensor.dims, data: tensor.data as TensorData };
  });
}

/**
 * Whether an onnxruntime failure is the caller's tensor problem (a shape that cannot hold, an index
 * out of range): a 400 wherever the model runs, Lambda or the GPU container.
 */
export function isCallerOrtError(message: string): boolean {
  return /INVALID_ARGUMENT|Got invalid dimensions|Invalid rank|out of (data )?bounds|must be within/i.test(
    message,
  );
}
