import { mulberry32 } from "#core/tensor/seeded-random.ts";
import { uniform } from "./mlp.ts";
import { ElemType, encodeModel, floatTensor, type GraphNode, type Tensor } from "./onnx-builder.ts";

export interface TransformerMlpOptions {
  /** @default 6 */
  readonly blocks?: number;
  /** Model width: the size of the input, of every residual stream and of the output. @default 768 */
  readonly width?: number;
  /** Hidden width of each block's feed-forward layer. @default 3072 */
  readonly hidden?: number;
  /** @default 1 */
  readonly seed?: number;
  /** @default "transformer_mlp" */
  readonly name?: string;
}

/**
 * The feed-forward half of a transformer, stacked: each block is `x + W2·relu(W1·LayerNorm(x) + b1) + b2`
 * (pre-norm, residual), and a final LayerNorm. Six blocks of 768/3072 hold 28.3 M FP32 parameters
 * (113 MB), nearly all in MatMul weights: the shape of model that weight quantization is for.
 */
export function buildTransformerMlpModel(options: TransformerMlpOptions = {}): Uint8Array {
  const { blocks = 6, width = 768, hidden = 3072, seed = 1, name = "transformer_mlp" } = options;
  const random = mulberry32(seed);
  const initializers: Tensor[] = [];
  const nodes: GraphNode[] = [];
  const layerNorm = (input: string, prefix: string): string => {
    initializers.push(floatTensor(`${prefix}.gamma`, [width], affine(width, 1, 0.1, random)));
    initializers.push(floatTensor(`${prefix}.beta`, [width], affine(width, 0, 0.1, random)));
    const output = `${prefix}.out`;
    nodes.push({
      opType: "LayerNormalization",
      inputs: [input, `${prefix}.gamma`, `${prefix}.beta`],
      outputs: [output],
      attributes: { axis: { int: -1 }, epsilon: { float: 1e-5 } },
    });
    return output;
  };
  const dense = (input: string, prefix: string, fanIn: number, fanOut: number): string => {
    // Uniform in ±1/sqrt(fan_in), PyTorch's default for Linear layers.
    const limit = 1 / Math.sqrt(fanIn);
    initializers.push(
      floatTensor(`${prefix}.weight`, [fanIn, fanOut], uniform(fanIn * fanOut, limit, random)),
    );
    initializers.push(floatTensor(`${prefix}.bias`, [fanOut], uniform(fanOut, limit, random)));
    nodes.push({ opType: "MatMul", inputs: [input, `${prefix}.weight`], outputs: [`${prefix}.matmul`] });
    nodes.push({ opType: "Add", inputs: [`${prefix}.matmul`, `${prefix}.bias`], outputs: [`${prefix}.out`] });
    return `${prefix}.out`;
  };

  let stream = "input";
  for (let block = 0; block < blocks; block++) {
    const prefix = `block${block}`;
    const normed = layerNorm(stream, `${prefix}.norm`);
    const up = dense(normed, `${prefix}.up`, width, hidden);
    nodes.push({ opType: "Relu", inputs: [up], outputs: [`${prefix}.relu`] });
    const down = dense(`${prefix}.relu`, `${prefix}.down`, hidden, width);
    nodes.push({ opType: "Add", inputs: [stream, down], outputs: [`${prefix}.residual`] });
    stream = `${prefix}.residual`;
  }
  const finalNorm = layerNorm(stream, "final_norm");
  nodes.push({ opType: "Identity", inputs: [finalNorm], outputs: ["output"] });

  return encodeModel({
    graphName: name,
    docString: `Transformer-like MLP: ${blocks} pre-norm residual blocks of ${width}/${hidden} (seed ${seed}).`,
    inputs: [{ name: "input", elemType: ElemType.FLOAT, dims: ["batch", width] }],
    outputs: [{ name: "output", elemType: ElemType.FLOAT, dims: ["batch", width] }],
    initializers,
    nodes,
    metadata: {
      description: `Transformer-like MLP, ${blocks} blocks of ${width}/${hidden}, random weights.`,
    },
  });
}

function affine(count: number, center: number, spread: number, random: () => number): Float32Array {
  const values = new Float32Array(count);
  for (let i = 0; i < count; i++) values[i] = center + (random() * 2 - 1) * spread;
  return values;
}
