/**
 * A compatibility corpus: small models in the forms exporters have written them over the years (old
 * and new operator-set stamps, scikit-learn's ZipMap classifiers, initializers listed as graph inputs,
 * symbolic and unknown dimensions, every served datatype), each with a deterministic request. A server
 * that serves "every model onnxruntime runs" must answer each as onnxruntime run directly does.
 */
import onnxProto from "onnx-proto";
import { mulberry32 } from "#core/tensor/seeded-random.ts";
import { IRIS_DATASET, IRIS_LABELS } from "./iris.ts";
import { ElemType, encodeModel, floatTensor, type GraphNode, type TensorSignature } from "./onnx-builder.ts";
import { V2_DATATYPE_ELEM_TYPES, V2_DATATYPES, type V2Datatype } from "./zoo.ts";

const { onnx } = onnxProto;

/** One input of a model's sample request, as a V2 client sends it (INT64/UINT64 beyond 2^53 as bigint). */
export interface CompatInput {
  readonly name: string;
  readonly datatype: V2Datatype;
  readonly shape: readonly number[];
  readonly data: readonly (number | bigint | boolean | string)[];
}

/** An output served in another form than the model declares it (a ZipMap's sequence of maps). */
export interface ReshapedOutput {
  /** The same graph with this output as the tensor the server is to serve: onnxruntime's expectation. */
  readonly reference: Uint8Array;
  readonly output: string;
  /** The labels of the output's last dimension, in order, as the version record must list them. */
  readonly classLabels: readonly string[];
}

export interface CompatModel {
  /** A valid model name, also the test's label. */
  readonly name: string;
  readonly bytes: Uint8Array;
  /** What the model exercises, in a few words. */
  readonly exercises: string;
  /** The default ("ai.onnx") operator set the model is stamped with. */
  readonly opset: number;
  /** A deterministic request. */
  readonly inputs: readonly CompatInput[];
  /** What onnxruntime says when it refuses to load the model; absent when onnxruntime runs it. */
  readonly refusedBy?: RegExp;
  readonly reshaped?: ReshapedOutput;
}

/** The newest default operator set onnxruntime-node 1.30 loads ("official support ... till opset 26"). */
export const NEWEST_ORT_OPSET = 26;

/** The default-domain stamps of the corpus: every one from before onnxruntime's guaranteed 7, then landmarks. */
export const COMPAT_OPSETS = [1, 2, 3, 4, 5, 6, 7, 9, 11, 13, 17, NEWEST_ORT_OPSET] as const;

/** The IR version the ONNX release that introduced `opset` wrote (11 for stamps after 23). */
function irVersionFor(opset: number): number {
  if (opset <= 8) return 3;
  if (opset <= 11) return opset - 5;
  if (opset <= 14) return 7;
  if (opset <= 18) return 8;
  if (opset <= 20) return 9;
  if (opset <= 22) return 10;
  return 11;
}

const FEATURES = 4;
const CLASSES = 3;

/** Three Iris flowers, one of each species: the feature rows every classifier-shaped model is asked about. */
function irisRows(): number[][] {
  return [0, 50, 100].map((row) => [...IRIS_DATASET[row]!.features]);
}

function irisInput(name: string): CompatInput {
  const rows = irisRows();
  return { name, datatype: "FP32", shape: [rows.length, FEATURES], data: rows.flat() };
}

/** Seeded values in (-1, 1), rounded to float32 so every runtime starts from the same weights. */
function seededFloats(count: number, seed: number): Float32Array {
  const random = mulberry32(seed);
  return Float32Array.from({ length: count }, () => random() * 2 - 1);
}

/**
 * A linear classifier on petal length alone (cm), which tells the three Iris species apart:
 * logits = [9 - 3 * length, 1.5, 3 * length - 15].
 */
const PETAL_LENGTH = 2;
const PETAL_CLASSIFIER = { slopes: [-3, 0, 3], intercepts: [9, 1.5, -15] } as const;

/** The classifier as MatMul weights, [features, classes] row-major. */
function petalWeight(): Float32Array {
  const weight = new Float32Array(FEATURES * CLASSES);
  PETAL_CLASSIFIER.slopes.forEach((slope, c) => {
    weight[PETAL_LENGTH * CLASSES + c] = slope;
  });
  return weight;
}

/** The classifier as scikit-learn's coef_, [classes, features] row-major. */
function petalCoefficients(): number[] {
  return PETAL_CLASSIFIER.slopes.flatMap((slope) =>
    Array.from({ length: FEATURES }, (_, f) => (f === PETAL_LENGTH ? slope : 0)),
  );
}

const floatSignature = (name: string, dims: TensorSignature["dims"]): TensorSignature => ({
  name,
  elemType: ElemType.FLOAT,
  dims,
});

/**
 * The layers a model stamped at `opset` can use, as onnxruntime still has kernels for them: MatMul and
 * Softmax from opset 1; Relu and Sum from 6 (their opset-1 forms carried `consumed_inputs` and have no
 * kernel); Add with numpy broadcasting and Mul from 7.
 */
function layersFor(opset: number): { nodes: GraphNode[]; weights: string[] } {
  const matmul: GraphNode = { opType: "MatMul", inputs: ["features", "weight"], outputs: ["matmul"] };
  const softmax = (input: string): GraphNode => ({
    opType: "Softmax",
    inputs: [input],
    outputs: ["probabilities"],
    attributes: { axis: { int: 1 } },
  });
  if (opset < 6) {
    return {
      nodes: [{ ...matmul, outputs: ["scores"] }, softmax("scores")],
      weights: ["weight"],
    };
  }
  if (opset < 7) {
    // Sum-6 adds inputs of one shape: a residual around the Relu, without broadcasting.
    return {
      nodes: [
        matmul,
        { opType: "Relu", inputs: ["matmul"], outputs: ["relu"] },
        { opType: "Sum", inputs: ["matmul", "relu"], outputs: ["scores"] },
        softmax("scores"),
      ],
      weights: ["weight"],
    };
  }
  return {
    nodes: [
      matmul,
      { opType: "Add", inputs: ["matmul", "bias"], outputs: ["biased"] },
      { opType: "Relu", inputs: ["biased"], outputs: ["relu"] },
      { opType: "Mul", inputs: ["relu", "scale"], outputs: ["scores"] },
      softmax("scores"),
    ],
    weights: ["weight", "bias", "scale"],
  };
}

const WEIGHTS = {
  weight: () => floatTensor("weight", [FEATURES, CLASSES], seededFloats(FEATURES * CLASSES, 7)),
  bias: () => floatTensor("bias", [CLASSES], seededFloats(CLASSES, 8)),
  scale: () => floatTensor("scale", [], Float32Array.of(0.75)),
} as const;

const WEIGHT_SIGNATURES: Readonly<Record<keyof typeof WEIGHTS, TensorSignature>> = {
  weight: floatSignature("weight", [FEATURES, CLASSES]),
  bias: floatSignature("bias", [CLASSES]),
  scale: floatSignature("scale", []),
};

/**
 * `features` FP32 [batch, 4] -> `scores` and `probabilities` FP32 [batch, 3], stamped at `opset` with the
 * IR version of its time. IR 3 required every initializer to be listed among the graph inputs, and
 * `initializersAsInputs` keeps that habit on later stamps (PyTorch's `keep_initializers_as_inputs`).
 */
export function buildOpsetModel(opset: number, initializersAsInputs = opset <= 8): Uint8Array {
  const { nodes, weights } = layersFor(opset);
  const names = weights as (keyof typeof WEIGHTS)[];
  return encodeModel({
    graphName: `opset_${opset}`,
    docString: `A 4-3 classifier head stamped at ONNX operator set ${opset}.`,
    opsetVersion: opset,
    irVersion: irVersionFor(opset),
    inputs: [
      floatSignature("features", ["batch", FEATURES]),
      ...(initializersAsInputs ? names.map((name) => WEIGHT_SIGNATURES[name]) : []),
    ],
    outputs: [
      floatSignature("scores", ["batch", CLASSES]),
      floatSignature("probabilities", ["batch", CLASSES]),
    ],
    initializers: names.map((name) => WEIGHTS[name]()),
    nodes,
  });
}

/**
 * An opset-5 graph from before numpy broadcasting: Add-1 with `broadcast: 1`, which onnxruntime has no
 * kernel for, so no server built on it can run the model.
 */
export function buildLegacyAddModel(): Uint8Array {
  return encodeModel({
    graphName: "legacy_add",
    docString: "MatMul then Add-1 with the pre-opset-7 broadcast attribute.",
    opsetVersion: 5,
    irVersion: 3,
    inputs: [
      floatSignature("features", ["batch", FEATURES]),
      WEIGHT_SIGNATURES.weight,
      WEIGHT_SIGNATURES.bias,
    ],
    outputs: [floatSignature("scores", ["batch", CLASSES])],
    initializers: [WEIGHTS.weight(), WEIGHTS.bias()],
    nodes: [
      { opType: "MatMul", inputs: ["features", "weight"], outputs: ["matmul"] },
      {
        opType: "Add",
        inputs: ["matmul", "bias"],
        outputs: ["scores"],
        attributes: { broadcast: { int: 1 } },
      },
    ],
  });
}

const ML_DOMAIN = "ai.onnx.ml";
const utf8 = new TextEncoder();

/** Decodes a model, lets `edit` change the protobuf message, and encodes it again. */
function edited(bytes: Uint8Array, edit: (model: onnxProto.onnx.ModelProto) => void): Uint8Array {
  const model = onnx.ModelProto.decode(bytes);
  edit(model);
  return onnx.ModelProto.encode(model).finish();
}

type MlAttribute =
  | { readonly floats: readonly number[] }
  | { readonly ints: readonly number[] }
  | { readonly strings: readonly string[] }
  | { readonly string: string };

function mlAttribute(name: string, value: MlAttribute): onnxProto.onnx.IAttributeProto {
  const { AttributeType } = onnx.AttributeProto;
  if ("floats" in value) return { name, type: AttributeType.FLOATS, floats: [...value.floats] };
  if ("ints" in value) return { name, type: AttributeType.INTS, ints: [...value.ints] };
  if ("strings" in value) {
    return { name, type: AttributeType.STRINGS, strings: value.strings.map((s) => utf8.encode(s)) };
  }
  return { name, type: AttributeType.STRING, s: utf8.encode(value.string) };
}

/**
 * Moves the named nodes into the `ai.onnx.ml` domain with their attributes (the builder writes only
 * default-domain nodes and simple attributes), imports that domain, and retypes `sequenceOutput`, if
 * given, as the sequence of maps a ZipMap produces.
 */
function withMlNodes(
  bytes: Uint8Array,
  nodes: Readonly<Record<string, Readonly<Record<string, MlAttribute>>>>,
  sequenceOutput?: { readonly name: string; readonly keyType: ElemType },
): Uint8Array {
  return edited(bytes, (model) => {
    model.opsetImport.push(onnx.OperatorSetIdProto.create({ domain: ML_DOMAIN, version: 1 }));
    const graph = model.graph ?? {};
    for (const node of graph.node ?? []) {
      const attributes = nodes[node.name ?? ""];
      if (attributes === undefined) continue;
      node.domain = ML_DOMAIN;
      node.attribute = [
        ...(node.attribute ?? []),
        ...Object.entries(attributes).map(([name, value]) => mlAttribute(name, value)),
      ];
    }
    if (sequenceOutput === undefined) return;
    const output = (graph.output ?? []).find((value) => value.name === sequenceOutput.name);
    if (output === undefined) throw new Error(`no output '${sequenceOutput.name}' to retype`);
    output.type = onnx.TypeProto.create({
      sequenceType: {
        elemType: {
          mapType: {
            keyType: sequenceOutput.keyType,
            valueType: { tensorType: { elemType: ElemType.FLOAT } },
          },
        },
      },
    });
  });
}

/**
 * scikit-learn's shape of a classifier with integer classes: `float_input` FP32 [N, 4] -> MatMul, Add,
 * Softmax -> ZipMap(classlabels_int64s [0, 1, 2]) -> `output_probability`, a sequence of
 * map(int64, float), and ArgMax -> `output_label` INT64 [N]. Without the ZipMap, `output_probability`
 * is the FP32 [N, 3] tensor it was made from.
 */
export function buildIntZipMapClassifier(zipMap = true): Uint8Array {
  const bytes = encodeModel({
    graphName: "zipmap_int64",
    docString: "A linear softmax classifier with scikit-learn's ZipMap over integer class labels.",
    opsetVersion: 13,
    irVersion: 7,
    inputs: [floatSignature("float_input", ["N", FEATURES])],
    outputs: [
      { name: "output_label", elemType: ElemType.INT64, dims: ["N"] },
      floatSignature("output_probability", ["N", CLASSES]),
    ],
    initializers: [
      floatTensor("weight", [FEATURES, CLASSES], petalWeight()),
      floatTensor("bias", [CLASSES], Float32Array.from(PETAL_CLASSIFIER.intercepts)),
    ],
    nodes: [
      { opType: "MatMul", inputs: ["float_input", "weight"], outputs: ["matmul"] },
      { opType: "Add", inputs: ["matmul", "bias"], outputs: ["logits"] },
      {
        opType: "Softmax",
        inputs: ["logits"],
        outputs: [zipMap ? "probabilities" : "output_probability"],
        attributes: { axis: { int: 1 } },
      },
      {
        opType: "ArgMax",
        inputs: ["logits"],
        outputs: ["output_label"],
        attributes: { axis: { int: 1 }, keepdims: { int: 0 } },
      },
      ...(zipMap
        ? [{ name: "zipmap", opType: "ZipMap", inputs: ["probabilities"], outputs: ["output_probability"] }]
        : []),
    ],
  });
  if (!zipMap) return bytes;
  return withMlNodes(
    bytes,
    { zipmap: { classlabels_int64s: { ints: [0, 1, 2] } } },
    { name: "output_probability", keyType: ElemType.INT64 },
  );
}

/**
 * What skl2onnx writes for a LogisticRegression over string classes: LinearClassifier (softmax) ->
 * `label` STRING [N] and scores, Normalizer(L1) -> probabilities, ZipMap(classlabels_strings, the Iris
 * species) -> `output_probability`, a sequence of map(string, float). Without the ZipMap,
 * `output_probability` is the FP32 [N, 3] tensor.
 */
export function buildStringZipMapClassifier(zipMap = true): Uint8Array {
  const bytes = encodeModel({
    graphName: "zipmap_string",
    docString:
      "skl2onnx's LogisticRegression graph: LinearClassifier, Normalizer and ZipMap over string classes.",
    opsetVersion: 17,
    irVersion: 8,
    inputs: [floatSignature("float_input", ["N", FEATURES])],
    outputs: [
      { name: "output_label", elemType: ElemType.STRING, dims: ["N"] },
      floatSignature("output_probability", ["N", CLASSES]),
    ],
    nodes: [
      {
        name: "linear_classifier",
        opType: "LinearClassifier",
        inputs: ["float_input"],
        outputs: ["output_label", "probability_tensor"],
      },
      {
        name: "normalizer",
        opType: "Normalizer",
        inputs: ["probability_tensor"],
        outputs: [zipMap ? "probabilities" : "output_probability"],
      },
      ...(zipMap
        ? [{ name: "zipmap", opType: "ZipMap", inputs: ["probabilities"], outputs: ["output_probability"] }]
        : []),
    ],
  });
  return withMlNodes(
    bytes,
    {
      linear_classifier: {
        coefficients: { floats: petalCoefficients() },
        intercepts: { floats: [...PETAL_CLASSIFIER.intercepts] },
        classlabels_strings: { strings: IRIS_LABELS },
        post_transform: { string: "SOFTMAX" },
      },
      normalizer: { norm: { string: "L1" } },
      ...(zipMap ? { zipmap: { classlabels_strings: { strings: IRIS_LABELS } } } : {}),
    },
    zipMap ? { name: "output_probability", keyType: ElemType.STRING } : undefined,
  );
}

/** `a` and `b` share the symbolic dims "batch" and "width": y = a * b + a, FP32 [batch, width]. */
export function buildSymbolicDimsModel(): Uint8Array {
  return encodeModel({
    graphName: "symbolic_dims",
    docString: "Two inputs whose named dimensions must agree.",
    inputs: [floatSignature("a", ["batch", "width"]), floatSignature("b", ["batch", "width"])],
    outputs: [floatSignature("y", ["batch", "width"])],
    nodes: [
      { opType: "Mul", inputs: ["a", "b"], outputs: ["product"] },
      { opType: "Add", inputs: ["product", "a"], outputs: ["y"] },
    ],
  });
}

/**
 * `features` FP32 [?, 4] -> `scores` FP32 [?, 3]: the first dimension has neither a value nor a name,
 * as exporters write a dimension they could not trace.
 */
export function buildUnknownDimsModel(): Uint8Array {
  const bytes = encodeModel({
    graphName: "unknown_dims",
    docString: "A dimension with neither dim_value nor dim_param.",
    inputs: [floatSignature("features", ["unknown", FEATURES])],
    outputs: [floatSignature("scores", ["unknown", CLASSES])],
    initializers: [WEIGHTS.weight()],
    nodes: [
      { opType: "MatMul", inputs: ["features", "weight"], outputs: ["matmul"] },
      { opType: "Relu", inputs: ["matmul"], outputs: ["scores"] },
    ],
  });
  return edited(bytes, (model) => {
    for (const value of [...(model.graph?.input ?? []), ...(model.graph?.output ?? [])]) {
      const dims = value.type?.tensorType?.shape?.dim ?? [];
      dims[0] = onnx.TensorShapeProto.Dimension.create();
    }
  });
}

/** Values at the edges of each datatype, three per row. */
const DATATYPE_SAMPLES: Readonly<Record<V2Datatype, CompatInput["data"]>> = {
  BOOL: [true, false, true, false, false, true],
  UINT8: [0, 255, 7, 128, 1, 254],
  UINT16: [0, 65535, 300, 32768, 1, 65534],
  UINT32: [0, 4294967295, 70000, 2147483648, 1, 4294967294],
  UINT64: [0n, 18446744073709551615n, 9007199254740993n, 1n, 2n ** 63n, 42n],
  INT8: [-128, 127, 0, -1, 1, 64],
  INT16: [-32768, 32767, 1, -1, 0, 12345],
  INT32: [-2147483648, 2147483647, 5, -1, 0, 123456789],
  INT64: [-9223372036854775808n, 9223372036854775807n, 9007199254740993n, -9007199254740993n, 0n, -1n],
  FP16: [1.5, -0.25, 65504, -65504, 0.000061035156, 0],
  FP32: [0.1, -3.25, 3.4e38, -1e-30, 0, 1],
  FP64: [0.1, -1e300, 5e-324, 1 / 3, -0, 2 ** 60],
  BYTES: ["hello", "", "ünïcødé ✓", "tab\tstop", '"quoted"', "\n"],
};

/** `x` -> Identity -> `y`, of `datatype` and shape [batch, 3]. */
export function buildDatatypeModel(datatype: V2Datatype): Uint8Array {
  const elemType = V2_DATATYPE_ELEM_TYPES[datatype];
  return encodeModel({
    graphName: `identity_${datatype.toLowerCase()}`,
    docString: `Echoes a ${datatype} tensor.`,
    inputs: [{ name: "x", elemType, dims: ["batch", 3] }],
    outputs: [{ name: "y", elemType, dims: ["batch", 3] }],
    nodes: [{ opType: "Identity", inputs: ["x"], outputs: ["y"] }],
  });
}

function opsetEntry(opset: number): CompatModel {
  return {
    name: `opset-${opset}`,
    bytes: buildOpsetModel(opset),
    exercises:
      opset < 7
        ? `operator set ${opset}, below onnxruntime's guaranteed 7, with IR 3's initializers-as-inputs`
        : `operator set ${opset} at IR ${irVersionFor(opset)}`,
    opset,
    inputs: [irisInput("features")],
  };
}

/** The corpus, in a fixed order. */
export function compatCorpus(): CompatModel[] {
  const symbolicRandom = mulberry32(21);
  const symbolicValues = () =>
    Array.from({ length: 6 }, () => Math.round((symbolicRandom() - 0.5) * 800) / 100);
  return [
    ...COMPAT_OPSETS.map(opsetEntry),
    {
      name: `opset-${NEWEST_ORT_OPSET + 1}`,
      bytes: buildOpsetModel(NEWEST_ORT_OPSET + 1),
      exercises: "an operator set newer than onnxruntime supports: refused with onnxruntime's reason",
      opset: NEWEST_ORT_OPSET + 1,
      inputs: [irisInput("features")],
      refusedBy: new RegExp(`official support for domain ai\\.onnx is till opset ${NEWEST_ORT_OPSET}`),
    },
    {
      name: "opset-5-legacy-add",
      bytes: buildLegacyAddModel(),
      exercises: "an old stamp whose Add-1 onnxruntime has no kernel for: refused with onnxruntime's reason",
      opset: 5,
      inputs: [irisInput("features")],
      refusedBy: /Could not find an implementation for Add\(1\)/,
    },
    {
      name: "initializers-as-inputs",
      bytes: buildOpsetModel(9, true),
      exercises: "IR 4 with every initializer also a graph input (overridable; not part of the signature)",
      opset: 9,
      inputs: [irisInput("features")],
    },
    {
      name: "zipmap-int64",
      bytes: buildIntZipMapClassifier(),
      exercises: "ai.onnx.ml ZipMap over int64 classes: output_probability served as FP32 [N, 3]",
      opset: 13,
      inputs: [irisInput("float_input")],
      reshaped: {
        reference: buildIntZipMapClassifier(false),
        output: "output_probability",
        classLabels: ["0", "1", "2"],
      },
    },
    {
      name: "zipmap-string",
      bytes: buildStringZipMapClassifier(),
      exercises: "skl2onnx LinearClassifier + Normalizer + ZipMap over string classes, label as BYTES",
      opset: 17,
      inputs: [irisInput("float_input")],
      reshaped: {
        reference: buildStringZipMapClassifier(false),
        output: "output_probability",
        classLabels: [...IRIS_LABELS],
      },
    },
    {
      name: "symbolic-dims",
      bytes: buildSymbolicDimsModel(),
      exercises: "two inputs sharing the symbolic dims batch and width",
      opset: 17,
      inputs: ["a", "b"].map((name) => ({ name, datatype: "FP32", shape: [2, 3], data: symbolicValues() })),
    },
    {
      name: "unknown-dims",
      bytes: buildUnknownDimsModel(),
      exercises: "a dimension with neither a value nor a name",
      opset: 17,
      inputs: [irisInput("features")],
    },
    ...V2_DATATYPES.map(
      (datatype): CompatModel => ({
        name: `dtype-${datatype.toLowerCase()}`,
        bytes: buildDatatypeModel(datatype),
        exercises: `a ${datatype} tensor through Identity, at the edges of its range`,
        opset: 17,
        inputs: [{ name: "x", datatype, shape: [2, 3], data: DATATYPE_SAMPLES[datatype] }],
      }),
    ),
  ];
}
