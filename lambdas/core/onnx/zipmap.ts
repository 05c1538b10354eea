/**
 * scikit-learn classifiers converted by sklearn-onnx end in a ZipMap (domain ai.onnx.ml): it turns the
 * probabilities, FP32 [N, C], into one {label: probability} map per row, which onnxruntime-node cannot
 * return ("Non tensor type is temporarily not supported"). Such a model is served with the ZipMap
 * replaced by an Identity of its input, and the labels, in order, kept on the output's spec.
 *
 * The rewrite splices the upload's bytes rather than re-encoding the decoded model: onnx-proto's schema
 * (ONNX 1.10) drops on encode every field it does not know (local functions' attribute defaults, node
 * metadata...), and the served model must keep them all.
 */
import onnxProto from "onnx-proto";
import {
  DataType,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  namesReadBySubgraphs,
  toNumber,
} from "./graph.ts";

const { onnx } = onnxProto;

const ML_DOMAIN = "ai.onnx.ml";

export interface UnzippedOutput {
  readonly name: string;
  /** The labels of the output's last dimension, in order, as strings. */
  readonly classLabels: readonly string[];
}

export interface UnzippedModel {
  /** The model to serve: the upload's bytes with each replaced ZipMap and its output spliced. */
  readonly bytes: Uint8Array;
  readonly outputs: readonly UnzippedOutput[];
}

/** Whether a graph value is declared as a sequence of maps: what a ZipMap produces. */
export function isSequenceOfMaps(type: onnxProto.onnx.ITypeProto | null | undefined): boolean {
  return Boolean(type?.sequenceType?.elemType?.mapType);
}

/**
 * Replaces every ZipMap whose maps go only to a graph output. Returns undefined when there is none, so
 * the upload is served as it is. `model` must be `bytes` decoded.
 */
export function unzipClassifierOutputs(bytes: Uint8Array, model: ModelProto): UnzippedModel | undefined {
  const graph = model.graph;
  if (!graph) return undefined;
  const nodes = graph.node ?? [];
  const outputs = graph.output ?? [];
  const read = namesReadBySubgraphs(graph);
  for (const node of nodes) for (const name of node.input ?? []) read.add(name);

  const nodeReplacements = new Map<number, Uint8Array>();
  const outputReplacements = new Map<number, Uint8Array>();
  const unzipped: UnzippedOutput[] = [];
  outputs.forEach((output, outputIndex) => {
    const name = output.name ?? "";
    if (!isSequenceOfMaps(output.type) || read.has(name)) return;
    if (outputs.filter((other) => other.name === name).length !== 1) return;
    const nodeIndex = nodes.findIndex((node) => (node.output ?? []).includes(name));
    const node = nodes[nodeIndex];
    if (node?.opType !== "ZipMap" || node.domain !== ML_DOMAIN) return;
    const probabilities = node.input?.[0];
    const classLabels = zipMapLabels(node);
    if (!probabilities || classLabels === undefined) return;
    const declared = declaredTensor(graph, probabilities);
    if (declared?.elemType != null && declared.elemType !== DataType.FLOAT) return;

    nodeReplacements.set(
      nodeIndex,
      onnx.NodeProto.encode({
        name: node.name ?? "",
        opType: "Identity",
        input: [probabilities],
        output: [name],
        docString:
          "serverless-maas: replaces a ZipMap, whose sequence of maps onnxruntime-node cannot return",
      }).finish(),
    );
    outputReplacements.set(
      outputIndex,
      onnx.ValueInfoProto.encode({
        name,
        docString: output.docString ?? "",
        type: {
          tensorType: {
            elemType: DataType.FLOAT,
            shape: { dim: [rowsDim(declared), { dimValue: classLabels.length }] },
          },
        },
      }).finish(),
    );
    unzipped.push({ name, classLabels });
  });
  if (unzipped.length === 0) return undefined;

  // value_info entries still declaring the maps would contradict the tensor the output now is.
  const replacedNames = new Set(unzipped.map((output) => output.name));
  const staleValueInfo = new Set(
    (graph.valueInfo ?? []).flatMap((value, index) => (replacedNames.has(value.name ?? "") ? [index] : [])),
  );

  const served = spliceGraph(bytes, { nodes: nodeReplacements, outputs: outputReplacements, staleValueInfo });
  // Protobuf the splice cannot walk (groups, or a graph split over several fields) is left unrewritten.
  if (served === undefined) return undefined;
  return { bytes: served, outputs: unzipped };
}

interface GraphEdits {
  /** Serialized NodeProtos, by index among the graph's nodes. */
  readonly nodes: ReadonlyMap<number, Uint8Array>;
  /** Serialized ValueInfoProtos, by index among the graph's outputs. */
  readonly outputs: ReadonlyMap<number, Uint8Array>;
  /** Indices of value_info entries to drop. */
  readonly staleValueInfo: ReadonlySet<number>;
}

/** `model` with its graph's nodes and outputs replaced, every other byte as it was. */
function spliceGraph(model: Uint8Array, edits: GraphEdits): Uint8Array | undefined {
  const graphFields = fieldsOf(model)?.filter((field) => field.number === MODEL_GRAPH) ?? [];
  if (graphFields.length !== 1) return undefined;
  const graphField = graphFields[0]!;
  const graph = model.subarray(graphField.valueStart, graphField.end);
  const fields = fieldsOf(graph);
  if (fields === undefined) return undefined;
  // The n-th occurrence of a repeated field is the n-th element protobuf decodes.
  const seen = new Map<number, number>();
  const parts = fields.flatMap((field) => {
    const index = seen.get(field.number) ?? 0;
    seen.set(field.number, index + 1);
    const replacement =
      field.number === GRAPH_NODE
        ? edits.nodes.get(index)
        : field.number === GRAPH_OUTPUT
          ? edits.outputs.get(index)
          : undefined;
    if (replacement) return [lengthDelimited(field.number, replacement)];
    if (field.number === GRAPH_VALUE_INFO && edits.staleValueInfo.has(index)) return [];
    return [graph.subarray(field.start, field.end)];
  });
  return concat([
    model.subarray(0, graphField.start),
    lengthDelimited(MODEL_GRAPH, concat(parts)),
    model.subarray(graphField.end),
  ]);
}

/** The labels a ZipMap keys its maps with, as strings; undefined unless exactly one kind is given. */
function zipMapLabels(node: NodeProto): string[] | undefined {
  const attributes = node.attribute ?? [];
  const strings = attributes.find((attribute) => attribute.name === "classlabels_strings")?.strings ?? [];
  const ints = attributes.find((attribute) => attribute.name === "classlabels_int64s")?.ints ?? [];
  if (strings.length > 0 === ints.length > 0) return undefined;
  const utf8 = new TextDecoder();
  return strings.length > 0
    ? strings.map((label) => utf8.decode(label))
    : ints.map((label) => String(typeof label === "number" ? label : label.toString()));
}

/** The tensor type the graph declares for `name`, if it declares one. */
function declaredTensor(graph: GraphProto, name: string) {
  const values = [...(graph.valueInfo ?? []), ...(graph.input ?? []), ...(graph.output ?? [])];
  return values.find((value) => value.name === name)?.type?.tensorType ?? undefined;
}

/** The rows dimension of the probabilities as declared (a size or a name); unnamed dynamic otherwise. */
function rowsDim(
  declared: onnxProto.onnx.TypeProto.ITensor | undefined,
): onnxProto.onnx.TensorShapeProto.IDimension {
  const dims = declared?.shape?.dim ?? [];
  const rows = dims.length === 2 ? dims[0] : undefined;
  if (rows?.dimParam) return { dimParam: rows.dimParam };
  if (rows?.dimValue != null) return { dimValue: toNumber(rows.dimValue) };
  return {};
}

// Field numbers of onnx.proto.
const MODEL_GRAPH = 7;
const GRAPH_NODE = 1;
const GRAPH_OUTPUT = 12;
const GRAPH_VALUE_INFO = 13;

interface Field {
  readonly number: number;
  /** Where the field's tag starts. */
  readonly start: number;
  /** Where a length-delimited field's payload starts. */
  readonly valueStart: number;
  readonly end: number;
}

/** The top-level fields of a serialized message, in order, as byte ranges; undefined if it has groups. */
function fieldsOf(bytes: Uint8Array): Field[] | undefined {
  const fields: Field[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    const start = offset;
    const [tag, afterTag] = readVarint(bytes, offset);
    const wireType = tag % 8;
    let valueStart = afterTag;
    let end: number;
    if (wireType === 0) end = readVarint(bytes, afterTag)[1];
    else if (wireType === 1) end = afterTag + 8;
    else if (wireType === 5) end = afterTag + 4;
    else if (wireType === 2) {
      const [length, afterLength] = readVarint(bytes, afterTag);
      valueStart = afterLength;
      end = afterLength + length;
    } else return undefined;
    if (end > bytes.length) return undefined;
    fields.push({ number: Math.floor(tag / 8), start, valueStart, end });
    offset = end;
  }
  return fields;
}

/** A varint's value and the offset after it; past the end when it is truncated (the caller checks). */
function readVarint(bytes: Uint8Array, offset: number): [value: number, next: number] {
  let value = 0;
  let at = offset;
  for (let shift = 0; at < bytes.length && shift < 64; shift += 7, at++) {
    const byte = bytes[at]!;
    value += (byte & 0x7f) * 2 ** shift;
    if (byte < 0x80) return [value, at + 1];
  }
  return [value, bytes.length + 1];
}

function varint(value: number): number[] {
  const out: number[] = [];
  let rest = value;
  while (rest >= 0x80) {
    out.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  out.push(rest);
  return out;
}

function lengthDelimited(fieldNumber: number, payload: Uint8Array): Uint8Array {
  return concat([Uint8Array.from([...varint(fieldNumber * 8 + 2), ...varint(payload.length)]), payload]);
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((total, part) => total + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
