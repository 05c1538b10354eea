import { mulberry32 } from "#core/tensor/seeded-random.ts";
import { uniform } from "./mlp.ts";
import {
  ElemType,
  encodeModel,
  floatTensor,
  type GraphNode,
  int64Tensor,
  type Tensor,
} from "./onnx-builder.ts";

export interface CnnOptions {
  /** @default 1 */
  readonly seed?: number;
  /** @default "small_cnn" */
  readonly name?: string;
}

export const CNN_CLASSES = 10;

/**
 * A small image classifier with random weights, CIFAR-shaped: `image` FP32 [batch, 3, 32, 32] ->
 * Conv(16) Relu MaxPool -> Conv(32) Relu MaxPool -> Flatten -> Gemm(128) Relu -> Gemm(10) -> `logits`.
 * Most of its time goes to the convolutions, most of its bytes to the first Gemm.
 */
export function buildCnnModel(options: CnnOptions = {}): Uint8Array {
  const { seed = 1, name = "small_cnn" } = options;
  const random = mulberry32(seed);
  const initializers: Tensor[] = [];
  const nodes: GraphNode[] = [];

  const conv = (input: string, prefix: string, inChannels: number, outChannels: number): string => {
    const fanIn = inChannels * 9;
    // He-uniform keeps ReLU activations of the same order from layer to layer.
    const limit = Math.sqrt(6 / fanIn);
    initializers.push(
      floatTensor(
        `${prefix}.weight`,
        [outChannels, inChannels, 3, 3],
        uniform(outChannels * fanIn, limit, random),
      ),
      floatTensor(`${prefix}.bias`, [outChannels], uniform(outChannels, 0.1, random)),
    );
    nodes.push(
      {
        opType: "Conv",
        inputs: [input, `${prefix}.weight`, `${prefix}.bias`],
        outputs: [`${prefix}.conv`],
        attributes: { kernel_shape: { ints: [3, 3] }, pads: { ints: [1, 1, 1, 1] } },
      },
      { opType: "Relu", inputs: [`${prefix}.conv`], outputs: [`${prefix}.relu`] },
      {
        opType: "MaxPool",
        inputs: [`${prefix}.relu`],
        outputs: [`${prefix}.pool`],
        attributes: { kernel_shape: { ints: [2, 2] }, strides: { ints: [2, 2] } },
      },
    );
    return `${prefix}.pool`;
  };
  // Gemm with transB = 1: weights stored [out, in], as PyTorch exports Linear layers.
  const gemm = (input: string, prefix: string, fanIn: number, fanOut: number, output: string): string => {
    const limit = Math.sqrt(6 / fanIn);
    initializers.push(
      floatTensor(`${prefix}.weight`, [fanOut, fanIn], uniform(fanOut * fanIn, limit, random)),
      floatTensor(`${prefix}.bias`, [fanOut], uniform(fanOut, 0.1, random)),
    );
    nodes.push({
      opType: "Gemm",
      inputs: [input, `${prefix}.weight`, `${prefix}.bias`],
      outputs: [output],
      attributes: { transB: { int: 1 } },
    });
    return output;
  };

  const features = conv(conv("image", "conv1", 3, 16), "conv2", 16, 32);
  initializers.push(int64Tensor("flat_shape", [2], [0n, -1n]));
  nodes.push({ opType: "Reshape", inputs: [features, "flat_shape"], outputs: ["flat"] });
  const hidden = gemm("flat", "fc1", 32 * 8 * 8, 128, "fc1.out");
  nodes.push({ opType: "Relu", inputs: [hidden], outputs: ["fc1.relu"] });
  gemm("fc1.relu", "fc2", 128, CNN_CLASSES, "logits");

  return encodeModel({
    graphName: name,
    docString: `Small CNN classifier for 3x32x32 images, ${CNN_CLASSES} classes, random weights (seed ${seed}).`,
    inputs: [{ name: "image", elemType: ElemType.FLOAT, dims: ["batch", 3, 32, 32] }],
    outputs: [{ name: "logits", elemType: ElemType.FLOAT, dims: ["batch", CNN_CLASSES] }],
    initializers,
    nodes,
    metadata: { description: "Small CNN (Conv/Relu/MaxPool/Gemm), random weights." },
  });
}
