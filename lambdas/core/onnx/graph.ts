import onnxProto from "onnx-proto";
import { subgraphs } from "./nodes.ts";

/** Small tools for rewriting ONNX graphs on the protobuf: the quantizer and the fp16 converter share them. */

const { onnx } = onnxProto;

export type ModelProto = onnxProto.onnx.IModelProto;
export type GraphProto = onnxProto.onnx.IGraphProto;
export type NodeProto = onnxProto.onnx.INodeProto;
export type TensorProto = onnxProto.onnx.ITensorProto;
export type AttributeProto = onnxProto.onnx.IAttributeProto;

export const DataType = onnx.TensorProto.DataType;
export const AttributeType = onnx.AttributeProto.AttributeType;

export { MICROSOFT_DOMAIN, subgraphs } from "./nodes.ts";

type Long = { toNumber(): number };
export const toNumber = (value: number | Long | null | undefined): number =>
  value == null ? 0 : typeof value === "number" ? value : value.toNumber();

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function decodeModel(bytes: Uint8Array): onnxProto.onnx.ModelProto {
  return onnx.ModelProto.decode(bytes);
}

export function encodeModel(model: ModelProto): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}

export function tensorDims(tensor: TensorProto): number[] {
  return (tensor.dims ?? []).map((dim) => toNumber(dim as number | Long));
}

/** The values of an FP32 tensor, from raw_data (little-endian) or float_data. */
export function readFloats(tensor: TensorProto): Float32Array {
  const raw = tensor.rawData;
  if (raw && raw.length > 0) {
    if (HOST_IS_LITTLE_ENDIAN) {
      // A copy: raw_data is a view into the model's bytes, rarely 4-byte aligned.
      const copy = new Uint8Array(raw.length);
      copy.set(raw);
      return new Float32Array(copy.buffer);
    }
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    return Float32Array.from({ length: raw.length / 4 }, (_, i) => view.getFloat32(i * 4, true));
  }
  return Float32Array.from(tensor.floatData ?? []);
}

/** Little-endian bytes of a typed array, as raw_data wants them whatever the host. */
export function littleEndianBytes(values: ArrayBufferView & { BYTES_PER_ELEMENT: number }): Uint8Array {
  const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const width = values.BYTES_PER_ELEMENT;
  if (HOST_IS_LITTLE_ENDIAN || width === 1) return bytes;
  const swapped = new Uint8Array(bytes.length);
  for (let offset = 0; offset < bytes.length; offset += width) {
    for (let i = 0; i < width; i++) swapped[offset + i] = bytes[offset + width - 1 - i]!;
  }
  return swapped;
}

export function rawTensor(
  name: string,
  dataType: number,
  dims: readonly number[],
  values: ArrayBufferView & { BYTES_PER_ELEMENT: number },
): TensorProto {
  return { name, dataType, dims: [...dims], rawData: littleEndianBytes(values) };
}

function attribute(node: NodeProto, name: string): AttributeProto | undefined {
  return (node.attribute ?? []).find((entry) => entry.name === name);
}

export function intAttribute(node: NodeProto, name: string, fallback: number): number {
  const found = attribute(node, name);
  return found ? toNumber(found.i as number | Long | undefined) : fallback;
}

export function floatAttribute(node: NodeProto, name: string, fallback: number): number {
  const found = attribute(node, name);
  return found?.f ?? fallback;
}

export function intAttr(name: string, value: number): AttributeProto {
  return { name, type: AttributeType.INT, i: value };
}

/** Every value name a graph (and its subgraphs) defines or reads: new names must avoid them all. */
function usedNames(graph: GraphProto, names = new Set<string>()): Set<string> {
  for (const value of [...(graph.input ?? []), ...(graph.output ?? []), ...(graph.valueInfo ?? [])]) {
    if (value.name) names.add(value.name);
  }
  for (const tensor of graph.initializer ?? []) if (tensor.name) names.add(tensor.name);
  for (const node of graph.node ?? []) {
    for (const name of [...(node.input ?? []), ...(node.output ?? [])]) if (name) names.add(name);
    if (node.name) names.add(node.name);
    for (const sub of subgraphs(node)) usedNames(sub, names);
  }
  return names;
}

/** Names that subgraphs (If/Loop/Scan bodies) read from their enclosing scopes. */
export function namesReadBySubgraphs(graph: GraphProto): Set<string> {
  const read = new Set<string>();
  const visit = (sub: GraphProto) => {
    for (const node of sub.node ?? []) {
      for (const name of node.input ?? []) if (name) read.add(name);
      for (const inner of subgraphs(node)) visit(inner);
    }
  };
  for (const node of graph.node ?? []) for (const sub of subgraphs(node)) visit(sub);
  return read;
}

/** Hands out names unused in the graph, so inserted nodes and tensors never collide with existing ones. */
export class NameScope {
  readonly #taken: Set<string>;

  constructor(graph: GraphProto) {
    this.#taken = usedNames(graph);
  }

  fresh(base: string): string {
    let name = base;
    for (let suffix = 1; this.#taken.has(name); suffix++) name = `${base}_${suffix}`;
    this.#taken.add(name);
    return name;
  }
}

/** Version of an operator set the model imports; 0 when it does not. */
export function opsetVersion(model: ModelProto, domain: string): number {
  const entry = (model.opsetImport ?? []).find((opset) =>
    domain === "" ? !opset.domain || opset.domain === "ai.onnx" : opset.domain === domain,
  );
  return entry ? toNumber(entry.version as number | Long | undefined) : 0;
}

export function ensureOpset(model: ModelProto, domain: string, version: number): void {
  if (opsetVersion(model, domain) > 0) return;
  model.opsetImport = [...(model.opsetImport ?? []), { domain, version }];
}
