import onnxProto from "onnx-proto";
import { MaasError } from "#core/errors.ts";
import type { Dim, ModelSignature, TensorSpec, V2Datatype } from "#core/model.ts";
import { type GraphProto, opsetVersion, type TensorProto, toNumber } from "./graph.ts";
import { isSequenceOfMaps, type UnzippedOutput, unzipClassifierOutputs } from "./zipmap.ts";

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
  /** What is unusual about a model onnxruntime still runs: recorded on the version, never a refusal. */
  readonly warnings: readonly string[];
  /**
   * The model to serve, when it is not the upload: each output a ZipMap zipped into maps is replaced by
   * the FP32 probabilities the maps were made of (their specs carry the labels as `classLabels`).
   */
  readonly servedBytes?: Uint8Array;
}

function tensorSpec(
  value: onnxProto.onnx.IValueInfoProto,
  role: "input" | "output",
  classLabels?: readonly string[],
): TensorSpec {
  const name = value.name ?? "";
  const tensorType = value.type?.tensorType;
  if (!tensorType) {
    throw new InvalidModelError(
      `${role} '${name}' is not a tensor (sequence, map or optional types are not served): ${exportHint(value.type, role)}`,
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
  // A negative size is an unknown one, to onnxruntime as here (older exporters write -1).
  const shape: Dim[] = (tensorType.shape.dim ?? []).map((dim) => {
    if (dim.dimParam) return dim.dimParam;
    if (dim.dimValue != null) return Math.max(toNumber(dim.dimValue), -1);
    return -1;
  });
  return { name, datatype, shape, ...(classLabels ? { classLabels } : {}) };
}

/** What the publisher can change at export so that onnxruntime-node can pass the value. */
function exportHint(type: onnxProto.onnx.ITypeProto | null | undefined, role: "input" | "output"): string {
  const can = role === "input" ? "take" : "return";
  if (role === "output" && isSequenceOfMaps(type)) {
    return (
      `it is a sequence of maps, which onnxruntime-node cannot ${can}, and no ZipMap that could be replaced ` +
      "by its probabilities makes it: export the probabilities as a tensor (sklearn-onnx: convert with " +
      "options={id(model): {'zipmap': False}})"
    );
  }
  if (type?.sequenceType) {
    return role === "input"
      ? `it is a sequence, which onnxruntime-node cannot ${can}: export the model with one tensor input per element, or a stacked tensor`
      : `it is a sequence, which onnxruntime-node cannot ${can}: export a tensor instead (e.g. ConcatFromSequence the elements before the graph output)`;
  }
  if (type?.mapType) {
    return role === "input"
      ? `it is a map, which onnxruntime-node cannot ${can}: export the model with a tensor input (sklearn-onnx: vectorize the features, e.g. the DictVectorizer step, outside the model)`
      : `it is a map, which onnxruntime-node cannot ${can}: export its values as a tensor`;
  }
  if (type?.optionalType)
    return `it is optional, which onnxruntime-node cannot ${can}: export a plain tensor`;
  if (type?.sparseTensorType)
    return `it is a sparse tensor, which onnxruntime-node cannot ${can}: export a dense tensor`;
  return "it declares no type: export the model with the value's tensor type";
}

/** Parses a serialized ModelProto and extracts what serving needs: the signature and metadata. */
export function inspectModel(bytes: Uint8Array): ModelInspection {
  let model: onnxProto.onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (error) {
    throw new InvalidModelError(`not an ONNX model: ${(error as Error).message}`);
  }
  if (!model.graph) throw new InvalidModelError("not an ONNX model: it has no graph");
  if ((model.graph.output ?? []).length === 0)
    throw new InvalidModelError("the model's graph has no outputs");
  const defaultOpset = opsetVersion(model, "");
  checkModelSafety(model);

  const unzipped = unzipClassifierOutputs(bytes, model);
  // The signature is read from the bytes that will be served, so the two cannot disagree.
  const graph = unzipped
    ? (onnx.ModelProto.decode(unzipped.bytes).graph as onnxProto.onnx.GraphProto)
    : model.graph;
  const classLabels = new Map((unzipped?.outputs ?? []).map((output) => [output.name, output.classLabels]));
  // Older exporters list initializers among the graph inputs: weights with defaults, not the caller's inputs.
  const initializers = new Set((graph.initializer ?? []).map((tensor) => tensor.name));
  const inputs = (graph.input ?? []).filter((value) => !initializers.has(value.name ?? ""));
  const outputs = graph.output ?? [];

  const metadata: Record<string, string> = {};
  for (const prop of model.metadataProps ?? []) {
    if (prop.key) metadata[prop.key] = prop.value ?? "";
  }

  return {
    signature: {
      inputs: inputs.map((value) => tensorSpec(value, "input")),
      outputs: outputs.map((value) => tensorSpec(value, "output", classLabels.get(value.name ?? ""))),
    },
    irVersion: toNumber(model.irVersion),
    opsetVersion: defaultOpset,
    producer: model.producerName ?? "",
    metadata,
    labels: parseLabels(metadata.labels),
    description: metadata.description || model.docString || undefined,
    warnings: [...opsetWarnings(model, defaultOpset), ...(unzipped?.outputs ?? []).map(unzippedWarning)],
    ...(unzipped ? { servedBytes: unzipped.bytes } : {}),
  };
}

/**
 * The oldest ONNX operator set onnxruntime guarantees. Older ones still run where it kept the
 * operators' kernels (MatMul-1, Softmax-1, Relu-6...); its try-load finds out for each model.
 */
export const OLDEST_GUARANTEED_OPSET = 7;

function opsetWarnings(model: onnxProto.onnx.ModelProto, defaultOpset: number): string[] {
  if (defaultOpset >= OLDEST_GUARANTEED_OPSET) return [];
  if (defaultOpset > 0) {
    return [
      `the model uses ONNX operator set ${defaultOpset}; onnxruntime keeps running operator sets below ` +
        `${OLDEST_GUARANTEED_OPSET} but no longer guarantees them: re-export with opset >= ${OLDEST_GUARANTEED_OPSET} when you can`,
    ];
  }
  if (!usesDefaultDomain(model.graph as GraphProto)) return [];
  return [
    "the model's nodes use ONNX (ai.onnx) operators but it imports no ai.onnx operator set; onnxruntime " +
      "picks one for it: re-export with an explicit opset_import when you can",
  ];
}

function usesDefaultDomain(graph: GraphProto): boolean {
  return (graph.node ?? []).some(
    (node) =>
      !node.domain ||
      node.domain === "ai.onnx" ||
      (node.attribute ?? []).some(
        (attribute) =>
          (attribute.g != null && usesDefaultDomain(attribute.g)) ||
          (attribute.graphs ?? []).some(usesDefaultDomain),
      ),
  );
}

function unzippedWarning(output: UnzippedOutput): string {
  return (
    `output '${output.name}' was a ZipMap's sequence of maps, which onnxruntime-node cannot return: it is ` +
    `served as FP32 [N, ${output.classLabels.length}], one probability per class in the order of the class ` +
    "labels in the model metadata (the output's classLabels), from the rewritten model the artifact holds. " +
    "To serve the upload unchanged, export it without the ZipMap (sklearn-onnx: options={id(model): {'zipmap': False}})"
  );
}

/** No real tensor dimension comes near 2^31; a larger one is a crafted model. */
const MAX_DIM = 2 ** 31 - 1;

/** Bytes per element for the fixed-size ONNX element types. */
const ELEMENT_BYTES: ReadonlyMap<number, number> = new Map([
  [1, 4],
  [2, 1],
  [3, 1],
  [4, 2],
  [5, 2],
  [6, 4],
  [7, 8],
  [9, 1],
  [10, 2],
  [11, 8],
  [12, 4],
  [13, 8],
  [14, 8],
  [15, 16],
  [16, 2],
  [17, 1],
  [18, 1],
  [19, 1],
  [20, 1],
]);

/** Element types stored two to a byte: INT4, UINT4, FLOAT4E2M1. */
const HALF_BYTE_TYPES: ReadonlySet<number> = new Set([21, 22, 23]);

/**
 * Rejects what onnxruntime must never be asked to load: external data (single-file models only; a
 * location could point anywhere on the host), and dimensions or tensor sizes that no real model
 * declares, or stored data that does not match them — the shapes of allocation bombs. Everything else
 * onnxruntime's own try-load decides.
 */
function checkModelSafety(model: onnxProto.onnx.ModelProto): void {
  for (const value of [...(model.graph?.input ?? []), ...(model.graph?.output ?? [])]) {
    for (const dim of value.type?.tensorType?.shape?.dim ?? []) {
      const size = toNumber(dim.dimValue);
      if (size > MAX_DIM) {
        throw new InvalidModelError(
          `'${value.name}' declares a dimension of ${size}, which no real tensor has`,
        );
      }
    }
  }
  visitGraphTensors(model.graph as GraphProto, checkTensor);
}

function visitGraphTensors(graph: GraphProto, visit: (tensor: TensorProto, where: string) => void): void {
  for (const tensor of graph.initializer ?? []) visit(tensor, `initializer '${tensor.name}'`);
  for (const sparse of graph.sparseInitializer ?? []) {
    if (sparse.values) visit(sparse.values, `sparse initializer '${sparse.values.name}'`);
  }
  for (const node of graph.node ?? []) {
    for (const attribute of node.attribute ?? []) {
      const where = `attribute '${attribute.name}' of node '${node.name || node.opType}'`;
      if (attribute.t) visit(attribute.t, where);
      for (const tensor of attribute.tensors ?? []) visit(tensor, where);
      if (attribute.g) visitGraphTensors(attribute.g, visit);
      for (const subgraph of attribute.graphs ?? []) visitGraphTensors(subgraph, visit);
    }
  }
}

function checkTensor(tensor: TensorProto, where: string): void {
  if (
    tensor.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL ||
    (tensor.externalData ?? []).length > 0
  ) {
    const location = (tensor.externalData ?? []).find((entry) => entry.key === "location")?.value ?? "";
    const escapes =
      location.startsWith("/") || /^[a-z]:/i.test(location) || location.split(/[\\/]/).includes("..");
    throw new InvalidModelError(
      escapes
        ? `${where} points at external data '${location}' outside the model's folder: refused`
        : `${where} keeps its data in an external file${location ? ` '${location}'` : ""}: only single-file models are served ` +
            "(save the model with its weights inside the .onnx file)",
    );
  }
  let elements = 1;
  for (const dim of tensor.dims ?? []) {
    const size = toNumber(dim);
    if (size < 0 || size > MAX_DIM) throw new InvalidModelError(`${where} declares a dimension of ${size}`);
    elements *= size;
  }
  const dataType = tensor.dataType ?? 0;
  const packed = HALF_BYTE_TYPES.has(dataType);
  const elementBytes = ELEMENT_BYTES.get(dataType);
  const expectedBytes = packed ? Math.ceil(elements / 2) : elements * (elementBytes ?? 0);
  const stored = tensor.rawData?.length ?? 0;
  if ((elementBytes !== undefined || packed) && stored > 0 && stored !== expectedBytes) {
    throw new InvalidModelError(
      `${where} declares ${elements} elements (${expectedBytes} bytes) but stores ${stored} bytes`,
    );
  }
  if (stored === 0) {
    // Typed-field storage holds one value per element (two for complex types, one per two 4-bit ones).
    const held = dataType === 8 ? (tensor.stringData?.length ?? 0) : typedValueCount(tensor);
    const expected =
      dataType === 14 || dataType === 15 ? elements * 2 : packed ? Math.ceil(elements / 2) : elements;
    if (held !== expected)
      throw new InvalidModelError(`${where} declares ${elements} elements but holds ${held}`);
  }
}

function typedValueCount(tensor: TensorProto): number {
  return (
    (tensor.floatData?.length ?? 0) +
    (tensor.int32Data?.length ?? 0) +
    (tensor.int64Data?.length ?? 0) +
    (tensor.doubleData?.length ?? 0) +
    (tensor.uint64Data?.length ?? 0)
  );
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
