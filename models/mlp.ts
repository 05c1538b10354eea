import { mulberry32 } from "#core/tensor/seeded-random.ts";
import { ElemType, encodeModel, floatTensor, type GraphNode, type Tensor } from "./onnx-builder.ts";

export interface MlpOptions {
  /** Layer widths, input first: [784, 128, 10] is one hidden layer of 128. */
  readonly layers: readonly number[];
  /** @default 1 */
  readonly seed?: number;
  /** @default "mlp" */
  readonly name?: string;
}

/** 1024 -> 2048 -> 2048 -> 2048 -> 1024: 12.6 M FP32 parameters, a 50.3 MB file. */
export const MLP_50MB_LAYERS: readonly number[] = [1024, 2048, 2048, 2048, 1024];

/** A dense ReLU network with random weights: MatMul + Add (+ Relu except on the last layer). */
export function buildMlpModel(options: MlpOptions): Uint8Array {
  const { layers, seed = 1, name = "mlp" } = options;
  if (layers.length < 2 || layers.some((width) => !Number.isInteger(width) || width < 1)) {
    throw new Error(`an MLP needs at least two positive integer layer widths, got [${layers.join(", ")}]`);
  }
  const random = mulberry32(seed);
  const initializers: Tensor[] = [];
  const nodes: GraphNode[] = [];
  let activation = "input";
  for (let layer = 0; layer + 1 < layers.length; layer++) {
    const fanIn = layers[layer]!;
    const fanOut = layers[layer + 1]!;
    const isLast = layer + 2 === layers.length;
    const weights = `layer${layer}.weight`;
    const bias = `layer${layer}.bias`;
    // Uniform in ±1/sqrt(fan_in) keeps activations of the same order through every layer.
    initializers.push(
      floatTensor(weights, [fanIn, fanOut], uniform(fanIn * fanOut, 1 / Math.sqrt(fanIn), random)),
    );
    initializers.push(floatTensor(bias, [fanOut], uniform(fanOut, 1 / Math.sqrt(fanIn), random)));
    const product = `layer${layer}.matmul`;
    const sum = isLast ? "output" : `layer${layer}.add`;
    nodes.push({ opType: "MatMul", inputs: [activation, weights], outputs: [product] });
    nodes.push({ opType: "Add", inputs: [product, bias], outputs: [sum] });
    activation = sum;
    if (!isLast) {
      activation = `layer${layer}.relu`;
      nodes.push({ opType: "Relu", inputs: [sum], outputs: [activation] });
    }
  }
  return encodeModel({
    graphName: name,
    docString: `Dense MLP ${layers.join("-")} with seeded random weights (seed ${seed}), for load and size tests.`,
    inputs: [{ name: "input", elemType: ElemType.FLOAT, dims: ["batch", layers[0]!] }],
    outputs: [{ name: "output", elemType: ElemType.FLOAT, dims: ["batch", layers.at(-1)!] }],
    initializers,
    nodes,
    metadata: { description: `Dense MLP ${layers.join("-")}, random weights.`, seed: String(seed) },
  });
}

/** `count` values uniform in ±`limit`, drawn in order from `random`: the random models' weights. */
export function uniform(count: number, limit: number, random: () => number): Float32Array {
  const values = new Float32Array(count);
  for (let i = 0; i < count; i++) values[i] = (random() * 2 - 1) * limit;
  return values;
}
