import onnxProto from "onnx-proto";
import { MaasError } from "./errors.ts";
import type { Dim, ModelSignature, TensorSpec, V2Datatype } from "./model.ts";

const { onnx } = onnxProto;

/** The model file itself is unusable; the message says why, for the publisher. */
export class InvalidModelError extends MaasError {
  constructor(message: string) {
    super(422, "invalid_model", message);
    this.name = "InvalidModelError";
  }
}

/** ONNX TensorProto.DataType -> V2 datatype, for the element types this service can serve. */
const ELEMENT_TYPES: ReadonlyMap<number, V2Datatype> = new Map([
  [1, "FP32"],
  [2, "UINT8"],
  [3, "INT8"],
  [4, "UINT16"],
  [5, "INT16"],
  [6, "INT32"],
  [7, "INT64"],
  [8, "BYTES"],
  [9, "BOOL"],
  [10, "FP16"],
  [11, "FP64"],
  [12, "UINT32"],
  [13, "UINT64"],
]);

export interface ModelInspection {
  readonly signature: ModelSignature;
  readonly irVersion: number;
  /** Version of the default ("ai.onnx") operator set. */
  readonly opsetVersion: number;
  readonly producer: string;
  readonly metadata: Readonly<Record<string, string>>;
  /** Class labels from the metadata entry `labels` (a JSON array of strings), if any. */
  readonly labels?: readonly string[];
  readonly description?: string;
}

type Long = { toNumber(): number };
const toNumber = (value: number | Long | null | undefined): number =>
  value == null ? 0 : typeof value === "number" ? value : value.toNumber();

function tensorSpec(value: onnxProto.onnx.IValueInfoProto, role: "input" | "output"): TensorSpec {
  const name = value.name ?? "";
  const tensorType = value.type?.tensorType;
  if (!tensorType) {
    throw new InvalidModelError(
      `${role} '${name}' is not a tensor (sequence, map or optional types are not served)`,
    );
  }
  const elemType = tensorType.elemType ?? 0;
  const datatype = ELEMENT_TYPES.get(elemType);
  if (datatype === undefined) {
    const typeName = onnx.TensorProto.DataType[elemType] ?? String(elemType);
    throw new InvalidModelError(`${role} '${name}' has element type ${typeName}, which is not served`);
  }
  // A tensor type without a shape has unknown rank: it cannot be validated or described, so refuse it.
  if (!tensorType.shape) throw new InvalidModelError(`${role} '${name}' declares no shape`);
  const shape: Dim[] = (tensorType.shape.dim ?? []).map((dim) => {
    if (dim.dimParam) return dim.dimParam;
    if (dim.dimValue != null) return toNumber(dim.dimValue as number | Long);
    return -1;
  });
  return { name, datatype, shape };
}

/** Parses a serialized ModelProto and extracts what serving needs: the signature and metadata. */
export function inspectModel(bytes: Uint8Array): ModelInspection {
  let model: onnxProto.onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (error) {
    throw new InvalidModelError(`not an ONNX model: ${(error as Error).message}`);
  }
  const graph = model.graph;
  if (!graph?.node || graph.node.length === 0) {
    throw new InvalidModelError("not an ONNX model: it has no graph");
  }
  // Older exporters list initializers among the graph inputs; they are weights, not inputs.
  const initializers = new Set((graph.initializer ?? []).map((tensor) => tensor.name));
  const inputs = (graph.input ?? []).filter((value) => !initializers.has(value.name ?? ""));
  const outputs = graph.output ?? [];
  if (outputs.length === 0) throw new InvalidModelError("the model's graph has no outputs");

  const metadata: Record<string, string> = {};
  for (const prop of model.metadataProps ?? []) {
    if (prop.key) metadata[prop.key] = prop.value ?? "";
  }
  const defaultOpset = (model.opsetImport ?? []).find((opset) => !opset.domain || opset.domain === "ai.onnx");

  return {
    signature: {
      inputs: inputs.map((value) => tensorSpec(value, "input")),
      outputs: outputs.map((value) => tensorSpec(value, "output")),
    },
    irVersion: toNumber(model.irVersion as number | Long),
    opsetVersion: toNumber(defaultOpset?.version as number | Long | undefined),
    producer: model.producerName ?? "",
    metadata,
    labels: parseLabels(metadata.labels),
    description: metadata.description || model.docString || undefined,
  };
}

function parseLabels(text: string | undefined): readonly string[] | undefined {
  if (!text) return undefined;
  try {
    const labels: unknown = JSON.parse(text);
    if (Array.isArray(labels) && labels.every((label) => typeof label === "string")) return labels;
  } catch {
    // Labels are a convenience: a model with malformed ones still serves, without them.
  }
  return undefined;
}
