import type { ModelProto } from "./graph.ts";
import { MICROSOFT_DOMAIN, STRING_ELEMENT, subgraphs } from "./nodes.ts";

/**
 * Whether a model is "shape-bound": every tensor a run makes has a size that follows from the
 * inputs' shapes alone, never from their values, and no operator repeats work a value asks for. Such
 * a model's run on given input shapes does about the same work whatever the values (a constant factor
 * such as denormal floats aside), so a run timed once for those shapes bounds every later one. The
 * inference function runs such models' short shapes on its own thread (inline-runs.ts).
 */
export type ShapeBound = { readonly bound: true } | { readonly bound: false; readonly reason: string };

/**
 * Operators whose work and output sizes follow from their inputs' shapes and attributes, with the
 * inputs (by position) whose values set an output's size: those must be constants. Anything not
 * listed (control flow, sequences, NonZero, NonMaxSuppression, Unique, custom domains) is not bound.
 */
const SHAPE_BOUND_OPERATORS: ReadonlyMap<string, ReadonlyMap<string, readonly number[]>> = new Map([
  [
    "",
    operators(
      "Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization BitShift " +
        "BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Cast CastLike Ceil Celu Clip Concat Constant Conv " +
        "ConvInteger ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout " +
        "DynamicQuantizeLinear Einsum Elu Equal Erf Exp Flatten Floor Gather GatherElements GatherND Gelu Gemm " +
        "GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GroupNormalization HardSigmoid " +
        "HardSwish Hardmax Identity InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less " +
        "LessOrEqual Log LogSoftmax LpNormalization LpPool LRN MatMul MatMulInteger Max MaxPool Mean " +
        "MeanVarianceNormalization Min Mish Mod Mul Neg Not Or Pow PRelu QLinearConv QLinearMatMul " +
        "QuantizeLinear Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean " +
        "ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Round Selu Shape Shrink Sigmoid Sign Sin " +
        "Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh " +
        "ThresholdedRelu TopK Transpose Trilu Unsqueeze Where Xor",
      {
        ConstantOfShape: [0],
        Expand: [1],
        OneHot: [1],
        Pad: [1],
        Range: [0, 1, 2],
        Resize: [1, 2, 3],
        Tile: [1],
        Upsample: [1],
      },
    ),
  ],
  [
    "ai.onnx.ml",
    operators(
      "ArrayFeatureExtractor Binarizer FeatureVectorizer Imputer LabelEncoder LinearClassifier " +
        "LinearRegressor Normalizer OneHotEncoder Scaler SVMClassifier SVMRegressor TreeEnsemble " +
        "TreeEnsembleClassifier TreeEnsembleRegressor ZipMap",
    ),
  ],
  [
    // What onnxruntime's graph optimizer and quantizer write into the variants it makes.
    MICROSOFT_DOMAIN,
    operators(
      "BiasAdd BiasGelu DynamicQuantizeMatMul FastGelu FusedConv FusedGemm FusedMatMul Gelu " +
        "MatMulIntegerToFloat QGemm QLinearAdd QLinearAveragePool QLinearConcat QLinearGlobalAveragePool " +
        "QLinearLeakyRelu QLinearMul QLinearSigmoid QuickGelu SimplifiedLayerNormalization " +
        "SkipLayerNormalization SkipSimplifiedLayerNormalization",
    ),
  ],
]);

function operators(
  names: string,
  sizedBy: Record<string, readonly number[]> = {},
): ReadonlyMap<string, readonly number[]> {
  return new Map([...names.split(" ").map((name) => [name, []] as const), ...Object.entries(sizedBy)]);
}

/** Whether `model` is shape-bound, or the first reason it is not. */
export function shapeBound(model: ModelProto): ShapeBound {
  const graph = model.graph;
  if (!graph) return { bound: false, reason: "the model has no graph" };
  const initializers = new Set((graph.initializer ?? []).map((tensor) => tensor.name ?? ""));
  const inputs = new Set((graph.input ?? []).map((value) => value.name ?? ""));
  for (const value of graph.input ?? []) {
    // A string's work follows its length, which no shape says.
    if (value.type?.tensorType?.elemType === STRING_ELEMENT && !initializers.has(value.name ?? ""))
      return { bound: false, reason: `input '${value.name}' is a string tensor` };
  }
  // Initializers a caller could override (listed among the inputs, as older exporters do) are not constant.
  const constants = new Set([...initializers].filter((name) => !inputs.has(name)));
  for (const node of graph.node ?? []) {
    const domain = node.domain === "ai.onnx" ? "" : (node.domain ?? "");
    const opType = node.opType ?? "";
    const sizedBy = SHAPE_BOUND_OPERATORS.get(domain)?.get(opType);
    if (sizedBy === undefined || subgraphs(node).length > 0) {
      const qualified = domain === "" ? opType : `${domain}.${opType}`;
      return { bound: false, reason: `it runs ${qualified}, whose work an input's values can set` };
    }
    const nodeInputs = node.input ?? [];
    for (const position of sizedBy) {
      const name = nodeInputs[position];
      if (name && !constants.has(name))
        return {
          bound: false,
          reason: `${opType} takes an output size from '${name}', which is not a constant`,
        };
    }
    // Constant folding: what only constants feed is constant (Shape and Size of a constant included).
    if (nodeInputs.every((name) => !name || constants.has(name)))
      for (const name of node.output ?? []) if (name) constants.add(name);
  }
  return { bound: true };
}
