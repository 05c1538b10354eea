import type { onnx as OnnxTypes } from "onnx-proto";
import onnxProto from "onnx-proto";
import { littleEndianBytes } from "#core/onnx/graph.ts";

// onnx-proto is CommonJS: its namespace is a property of the default export under ESM.
const { onnx } = onnxProto;

/** ONNX TensorProto.DataType codes for the element types our models use. */
export const ElemType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
} as const;
export type ElemType = (typeof ElemType)[keyof typeof ElemType];

/** A fixed size, or a symbolic name such as "batch" for a size chosen at run time. */
export type Dim = number | string;

/** A graph input or output. */
export interface TensorSignature {
  readonly name: string;
  readonly elemType: ElemType;
  readonly dims: readonly Dim[];
}

/** A constant tensor, ready to be used as an initializer or a tensor attribute. */
export type Tensor = OnnxTypes.ITensorProto;

export type AttributeValue =
  | { readonly int: number }
  | { readonly float: number }
  | { readonly ints: readonly number[] }
  | { readonly string: string }
  | { readonly tensor: Tensor }
  /** A subgraph, for Loop, If and Scan bodies. */
  | { readonly graph: GraphSpec };

export interface GraphNode {
  readonly opType: string;
  readonly inputs: readonly string[];
  readonly outputs: readonly string[];
  /** Defaults to `<opType>_<index>`. */
  readonly name?: string;
  readonly attributes?: Readonly<Record<string, AttributeValue>>;
}

export interface GraphSpec {
  readonly graphName: string;
  readonly inputs: readonly TensorSignature[];
  readonly outputs: readonly TensorSignature[];
  readonly nodes: readonly GraphNode[];
  readonly initializers?: readonly Tensor[];
}

export interface ModelSpec extends GraphSpec {
  readonly docString?: string;
  /** Stored as ModelProto.metadata_props, in insertion order. */
  readonly metadata?: Readonly<Record<string, string>>;
  /** @default 17 */
  readonly opsetVersion?: number;
  /** @default 8 */
  readonly irVersion?: number;
}

export const PRODUCER_NAME = "serverless-maas";

const utf8 = new TextEncoder();

/** FP32 tensor stored as raw_data, the compact form every runtime reads. */
export function floatTensor(name: string, dims: readonly number[], values: Float32Array): Tensor {
  assertElementCount(name, dims, values.length);
  return { name, dims: [...dims], dataType: ElemType.FLOAT, rawData: littleEndianBytes(values) };
}

export function int64Tensor(name: string, dims: readonly number[], values: readonly bigint[]): Tensor {
  assertElementCount(name, dims, values.length);
  // raw_data keeps int64 values exact without going through protobufjs' Long handling.
  return {
    name,
    dims: [...dims],
    dataType: ElemType.INT64,
    rawData: littleEndianBytes(BigInt64Array.from(values)),
  };
}

export function stringTensor(name: string, dims: readonly number[], values: readonly string[]): Tensor {
  assertElementCount(name, dims, values.length);
  // ONNX forbids raw_data for strings: each element goes in string_data as UTF-8 bytes.
  return { name, dims: [...dims], dataType: ElemType.STRING, stringData: values.map((v) => utf8.encode(v)) };
}

/** Serializes a model to the bytes of a `.onnx` file. */
export function encodeModel(spec: ModelSpec): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: spec.irVersion ?? 8,
    opsetImport: [{ domain: "", version: spec.opsetVersion ?? 17 }],
    producerName: PRODUCER_NAME,
    docString: spec.docString ?? "",
    metadataProps: Object.entries(spec.metadata ?? {}).map(([key, value]) => ({ key, value })),
    graph: graphProto(spec),
  });
  return onnx.ModelProto.encode(model).finish();
}

function graphProto(spec: GraphSpec): OnnxTypes.IGraphProto {
  return {
    name: spec.graphName,
    input: spec.inputs.map(valueInfo),
    output: spec.outputs.map(valueInfo),
    initializer: [...(spec.initializers ?? [])],
    node: spec.nodes.map((node, index) => ({
      name: node.name ?? `${node.opType}_${index}`,
      opType: node.opType,
      input: [...node.inputs],
      output: [...node.outputs],
      attribute: Object.entries(node.attributes ?? {}).map(([name, value]) => attribute(name, value)),
    })),
  };
}

function valueInfo(signature: TensorSignature): OnnxTypes.IValueInfoProto {
  return {
    name: signature.name,
    type: {
      tensorType: {
        elemType: signature.elemType,
        shape: {
          dim: signature.dims.map((dim) => (typeof dim === "number" ? { dimValue: dim } : { dimParam: dim })),
        },
      },
    },
  };
}

function attribute(name: string, value: AttributeValue): OnnxTypes.IAttributeProto {
  const { AttributeType } = onnx.AttributeProto;
  if ("int" in value) return { name, type: AttributeType.INT, i: value.int };
  if ("float" in value) return { name, type: AttributeType.FLOAT, f: value.float };
  if ("ints" in value) return { name, type: AttributeType.INTS, ints: [...value.ints] };
  if ("string" in value) return { name, type: AttributeType.STRING, s: utf8.encode(value.string) };
  if ("graph" in value) return { name, type: AttributeType.GRAPH, g: graphProto(value.graph) };
  return { name, type: AttributeType.TENSOR, t: value.tensor };
}

function assertElementCount(name: string, dims: readonly number[], count: number): void {
  const expected = dims.reduce((product, dim) => product * dim, 1);
  if (expected !== count) {
    throw new Error(`tensor ${name}: dims [${dims.join(", ")}] need ${expected} values, got ${count}`);
  }
}
