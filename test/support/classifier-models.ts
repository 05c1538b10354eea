/**
 * Models as older exporters and sklearn-onnx write them: operator sets below 7 with initializers listed
 * among the graph inputs, and classifiers whose probabilities end in a ZipMap (domain ai.onnx.ml).
 */
import onnxProto from "onnx-proto";
import { ElemType, encodeModel, floatTensor, type GraphNode } from "../../models/onnx-builder.ts";
import { editModel } from "./crafted-models.ts";

const { onnx } = onnxProto;

/** The weights every model here multiplies its FP32 [N, 2] input `x` by: three classes. */
export const WEIGHTS = Float32Array.of(1, 0, -1, 0, 1, -1);
export const CLASSES = 3;

/** softmax(x @ WEIGHTS) row by row, as the models compute it. */
export function expectedProbabilities(x: readonly number[]): number[] {
  const rows = x.length / 2;
  return Array.from({ length: rows }, (_, row) => {
    const scores = Array.from(
      { length: CLASSES },
      (_, k) => x[row * 2]! * WEIGHTS[k]! + x[row * 2 + 1]! * WEIGHTS[CLASSES + k]!,
    );
    const top = Math.max(...scores);
    const exps = scores.map((score) => Math.exp(score - top));
    const sum = exps.reduce((a, b) => a + b, 0);
    return exps.map((value) => value / sum);
  }).flat();
}

/**
 * y = softmax(x @ w) stamped with an operator set below 7 (IR version 3), with `w` listed among the
 * graph inputs as IR 3 requires of initializers. onnxruntime still has MatMul-1 and Softmax-1 kernels.
 */
export function legacyOpsetModel(opsetVersion: number): Uint8Array {
  return encodeModel({
    graphName: "legacy",
    opsetVersion,
    irVersion: 3,
    inputs: [
      { name: "x", elemType: ElemType.FLOAT, dims: ["batch", 2] },
      { name: "w", elemType: ElemType.FLOAT, dims: [2, CLASSES] },
    ],
    outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: ["batch", CLASSES] }],
    initializers: [floatTensor("w", [2, CLASSES], WEIGHTS)],
    nodes: [
      { opType: "MatMul", inputs: ["x", "w"], outputs: ["scores"] },
      { opType: "Softmax", inputs: ["scores"], outputs: ["y"] },
    ],
  });
}

export interface ZipMapClassifierOptions {
  /** String labels (classlabels_strings) or integer ones (classlabels_int64s). */
  readonly labels?: readonly string[] | readonly number[];
  /** Declare the probabilities' type and shape in value_info, as some converters do. */
  readonly declareProbabilities?: boolean;
  /** Extra nodes, e.g. one that reads the maps. */
  readonly extraNodes?: readonly GraphNode[];
}

export const ZIPMAP_LABELS = ["cat", "dog", "bird"] as const;

/**
 * A scikit-learn-style classifier: `output_label` = argmax (INT64 [N]) and `output_probability`, the
 * softmax probabilities zipped with their labels into a sequence of maps, as sklearn-onnx writes it.
 */
export function zipMapClassifier(options: ZipMapClassifierOptions = {}): Uint8Array {
  const labels = options.labels ?? ZIPMAP_LABELS;
  const intLabels = typeof labels[0] === "number";
  const keyType = intLabels ? ElemType.INT64 : ElemType.STRING;
  const bytes = encodeModel({
    graphName: "classifier",
    opsetVersion: 13,
    inputs: [{ name: "x", elemType: ElemType.FLOAT, dims: ["N", 2] }],
    outputs: [
      { name: "output_label", elemType: ElemType.INT64, dims: ["N"] },
      { name: "output_probability", elemType: ElemType.FLOAT, dims: [] },
    ],
    initializers: [floatTensor("coefficients", [2, CLASSES], WEIGHTS)],
    nodes: [
      { opType: "MatMul", inputs: ["x", "coefficients"], outputs: ["scores"] },
      { opType: "Softmax", inputs: ["scores"], outputs: ["probabilities"], attributes: { axis: { int: 1 } } },
      {
        opType: "ArgMax",
        inputs: ["probabilities"],
        outputs: ["output_label"],
        attributes: { axis: { int: 1 }, keepdims: { int: 0 } },
      },
      { name: "ZipMap", opType: "ZipMap", inputs: ["probabilities"], outputs: ["output_probability"] },
      ...(options.extraNodes ?? []),
    ],
  });
  return editModel(bytes, (model) => {
    model.opsetImport!.push(onnx.OperatorSetIdProto.create({ domain: "ai.onnx.ml", version: 1 }));
    const zipMap = model.graph!.node!.find((node) => node.opType === "ZipMap")!;
    zipMap.domain = "ai.onnx.ml";
    zipMap.attribute = [
      intLabels
        ? onnx.AttributeProto.create({
            name: "classlabels_int64s",
            type: onnx.AttributeProto.AttributeType.INTS,
            ints: [...(labels as readonly number[])],
          })
        : onnx.AttributeProto.create({
            name: "classlabels_strings",
            type: onnx.AttributeProto.AttributeType.STRINGS,
            strings: (labels as readonly string[]).map((label) => new TextEncoder().encode(label)),
          }),
    ];
    model.graph!.output!.find((value) => value.name === "output_probability")!.type = sequenceOfMaps(keyType);
    if (options.declareProbabilities) {
      model.graph!.valueInfo!.push(
        onnx.ValueInfoProto.create({
          name: "probabilities",
          type: {
            tensorType: {
              elemType: ElemType.FLOAT,
              shape: { dim: [{ dimParam: "N" }, { dimValue: labels.length }] },
            },
          },
        }),
        onnx.ValueInfoProto.create({ name: "output_probability", type: sequenceOfMaps(keyType) }),
      );
    }
  });
}

/** seq(map(keyType, tensor(float))): what a ZipMap produces. */
export function sequenceOfMaps(keyType: number): onnxProto.onnx.TypeProto {
  return onnx.TypeProto.create({
    sequenceType: {
      elemType: { mapType: { keyType, valueType: { tensorType: { elemType: ElemType.FLOAT } } } },
    },
  });
}
