import { mulberry32 } from "#core/tensor/seeded-random.ts";
import { ElemType, encodeModel, floatTensor, stringTensor } from "./onnx-builder.ts";

export const IRIS_LABELS = ["setosa", "versicolor", "virginica"] as const;
export type IrisSpecies = (typeof IRIS_LABELS)[number];

/** Sepal length, sepal width, petal length, petal width, in cm. */
export type IrisFeatures = readonly [number, number, number, number];

export interface IrisSample {
  readonly features: IrisFeatures;
  readonly species: IrisSpecies;
}

/**
 * Fisher's Iris data (1936), public domain: 50 flowers of each species, in the row order of R's
 * `datasets::iris` (which fixes two transcription errors of the UCI copy, rows 35 and 38).
 */
const MEASUREMENTS: Readonly<Record<IrisSpecies, readonly IrisFeatures[]>> = {
  setosa: [
    [5.1, 3.5, 1.4, 0.2],
    [4.9, 3.0, 1.4, 0.2],
    [4.7, 3.2, 1.3, 0.2],
    [4.6, 3.1, 1.5, 0.2],
    [5.0, 3.6, 1.4, 0.2],
    [5.4, 3.9, 1.7, 0.4],
    [4.6, 3.4, 1.4, 0.3],
    [5.0, 3.4, 1.5, 0.2],
    [4.4, 2.9, 1.4, 0.2],
    [4.9, 3.1, 1.5, 0.1],
    [5.4, 3.7, 1.5, 0.2],
    [4.8, 3.4, 1.6, 0.2],
    [4.8, 3.0, 1.4, 0.1],
    [4.3, 3.0, 1.1, 0.1],
    [5.8, 4.0, 1.2, 0.2],
    [5.7, 4.4, 1.5, 0.4],
    [5.4, 3.9, 1.3, 0.4],
    [5.1, 3.5, 1.4, 0.3],
    [5.7, 3.8, 1.7, 0.3],
    [5.1, 3.8, 1.5, 0.3],
    [5.4, 3.4, 1.7, 0.2],
    [5.1, 3.7, 1.5, 0.4],
    [4.6, 3.6, 1.0, 0.2],
    [5.1, 3.3, 1.7, 0.5],
    [4.8, 3.4, 1.9, 0.2],
    [5.0, 3.0, 1.6, 0.2],
    [5.0, 3.4, 1.6, 0.4],
    [5.2, 3.5, 1.5, 0.2],
    [5.2, 3.4, 1.4, 0.2],
    [4.7, 3.2, 1.6, 0.2],
    [4.8, 3.1, 1.6, 0.2],
    [5.4, 3.4, 1.5, 0.4],
    [5.2, 4.1, 1.5, 0.1],
    [5.5, 4.2, 1.4, 0.2],
    [4.9, 3.1, 1.5, 0.2],
    [5.0, 3.2, 1.2, 0.2],
    [5.5, 3.5, 1.3, 0.2],
    [4.9, 3.6, 1.4, 0.1],
    [4.4, 3.0, 1.3, 0.2],
    [5.1, 3.4, 1.5, 0.2],
    [5.0, 3.5, 1.3, 0.3],
    [4.5, 2.3, 1.3, 0.3],
    [4.4, 3.2, 1.3, 0.2],
    [5.0, 3.5, 1.6, 0.6],
    [5.1, 3.8, 1.9, 0.4],
    [4.8, 3.0, 1.4, 0.3],
    [5.1, 3.8, 1.6, 0.2],
    [4.6, 3.2, 1.4, 0.2],
    [5.3, 3.7, 1.5, 0.2],
    [5.0, 3.3, 1.4, 0.2],
  ],
  versicolor: [
    [7.0, 3.2, 4.7, 1.4],
    [6.4, 3.2, 4.5, 1.5],
    [6.9, 3.1, 4.9, 1.5],
    [5.5, 2.3, 4.0, 1.3],
    [6.5, 2.8, 4.6, 1.5],
    [5.7, 2.8, 4.5, 1.3],
    [6.3, 3.3, 4.7, 1.6],
    [4.9, 2.4, 3.3, 1.0],
    [6.6, 2.9, 4.6, 1.3],
    [5.2, 2.7, 3.9, 1.4],
    [5.0, 2.0, 3.5, 1.0],
    [5.9, 3.0, 4.2, 1.5],
    [6.0, 2.2, 4.0, 1.0],
    [6.1, 2.9, 4.7, 1.4],
    [5.6, 2.9, 3.6, 1.3],
    [6.7, 3.1, 4.4, 1.4],
    [5.6, 3.0, 4.5, 1.5],
    [5.8, 2.7, 4.1, 1.0],
    [6.2, 2.2, 4.5, 1.5],
    [5.6, 2.5, 3.9, 1.1],
    [5.9, 3.2, 4.8, 1.8],
    [6.1, 2.8, 4.0, 1.3],
    [6.3, 2.5, 4.9, 1.5],
    [6.1, 2.8, 4.7, 1.2],
    [6.4, 2.9, 4.3, 1.3],
    [6.6, 3.0, 4.4, 1.4],
    [6.8, 2.8, 4.8, 1.4],
    [6.7, 3.0, 5.0, 1.7],
    [6.0, 2.9, 4.5, 1.5],
    [5.7, 2.6, 3.5, 1.0],
    [5.5, 2.4, 3.8, 1.1],
    [5.5, 2.4, 3.7, 1.0],
    [5.8, 2.7, 3.9, 1.2],
    [6.0, 2.7, 5.1, 1.6],
    [5.4, 3.0, 4.5, 1.5],
    [6.0, 3.4, 4.5, 1.6],
    [6.7, 3.1, 4.7, 1.5],
    [6.3, 2.3, 4.4, 1.3],
    [5.6, 3.0, 4.1, 1.3],
    [5.5, 2.5, 4.0, 1.3],
    [5.5, 2.6, 4.4, 1.2],
    [6.1, 3.0, 4.6, 1.4],
    [5.8, 2.6, 4.0, 1.2],
    [5.0, 2.3, 3.3, 1.0],
    [5.6, 2.7, 4.2, 1.3],
    [5.7, 3.0, 4.2, 1.2],
    [5.7, 2.9, 4.2, 1.3],
    [6.2, 2.9, 4.3, 1.3],
    [5.1, 2.5, 3.0, 1.1],
    [5.7, 2.8, 4.1, 1.3],
  ],
  virginica: [
    [6.3, 3.3, 6.0, 2.5],
    [5.8, 2.7, 5.1, 1.9],
    [7.1, 3.0, 5.9, 2.1],
    [6.3, 2.9, 5.6, 1.8],
    [6.5, 3.0, 5.8, 2.2],
    [7.6, 3.0, 6.6, 2.1],
    [4.9, 2.5, 4.5, 1.7],
    [7.3, 2.9, 6.3, 1.8],
    [6.7, 2.5, 5.8, 1.8],
    [7.2, 3.6, 6.1, 2.5],
    [6.5, 3.2, 5.1, 2.0],
    [6.4, 2.7, 5.3, 1.9],
    [6.8, 3.0, 5.5, 2.1],
    [5.7, 2.5, 5.0, 2.0],
    [5.8, 2.8, 5.1, 2.4],
    [6.4, 3.2, 5.3, 2.3],
    [6.5, 3.0, 5.5, 1.8],
    [7.7, 3.8, 6.7, 2.2],
    [7.7, 2.6, 6.9, 2.3],
    [6.0, 2.2, 5.0, 1.5],
    [6.9, 3.2, 5.7, 2.3],
    [5.6, 2.8, 4.9, 2.0],
    [7.7, 2.8, 6.7, 2.0],
    [6.3, 2.7, 4.9, 1.8],
    [6.7, 3.3, 5.7, 2.1],
    [7.2, 3.2, 6.0, 1.8],
    [6.2, 2.8, 4.8, 1.8],
    [6.1, 3.0, 4.9, 1.8],
    [6.4, 2.8, 5.6, 2.1],
    [7.2, 3.0, 5.8, 1.6],
    [7.4, 2.8, 6.1, 1.9],
    [7.9, 3.8, 6.4, 2.0],
    [6.4, 2.8, 5.6, 2.2],
    [6.3, 2.8, 5.1, 1.5],
    [6.1, 2.6, 5.6, 1.4],
    [7.7, 3.0, 6.1, 2.3],
    [6.3, 3.4, 5.6, 2.4],
    [6.4, 3.1, 5.5, 1.8],
    [6.0, 3.0, 4.8, 1.8],
    [6.9, 3.1, 5.4, 2.1],
    [6.7, 3.1, 5.6, 2.4],
    [6.9, 3.1, 5.1, 2.3],
    [5.8, 2.7, 5.1, 1.9],
    [6.8, 3.2, 5.9, 2.3],
    [6.7, 3.3, 5.7, 2.5],
    [6.7, 3.0, 5.2, 2.3],
    [6.3, 2.5, 5.0, 1.9],
    [6.5, 3.0, 5.2, 2.0],
    [6.2, 3.4, 5.4, 2.3],
    [5.9, 3.0, 5.1, 1.8],
  ],
};

export const IRIS_DATASET: readonly IrisSample[] = IRIS_LABELS.flatMap((species) =>
  MEASUREMENTS[species].map((features) => ({ features, species })),
);

const FEATURE_COUNT = 4;
const HIDDEN_UNITS = 16;
const CLASS_COUNT = IRIS_LABELS.length;
const TRAINING = { seed: 42, epochs: 500, learningRate: 0.1, momentum: 0.9 } as const;

/** Per-feature mean and population standard deviation, baked into the graph as Sub/Div. */
interface Standardization {
  readonly mean: Float64Array;
  readonly std: Float64Array;
}

/** Weights of features -> dense(16) -> ReLU -> dense(3), row-major [in, out] as MatMul expects. */
interface MlpWeights {
  readonly w1: Float64Array;
  readonly b1: Float64Array;
  readonly w2: Float64Array;
  readonly b2: Float64Array;
}

export interface IrisClassifier {
  readonly standardization: Standardization;
  readonly weights: MlpWeights;
  /** Share of IRIS_DATASET the trained weights classify correctly (in float64, before export). */
  readonly trainingAccuracy: number;
}

/** Trains a 4-16-3 ReLU MLP on the whole data set with full-batch gradient descent; deterministic. */
export function trainIrisClassifier(): IrisClassifier {
  const standardization = standardize(IRIS_DATASET);
  const inputs = IRIS_DATASET.map(({ features }) =>
    features.map((value, f) => (value - standardization.mean[f]!) / standardization.std[f]!),
  );
  const targets = IRIS_DATASET.map(({ species }) => IRIS_LABELS.indexOf(species));
  const random = mulberry32(TRAINING.seed);
  const weights: MlpWeights = {
    w1: glorotUniform(FEATURE_COUNT, HIDDEN_UNITS, random),
    b1: new Float64Array(HIDDEN_UNITS),
    w2: glorotUniform(HIDDEN_UNITS, CLASS_COUNT, random),
    b2: new Float64Array(CLASS_COUNT),
  };
  const parameters = [weights.w1, weights.b1, weights.w2, weights.b2];
  const velocities = parameters.map((p) => new Float64Array(p.length));
  for (let epoch = 0; epoch < TRAINING.epochs; epoch++) {
    const gradients = parameters.map((p) => new Float64Array(p.length));
    const [gw1, gb1, gw2, gb2] = gradients as [Float64Array, Float64Array, Float64Array, Float64Array];
    inputs.forEach((x, n) => {
      const { hidden, probabilities } = forward(weights, x);
      // Softmax + cross-entropy: d(loss)/d(logit) = p - onehot, averaged over the batch.
      const dLogits = probabilities.map((p, c) => (p - (c === targets[n] ? 1 : 0)) / inputs.length);
      for (let h = 0; h < HIDDEN_UNITS; h++) {
        let dHidden = 0;
        for (let c = 0; c < CLASS_COUNT; c++) {
          gw2[h * CLASS_COUNT + c]! += hidden[h]! * dLogits[c]!;
          dHidden += weights.w2[h * CLASS_COUNT + c]! * dLogits[c]!;
        }
        if (hidden[h]! <= 0) continue;
        gb1[h]! += dHidden;
        for (let f = 0; f < FEATURE_COUNT; f++) gw1[f * HIDDEN_UNITS + h]! += x[f]! * dHidden;
      }
      for (let c = 0; c < CLASS_COUNT; c++) gb2[c]! += dLogits[c]!;
    });
    parameters.forEach((parameter, k) => {
      const velocity = velocities[k]!;
      const gradient = gradients[k]!;
      for (let i = 0; i < parameter.length; i++) {
        velocity[i] = TRAINING.momentum * velocity[i]! - TRAINING.learningRate * gradient[i]!;
        parameter[i]! += velocity[i]!;
      }
    });
  }
  const correct = inputs.filter((x, n) => argmax(forward(weights, x).probabilities) === targets[n]).length;
  return { standardization, weights, trainingAccuracy: correct / inputs.length };
}

/**
 * The trained classifier as ONNX: `features` FP32 [batch, 4] in cm ->
 * `probabilities` FP32 [batch, 3] and `label` STRING [batch] (the species name).
 */
export function buildIrisModel(): Uint8Array {
  const { standardization, weights, trainingAccuracy } = trainIrisClassifier();
  const f32 = (values: Float64Array) => Float32Array.from(values);
  return encodeModel({
    graphName: "iris",
    docString:
      "Iris species classifier: standardization, a 4-16-3 ReLU MLP and softmax, trained on Fisher's data.",
    inputs: [{ name: "features", elemType: ElemType.FLOAT, dims: ["batch", FEATURE_COUNT] }],
    outputs: [
      { name: "probabilities", elemType: ElemType.FLOAT, dims: ["batch", CLASS_COUNT] },
      { name: "label", elemType: ElemType.STRING, dims: ["batch"] },
    ],
    initializers: [
      floatTensor("feature_mean", [FEATURE_COUNT], f32(standardization.mean)),
      floatTensor("feature_std", [FEATURE_COUNT], f32(standardization.std)),
      floatTensor("hidden.weight", [FEATURE_COUNT, HIDDEN_UNITS], f32(weights.w1)),
      floatTensor("hidden.bias", [HIDDEN_UNITS], f32(weights.b1)),
      floatTensor("logits.weight", [HIDDEN_UNITS, CLASS_COUNT], f32(weights.w2)),
      floatTensor("logits.bias", [CLASS_COUNT], f32(weights.b2)),
      stringTensor("class_names", [CLASS_COUNT], IRIS_LABELS),
    ],
    nodes: [
      { opType: "Sub", inputs: ["features", "feature_mean"], outputs: ["centered"] },
      { opType: "Div", inputs: ["centered", "feature_std"], outputs: ["standardized"] },
      { opType: "MatMul", inputs: ["standardized", "hidden.weight"], outputs: ["hidden.matmul"] },
      { opType: "Add", inputs: ["hidden.matmul", "hidden.bias"], outputs: ["hidden.add"] },
      { opType: "Relu", inputs: ["hidden.add"], outputs: ["hidden"] },
      { opType: "MatMul", inputs: ["hidden", "logits.weight"], outputs: ["logits.matmul"] },
      { opType: "Add", inputs: ["logits.matmul", "logits.bias"], outputs: ["logits"] },
      {
        opType: "Softmax",
        inputs: ["logits"],
        outputs: ["probabilities"],
        attributes: { axis: { int: -1 } },
      },
      {
        opType: "ArgMax",
        inputs: ["logits"],
        outputs: ["class_index"],
        attributes: { axis: { int: 1 }, keepdims: { int: 0 } },
      },
      {
        opType: "Gather",
        inputs: ["class_names", "class_index"],
        outputs: ["label"],
        attributes: { axis: { int: 0 } },
      },
    ],
    metadata: {
      labels: JSON.stringify(IRIS_LABELS),
      description: `Iris species from sepal and petal length and width in cm; training accuracy ${trainingAccuracy.toFixed(3)}.`,
    },
  });
}

function standardize(samples: readonly IrisSample[]): Standardization {
  const mean = new Float64Array(FEATURE_COUNT);
  const std = new Float64Array(FEATURE_COUNT);
  for (let f = 0; f < FEATURE_COUNT; f++) {
    const column = samples.map(({ features }) => features[f]!);
    mean[f] = column.reduce((sum, value) => sum + value, 0) / column.length;
    std[f] = Math.sqrt(column.reduce((sum, value) => sum + (value - mean[f]!) ** 2, 0) / column.length);
  }
  return { mean, std };
}

function forward(
  weights: MlpWeights,
  x: readonly number[],
): { hidden: Float64Array; probabilities: number[] } {
  const hidden = new Float64Array(HIDDEN_UNITS);
  for (let h = 0; h < HIDDEN_UNITS; h++) {
    let sum = weights.b1[h]!;
    for (let f = 0; f < FEATURE_COUNT; f++) sum += x[f]! * weights.w1[f * HIDDEN_UNITS + h]!;
    hidden[h] = Math.max(0, sum);
  }
  const logits = Array.from(weights.b2);
  for (let c = 0; c < CLASS_COUNT; c++) {
    for (let h = 0; h < HIDDEN_UNITS; h++) logits[c]! += hidden[h]! * weights.w2[h * CLASS_COUNT + c]!;
  }
  // Subtracting the max logit keeps exp() finite; the softmax is unchanged.
  const top = Math.max(...logits);
  const exps = logits.map((logit) => Math.exp(logit - top));
  const total = exps.reduce((a, b) => a + b, 0);
  return { hidden, probabilities: exps.map((e) => e / total) };
}

function glorotUniform(fanIn: number, fanOut: number, random: () => number): Float64Array {
  const limit = Math.sqrt(6 / (fanIn + fanOut));
  return Float64Array.from({ length: fanIn * fanOut }, () => (random() * 2 - 1) * limit);
}

function argmax(values: readonly number[]): number {
  return values.reduce((best, value, i) => (value > values[best]! ? i : best), 0);
}
