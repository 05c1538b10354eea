import {
  type AttributeProto,
  AttributeType,
  DataType,
  decodeModel,
  encodeModel,
  type GraphProto,
  intAttr,
  intAttribute,
  NameScope,
  type NodeProto,
  opsetVersion,
  rawTensor,
  readFloats,
  subgraphs,
  type TensorProto,
} from "#core/onnx/graph.ts";
import { float32ToFloat16Bits } from "#core/tensor/float16.ts";

/**
 * FP16 conversion for GPU targets: every FP32 weight, constant and intermediate becomes FP16, while the
 * model's inputs and outputs stay FP32 behind Casts, so clients see the same signature.
 */

export interface Fp16Result {
  readonly bytes: Uint8Array;
  /** FP32 initializers and constants converted. */
  readonly convertedTensors: number;
  /** Values beyond FP16's ±65504 were clamped to it (attention masks of -1e9 are the usual case). */
  readonly clampedValues: number;
}

export class Fp16ConversionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "Fp16ConversionError";
  }
}

/** Inputs that the ONNX spec types as tensor(float) whatever the data's type: they get a Cast back to FP32. */
const FLOAT32_INPUTS: Readonly<Record<string, readonly number[]>> = {
  Resize: [2],
  Upsample: [1],
  QuantizeLinear: [1],
  DynamicQuantizeLinear: [0],
};
/** Ops that make new float tensors from a `dtype` attribute (FP32 when absent, unless named *Like). */
const DTYPE_OPS = new Set([
  "RandomNormal",
  "RandomUniform",
  "RandomNormalLike",
  "RandomUniformLike",
  "EyeLike",
]);

export function convertToFloat16(model: Uint8Array): Fp16Result {
  const proto = decodeModel(model);
  const graph = proto.graph as GraphProto;
  if ((graph.node ?? []).some((node) => subgraphs(node).length > 0)) {
    throw new Fp16ConversionError("models with control flow (If, Loop, Scan) are not converted to FP16");
  }
  // Initializers listed as inputs (older exporters) are weights, as the served signature already says.
  const initializerNames = new Set((graph.initializer ?? []).map((tensor) => tensor.name ?? ""));
  graph.input = (graph.input ?? []).filter((input) => !initializerNames.has(input.name ?? ""));
  const names = new NameScope(graph);
  const counts = { convertedTensors: 0, clampedValues: 0 };
  const toHalf = (tensor: TensorProto): TensorProto => {
    counts.convertedTensors++;
    const { bits, clamped } = float32ToFloat16Bits(readFloats(tensor));
    counts.clampedValues += clamped;
    return { ...rawTensor(tensor.name ?? "", DataType.FLOAT16, [], bits), dims: tensor.dims };
  };

  // Graph inputs stay FP32: a Cast at the top hands the graph an FP16 copy under a new name.
  const renamed = new Map<string, string>();
  const head: NodeProto[] = [];
  const graphInputs = new Set<string>();
  for (const input of graph.input ?? []) {
    graphInputs.add(input.name ?? "");
    if (input.type?.tensorType?.elemType !== DataType.FLOAT) continue;
    const half = names.fresh(`${input.name}_fp16`);
    renamed.set(input.name ?? "", half);
    head.push(castNode(input.name ?? "", half, DataType.FLOAT16, names));
  }
  // Graph outputs stay FP32: their producers write an FP16 value under a new name, cast back at the end.
  const tail: NodeProto[] = [];
  for (const output of graph.output ?? []) {
    const name = output.name ?? "";
    if (output.type?.tensorType?.elemType !== DataType.FLOAT || graphInputs.has(name)) continue;
    const half = names.fresh(`${name}_fp16`);
    renamed.set(name, half);
    tail.push(castNode(half, name, DataType.FLOAT, names));
  }
  const rename = (name: string) => renamed.get(name) ?? name;

  graph.initializer = (graph.initializer ?? []).map((tensor) => {
    const converted = tensor.dataType === DataType.FLOAT ? toHalf(tensor) : tensor;
    return { ...converted, name: rename(tensor.name ?? "") };
  });

  const body: NodeProto[] = [];
  for (const original of graph.node ?? []) {
    const node: NodeProto = {
      ...original,
      input: (original.input ?? []).map(rename),
      output: (original.output ?? []).map(rename),
      attribute: (original.attribute ?? []).map((entry) => convertAttribute(original, entry, toHalf)),
    };
    const defaultDtype = !(original.opType ?? "").endsWith("Like");
    if (DTYPE_OPS.has(original.opType ?? "")) retypeDtype(node, defaultDtype);
    if (
      original.opType === "ConstantOfShape" &&
      !(original.attribute ?? []).some((a) => a.name === "value")
    ) {
      // Absent `value` means FP32 zeros: say FP16 zeros explicitly.
      node.attribute = [...(node.attribute ?? []), halfZeroValue()];
    }
    const floatOnly = floatOnlyInputs(original, proto);
    node.input = (node.input ?? []).map((name, index) => {
      if (!name || !floatOnly.includes(index)) return name;
      const widened = names.fresh(`${name}_fp32`);
      body.push(castNode(name, widened, DataType.FLOAT, names));
      return widened;
    });
    body.push(node);
  }
  graph.node = [...head, ...body, ...tail];
  // Intermediate types changed: onnxruntime infers them again on load.
  graph.valueInfo = [];
  return { bytes: encodeModel(proto), ...counts };
}

function floatOnlyInputs(node: NodeProto, model: ReturnType<typeof decodeModel>): readonly number[] {
  // Operator set 19 lets DequantizeLinear scales be FP16; before it they must be FP32.
  if (node.opType === "DequantizeLinear" && opsetVersion(model, "") < 19) return [1];
  if (node.opType === "Resize" && opsetVersion(model, "") < 11) return [1];
  return FLOAT32_INPUTS[node.opType ?? ""] ?? [];
}

function convertAttribute(
  node: NodeProto,
  entry: AttributeProto,
  toHalf: (tensor: TensorProto) => TensorProto,
): AttributeProto {
  if (entry.t && entry.t.dataType === DataType.FLOAT) return { ...entry, t: toHalf(entry.t) };
  if (node.opType === "Cast" && entry.name === "to" && Number(entry.i) === DataType.FLOAT) {
    return intAttr("to", DataType.FLOAT16);
  }
  if (node.opType === "Constant" && entry.name === "value_float") {
    return { name: "value", type: AttributeType.TENSOR, t: toHalf({ dims: [], floatData: [entry.f ?? 0] }) };
  }
  if (node.opType === "Constant" && entry.name === "value_floats") {
    const values = entry.floats ?? [];
    return {
      name: "value",
      type: AttributeType.TENSOR,
      t: toHalf({ dims: [values.length], floatData: [...values] }),
    };
  }
  return entry;
}

function retypeDtype(node: NodeProto, floatWhenAbsent: boolean): void {
  const dtype = intAttribute(node, "dtype", floatWhenAbsent ? DataType.FLOAT : -1);
  if (dtype !== DataType.FLOAT) return;
  node.attribute = [
    ...(node.attribute ?? []).filter((a) => a.name !== "dtype"),
    intAttr("dtype", DataType.FLOAT16),
  ];
}

function halfZeroValue(): AttributeProto {
  return {
    name: "value",
    type: AttributeType.TENSOR,
    t: rawTensor("", DataType.FLOAT16, [1], new Uint16Array(1)),
  };
}

function castNode(input: string, output: string, to: number, names: NameScope): NodeProto {
  return {
    name: names.fresh(`${output}_Cast`),
    opType: "Cast",
    input: [input],
    output: [output],
    attribute: [intAttr("to", to)],
  };
}
