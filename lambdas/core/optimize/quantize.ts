import {
  DataType,
  decodeModel,
  encodeModel,
  ensureOpset,
  floatAttribute,
  type GraphProto,
  intAttr,
  intAttribute,
  MICROSOFT_DOMAIN,
  NameScope,
  type NodeProto,
  namesReadBySubgraphs,
  opsetVersion,
  rawTensor,
  readFloats,
  type TensorProto,
  tensorDims,
} from "#core/onnx/graph.ts";
import { elementCount } from "#core/tensor/shape.ts";

/**
 * Dynamic int8 quantization of MatMul and Gemm weights, on the ONNX protobuf: weights are stored as
 * int8 with FP32 scales (per output channel where that pays), activations are quantized at run time.
 */

export interface QuantizeOptions {
  /** Weights with fewer elements stay FP32: their bytes and time do not matter. @default 16_384 */
  readonly minElements?: number;
  /**
   * "int8": symmetric signed weights (zero point 0), the U8S8 kernels of onnxruntime's CPU provider.
   * "uint8": asymmetric unsigned weights (U8U8 kernels). @default "int8"
   */
  readonly weightType?: "int8" | "uint8";
  /**
   * 7-bit weights. x64 CPUs without VNNI multiply u8·s8 pairs with VPMADDUBSW, whose int16 sums can
   * saturate with full 8-bit weights; 7 bits cannot. @default true
   */
  readonly reduceRange?: boolean;
  /** "auto": per output channel when that cuts the expected rounding error enough. @default "auto" */
  readonly perChannel?: "auto" | "always" | "never";
  /**
   * "auto" switches to per-channel when per-tensor rounding noise is this many times larger. @default 1.5
   */
  readonly perChannelGain?: number;
  /**
   * "contrib": one com.microsoft DynamicQuantizeMatMul per weight (onnxruntime only).
   * "onnx": DynamicQuantizeLinear + MatMulInteger + Cast + Mul, standard ONNX that onnxruntime fuses
   * back into DynamicQuantizeMatMul when it loads the model. @default "contrib"
   */
  readonly ops?: "contrib" | "onnx";
}

export interface QuantizedWeight {
  readonly name: string;
  /** [K, N]: input features by output channels, after any Gemm transpose. */
  readonly shape: readonly [number, number];
  readonly perChannel: boolean;
  /** Expected rounding noise of per-tensor over per-channel scales (≥ 1). */
  readonly perChannelGain: number;
}

export interface QuantizeResult {
  readonly bytes: Uint8Array;
  readonly quantized: readonly QuantizedWeight[];
  /** Weights of MatMul/Gemm nodes left in FP32, and why. */
  readonly skipped: readonly { readonly name: string; readonly reason: string }[];
}

/** The model has nothing worth quantizing, or cannot be quantized safely. */
export class NothingToQuantizeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NothingToQuantizeError";
  }
}

const DEFAULTS = {
  minElements: 16_384,
  weightType: "int8",
  reduceRange: true,
  perChannel: "auto",
  perChannelGain: 1.5,
  ops: "contrib",
} as const satisfies Required<QuantizeOptions>;

/** A weight in [K, N] layout, quantized once and shared by every node that multiplies by it. */
interface PreparedWeight {
  readonly quantized: string;
  readonly scale: string;
  readonly zeroPoint: string;
  readonly info: QuantizedWeight;
  /** Per-channel scales (or the single per-tensor scale) before any Gemm alpha is folded in. */
  readonly scales: Float32Array;
}

export function quantizeDynamicInt8(model: Uint8Array, options: QuantizeOptions = {}): QuantizeResult {
  const settings = { ...DEFAULTS, ...options };
  const proto = decodeModel(model);
  const graph = proto.graph as GraphProto;
  if (settings.ops === "onnx" && opsetVersion(proto, "") < 11) {
    throw new NothingToQuantizeError(
      `standard ONNX dynamic quantization needs operator set 11 or later; the model uses ${opsetVersion(proto, "")}`,
    );
  }
  const initializers = new Map((graph.initializer ?? []).map((tensor) => [tensor.name ?? "", tensor]));
  // An initializer listed among the graph inputs can be overridden by a caller: it is not a constant.
  const overridable = new Set((graph.input ?? []).map((value) => value.name ?? ""));
  const constant = (name: string | undefined) =>
    name !== undefined && !overridable.has(name) ? initializers.get(name) : undefined;
  const names = new NameScope(graph);
  const prepared = new Map<string, PreparedWeight>();
  const activations = new Map<string, { q: string; scale: string; zeroPoint: string }>();
  const added: TensorProto[] = [];
  const skipped: { name: string; reason: string }[] = [];
  const consumed = new Set<string>();

  const readers = countReaders(graph);
  const folded = new Set<NodeProto>();
  const rewritten: NodeProto[] = [];
  for (const node of graph.node ?? []) {
    if (folded.has(node)) continue;
    const found = planNode(node, constant, settings.minElements);
    const plan =
      found !== undefined && !("reason" in found) && settings.ops === "contrib" && found.bias === undefined
        ? withFollowingBias(found, node, graph, readers, constant, folded)
        : found;
    if (plan === undefined) {
      rewritten.push(node);
      continue;
    }
    if ("reason" in plan) {
      skipped.push({ name: plan.weight, reason: plan.reason });
      rewritten.push(node);
      continue;
    }
    const weightKey = `${plan.weight}|${plan.transposed}`;
    let weight = prepared.get(weightKey);
    if (weight === undefined) {
      weight = prepareWeight(plan, settings, names, added);
      prepared.set(weightKey, weight);
    }
    consumed.add(plan.weight);
    if (plan.bias) consumed.add(plan.bias.name);
    const output = plan.output;
    const scale = plan.alpha === 1 ? weight.scale : scaledCopy(weight, plan.alpha, names, added);
    const bias = plan.bias === undefined ? undefined : biasTensor(plan, constant, names, added);
    if (settings.ops === "contrib") {
      rewritten.push(...contribNodes(plan.activation, weight, scale, bias, output, names));
    } else {
      let activation = activations.get(plan.activation);
      if (activation === undefined) {
        activation = {
          q: names.fresh(`${plan.activation}_quantized`),
          scale: names.fresh(`${plan.activation}_scale`),
          zeroPoint: names.fresh(`${plan.activation}_zero_point`),
        };
        activations.set(plan.activation, activation);
        rewritten.push({
          name: names.fresh(`${plan.activation}_DynamicQuantizeLinear`),
          opType: "DynamicQuantizeLinear",
          input: [plan.activation],
          output: [activation.q, activation.scale, activation.zeroPoint],
        });
      }
      rewritten.push(...standardNodes(activation, weight, scale, bias, output, names));
    }
  }

  const quantized = [
    ...new Map([...prepared.values()].map((weight) => [weight.info.name, weight.info])).values(),
  ];
  if (quantized.length === 0) {
    const why =
      skipped.length === 0
        ? "it has no MatMul or Gemm with constant weights"
        : `no weight qualifies (${skipped.map((weight) => `${weight.name}: ${weight.reason}`).join("; ")})`;
    throw new NothingToQuantizeError(`nothing to quantize: ${why}`);
  }

  // FP32 weights that no remaining node, subgraph or output reads are dropped: that is the saving.
  const stillRead = new Set<string>([
    ...rewritten.flatMap((node) => node.input ?? []),
    ...(graph.output ?? []).map((value) => value.name ?? ""),
    ...namesReadBySubgraphs(graph),
  ]);
  graph.node = rewritten;
  graph.initializer = [
    ...(graph.initializer ?? []).filter(
      (tensor) => !consumed.has(tensor.name ?? "") || stillRead.has(tensor.name ?? ""),
    ),
    ...added,
  ];
  if (settings.ops === "contrib") ensureOpset(proto, MICROSOFT_DOMAIN, 1);
  return { bytes: encodeModel(proto), quantized, skipped };
}

interface NodePlan {
  readonly activation: string;
  /** The value the quantized node must produce: the node's own output, or that of an Add folded into it. */
  readonly output: string;
  readonly weight: string;
  readonly tensor: TensorProto;
  /** Gemm with transB = 1 stores its weight [N, K]. */
  readonly transposed: boolean;
  readonly alpha: number;
  /** A Gemm's C input (scaled by beta), added after the product. */
  readonly bias?: { readonly name: string; readonly beta: number };
}

function planNode(
  node: NodeProto,
  constant: (name: string | undefined) => TensorProto | undefined,
  minElements: number,
): NodePlan | { weight: string; reason: string } | undefined {
  if (node.domain && node.domain !== "ai.onnx") return undefined;
  if (node.opType !== "MatMul" && node.opType !== "Gemm") return undefined;
  const [activation, weight, bias] = node.input ?? [];
  const tensor = constant(weight);
  if (activation === undefined || weight === undefined || tensor === undefined) return undefined;
  if (constant(activation) !== undefined) return undefined; // both constant: folded at load anyway
  if (tensor.dataType !== DataType.FLOAT) return { weight, reason: "not FP32" };
  const dims = tensorDims(tensor);
  if (dims.length !== 2)
    return { weight, reason: `a ${dims.length}-D weight (only 2-D weights are quantized)` };
  if (elementCount(dims) < minElements) {
    return { weight, reason: `${elementCount(dims)} elements, under the ${minElements} worth quantizing` };
  }
  const output = node.output?.[0] ?? "";
  if (node.opType === "MatMul") return { activation, output, weight, tensor, transposed: false, alpha: 1 };

  if (intAttribute(node, "transA", 0) !== 0) return { weight, reason: "Gemm with transA" };
  const alpha = floatAttribute(node, "alpha", 1);
  const beta = floatAttribute(node, "beta", 1);
  const transposed = intAttribute(node, "transB", 0) !== 0;
  const outputs = transposed ? (dims[0] ?? 0) : (dims[1] ?? 0);
  if (!bias) return { activation, output, weight, tensor, transposed, alpha };
  // Only a constant bias of N values becomes the quantized node's bias; anything else keeps the Gemm.
  const biasTensor = constant(bias);
  const biasDims = biasTensor === undefined ? [] : tensorDims(biasTensor);
  if (
    biasTensor?.dataType !== DataType.FLOAT ||
    elementCount(biasDims) !== outputs ||
    biasDims.length > 2 ||
    (biasDims.length === 2 && biasDims[0] !== 1)
  ) {
    return { weight, reason: "Gemm whose C is not a constant vector of its output size" };
  }
  return { activation, output, weight, tensor, transposed, alpha, bias: { name: bias, beta } };
}

/** How many nodes, subgraphs and graph outputs read each value. */
function countReaders(graph: GraphProto): Map<string, number> {
  const readers = new Map<string, number>();
  const read = (name: string) => readers.set(name, (readers.get(name) ?? 0) + 1);
  for (const node of graph.node ?? []) for (const name of node.input ?? []) if (name) read(name);
  for (const value of graph.output ?? []) read(value.name ?? "");
  for (const name of namesReadBySubgraphs(graph)) read(name);
  return readers;
}

/**
 * A MatMul whose only reader is `Add(product, b)` with a constant FP32 vector b of its output size
 * (what exporters write for a Linear layer): the Add becomes the quantized node's bias input.
 */
function withFollowingBias(
  plan: NodePlan,
  node: NodeProto,
  graph: GraphProto,
  readers: ReadonlyMap<string, number>,
  constant: (name: string | undefined) => TensorProto | undefined,
  folded: Set<NodeProto>,
): NodePlan {
  const product = node.output?.[0];
  if (product === undefined || readers.get(product) !== 1) return plan;
  const add = (graph.node ?? []).find(
    (candidate) =>
      candidate.opType === "Add" &&
      (!candidate.domain || candidate.domain === "ai.onnx") &&
      (candidate.input ?? []).includes(product),
  );
  const other = add?.input?.find((name) => name !== product);
  const bias = constant(other);
  const outputs = plan.transposed ? tensorDims(plan.tensor)[0] : tensorDims(plan.tensor)[1];
  if (
    add === undefined ||
    other === undefined ||
    bias?.dataType !== DataType.FLOAT ||
    tensorDims(bias).length !== 1 ||
    tensorDims(bias)[0] !== outputs
  ) {
    return plan;
  }
  folded.add(add);
  return { ...plan, output: add.output?.[0] ?? "", bias: { name: other, beta: 1 } };
}

function prepareWeight(
  plan: NodePlan,
  settings: Required<QuantizeOptions>,
  names: NameScope,
  added: TensorProto[],
): PreparedWeight {
  const dims = tensorDims(plan.tensor);
  const stored = readFloats(plan.tensor);
  const [rows = 0, columns = 0] = dims;
  const [k, n] = plan.transposed ? [columns, rows] : [rows, columns];
  // Row-major [K, N]: element (i, j) at i * n + j.
  const values = plan.transposed ? transpose(stored, rows, columns) : stored;
  const ranges = columnRanges(values, k, n);
  const gain = perChannelGain(ranges, settings.weightType);
  const perChannel =
    settings.perChannel === "always" || (settings.perChannel === "auto" && gain >= settings.perChannelGain);
  const { quantized, scales, zeroPoints } = quantizeColumns(values, k, n, ranges, perChannel, settings);
  const base = plan.weight;
  const elemType = settings.weightType === "int8" ? DataType.INT8 : DataType.UINT8;
  const channelDims = perChannel ? [n] : [];
  const weight: PreparedWeight = {
    quantized: names.fresh(`${base}_quantized`),
    scale: names.fresh(`${base}_scale`),
    zeroPoint: names.fresh(`${base}_zero_point`),
    info: { name: base, shape: [k, n], perChannel, perChannelGain: gain },
    scales,
  };
  added.push(
    rawTensor(weight.quantized, elemType, [k, n], quantized),
    rawTensor(weight.scale, DataType.FLOAT, channelDims, scales),
    rawTensor(weight.zeroPoint, elemType, channelDims, zeroPoints),
  );
  return weight;
}

function transpose(values: Float32Array, rows: number, columns: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < columns; c++) out[c * rows + r] = values[r * columns + c]!;
  }
  return out;
}

/** Per output channel (column): min and max, both widened to include 0 so that 0 stays exact. */
function columnRanges(values: Float32Array, k: number, n: number): { min: Float32Array; max: Float32Array } {
  const min = new Float32Array(n);
  const max = new Float32Array(n);
  for (let i = 0; i < k; i++) {
    const row = i * n;
    for (let j = 0; j < n; j++) {
      const value = values[row + j]!;
      if (value < min[j]!) min[j] = value;
      else if (value > max[j]!) max[j] = value;
    }
  }
  return { min, max };
}

/**
 * Rounding noise is proportional to the square of the step: per-tensor uses the widest channel's step
 * everywhere, per-channel each channel's own. Their ratio says what per-channel scales buy.
 */
function perChannelGain(ranges: { min: Float32Array; max: Float32Array }, type: "int8" | "uint8"): number {
  const width = (j: number) =>
    type === "int8"
      ? Math.max(Math.abs(ranges.min[j]!), Math.abs(ranges.max[j]!))
      : ranges.max[j]! - ranges.min[j]!;
  let widest = 0;
  let sumSquares = 0;
  const n = ranges.min.length;
  for (let j = 0; j < n; j++) {
    const w = width(j);
    widest = Math.max(widest, w);
    sumSquares += w * w;
  }
  const meanSquare = sumSquares / n;
  return meanSquare === 0 ? 1 : (widest * widest) / meanSquare;
}

function quantizeColumns(
  values: Float32Array,
  k: number,
  n: number,
  ranges: { min: Float32Array; max: Float32Array },
  perChannel: boolean,
  settings: Required<QuantizeOptions>,
): { quantized: Int8Array | Uint8Array; scales: Float32Array; zeroPoints: Int8Array | Uint8Array } {
  const channels = perChannel ? n : 1;
  const scales = new Float32Array(channels);
  const signed = settings.weightType === "int8";
  const zeroPoints = signed ? new Int8Array(channels) : new Uint8Array(channels);
  let globalMin = 0;
  let globalMax = 0;
  for (let j = 0; j < n; j++) {
    globalMin = Math.min(globalMin, ranges.min[j]!);
    globalMax = Math.max(globalMax, ranges.max[j]!);
  }
  if (signed) {
    const qmax = settings.reduceRange ? 63 : 127;
    for (let c = 0; c < channels; c++) {
      const absMax = perChannel ? Math.max(-ranges.min[c]!, ranges.max[c]!) : Math.max(-globalMin, globalMax);
      scales[c] = absMax === 0 ? 1 : absMax / qmax;
    }
    const quantized = new Int8Array(k * n);
    for (let i = 0; i < k; i++) {
      const row = i * n;
      for (let j = 0; j < n; j++) {
        const q = Math.round(values[row + j]! / scales[perChannel ? j : 0]!);
        quantized[row + j] = Math.min(qmax, Math.max(-qmax, q));
      }
    }
    return { quantized, scales, zeroPoints };
  }
  const qmax = settings.reduceRange ? 127 : 255;
  for (let c = 0; c < channels; c++) {
    const low = perChannel ? ranges.min[c]! : globalMin;
    const high = perChannel ? ranges.max[c]! : globalMax;
    const scale = high - low === 0 ? 1 : (high - low) / qmax;
    scales[c] = scale;
    zeroPoints[c] = Math.min(qmax, Math.max(0, Math.round(-low / scale)));
  }
  const quantized = new Uint8Array(k * n);
  for (let i = 0; i < k; i++) {
    const row = i * n;
    for (let j = 0; j < n; j++) {
      const c = perChannel ? j : 0;
      const q = Math.round(values[row + j]! / scales[c]!) + zeroPoints[c]!;
      quantized[row + j] = Math.min(qmax, Math.max(0, q));
    }
  }
  return { quantized, scales, zeroPoints };
}

/** Gemm's alpha folds into the weight scale: a per-node copy, the shared weight stays as it is. */
function scaledCopy(weight: PreparedWeight, alpha: number, names: NameScope, added: TensorProto[]): string {
  const name = names.fresh(`${weight.scale}_alpha`);
  const scaled = weight.scales.map((scale) => scale * alpha);
  added.push(rawTensor(name, DataType.FLOAT, weight.info.perChannel ? [scaled.length] : [], scaled));
  return name;
}

function biasTensor(
  plan: NodePlan,
  constant: (name: string | undefined) => TensorProto | undefined,
  names: NameScope,
  added: TensorProto[],
): string {
  const bias = plan.bias!;
  const tensor = constant(bias.name)!;
  // DynamicQuantizeMatMul takes a 1-D bias: a Gemm's [1, N] C is copied as [N].
  if (bias.beta === 1 && tensorDims(tensor).length === 1) return bias.name;
  const values = readFloats(tensor);
  const name = names.fresh(`${bias.name}_bias`);
  added.push(
    rawTensor(
      name,
      DataType.FLOAT,
      [values.length],
      values.map((value) => value * bias.beta),
    ),
  );
  return name;
}

function contribNodes(
  activation: string,
  weight: PreparedWeight,
  scale: string,
  bias: string | undefined,
  output: string,
  names: NameScope,
): NodeProto[] {
  return [
    {
      name: names.fresh(`${output}_DynamicQuantizeMatMul`),
      opType: "DynamicQuantizeMatMul",
      domain: MICROSOFT_DOMAIN,
      input: [activation, weight.quantized, scale, weight.zeroPoint, ...(bias ? [bias] : [])],
      output: [output],
    },
  ];
}

function standardNodes(
  activation: { q: string; scale: string; zeroPoint: string },
  weight: PreparedWeight,
  scale: string,
  bias: string | undefined,
  output: string,
  names: NameScope,
): NodeProto[] {
  const product = names.fresh(`${output}_int32`);
  const asFloat = names.fresh(`${output}_float`);
  const combined = names.fresh(`${output}_scale`);
  const scaled = bias ? names.fresh(`${output}_unbiased`) : output;
  return [
    {
      name: names.fresh(`${output}_MatMulInteger`),
      opType: "MatMulInteger",
      input: [activation.q, weight.quantized, activation.zeroPoint, weight.zeroPoint],
      output: [product],
    },
    {
      name: names.fresh(`${output}_Cast`),
      opType: "Cast",
      input: [product],
      output: [asFloat],
      attribute: [intAttr("to", DataType.FLOAT)],
    },
    {
      name: names.fresh(`${output}_ScaleMul`),
      opType: "Mul",
      input: [activation.scale, scale],
      output: [combined],
    },
    { name: names.fresh(`${output}_Mul`), opType: "Mul", input: [asFloat, combined], output: [scaled] },
    ...(bias
      ? [{ name: names.fresh(`${output}_BiasAdd`), opType: "Add", input: [scaled, bias], output: [output] }]
      : []),
  ];
}
