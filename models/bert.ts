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

/** bert-base-uncased's vocabulary size: the ids of `models/fixtures/bert-uncased/tokenizer.json`. */
export const BERT_VOCAB_SIZE = 30522;

export interface BertEmbeddingOptions {
  /** Width of every hidden state. 16 keeps the word embeddings under 2 MB. @default 16 */
  readonly hidden?: number;
  /** @default BERT_VOCAB_SIZE */
  readonly vocabSize?: number;
  /** Whether the model takes a `token_type_ids` input (DistilBERT-style models do not). @default true */
  readonly tokenTypeIds?: boolean;
  /** @default 1 */
  readonly seed?: number;
  /** @default "tiny_bert" */
  readonly name?: string;
  /**
   * Transformer encoder layers (multi-head self-attention over the attention mask, feed-forward 4 ×
   * hidden with GELU, residuals and LayerNorm, as BERT's) in place of the mean-of-sequence stand-in:
   * 6 layers at hidden 384 with 12 heads is all-MiniLM-L6-v2's shape and cost. @default 0
   */
  readonly layers?: number;
  /** Attention heads per layer; `hidden` must be a multiple. @default 12 */
  readonly heads?: number;
}

export interface BertClassifierOptions extends BertEmbeddingOptions {
  /** Number of classes: the width of `logits`. */
  readonly labels: number;
}

/**
 * A tiny BERT-shaped encoder with random weights, fed by name like a Hugging Face export: `input_ids`,
 * `attention_mask` (and `token_type_ids`), INT64 [batch_size, sequence_length], answering
 * `last_hidden_state` FP32 [batch_size, sequence_length, hidden].
 */
export function buildBertEmbeddingModel(options: BertEmbeddingOptions = {}): Uint8Array {
  const encoder = bertEncoder(options);
  return encodeModel({
    ...encoder.spec,
    docString: `Tiny BERT-shaped encoder, hidden ${encoder.hidden}, seeded random weights (seed ${encoder.seed}).`,
    outputs: [
      {
        name: "last_hidden_state",
        elemType: ElemType.FLOAT,
        dims: ["batch_size", "sequence_length", encoder.hidden],
      },
    ],
    metadata: { description: "Tiny BERT-shaped encoder, random weights.", seed: String(encoder.seed) },
  });
}

/** The encoder of `buildBertEmbeddingModel` plus a classifier on the [CLS] (first) token: `logits` [batch_size, labels]. */
export function buildBertClassifierModel(options: BertClassifierOptions): Uint8Array {
  const { labels } = options;
  if (!Number.isInteger(labels) || labels < 1)
    throw new Error(`a classifier needs a positive integer number of labels, got ${labels}`);
  const encoder = bertEncoder(options);
  const { hidden, random } = encoder;
  const limit = 1 / Math.sqrt(hidden);
  const initializers: Tensor[] = [
    ...encoder.spec.initializers,
    int64Tensor("cls_index", [], [0n]),
    floatTensor("classifier.weight", [hidden, labels], uniform(hidden * labels, limit, random)),
    floatTensor("classifier.bias", [labels], uniform(labels, limit, random)),
  ];
  const nodes: GraphNode[] = [
    ...encoder.spec.nodes,
    // Gather with a scalar index drops the sequence axis: [batch, seq, hidden] -> [batch, hidden].
    {
      opType: "Gather",
      inputs: ["last_hidden_state", "cls_index"],
      outputs: ["cls"],
      attributes: { axis: { int: 1 } },
    },
    { opType: "MatMul", inputs: ["cls", "classifier.weight"], outputs: ["classifier.matmul"] },
    { opType: "Add", inputs: ["classifier.matmul", "classifier.bias"], outputs: ["logits"] },
  ];
  return encodeModel({
    ...encoder.spec,
    docString: `Tiny BERT-shaped classifier, hidden ${hidden}, ${labels} labels, seeded random weights (seed ${encoder.seed}).`,
    outputs: [{ name: "logits", elemType: ElemType.FLOAT, dims: ["batch_size", labels] }],
    initializers,
    nodes,
    metadata: {
      description: `Tiny BERT-shaped classifier, ${labels} labels, random weights.`,
      seed: String(encoder.seed),
    },
  });
}

/**
 * Embeddings (word + token type), masked, plus the masked mean of the sequence as a stand-in for
 * attention (so every position, [CLS] included, depends on the whole text and on the mask), then
 * dense + Tanh: `last_hidden_state`.
 */
function bertEncoder(options: BertEmbeddingOptions) {
  const {
    hidden = 16,
    vocabSize = BERT_VOCAB_SIZE,
    tokenTypeIds = true,
    seed = 1,
    name = "tiny_bert",
    layers = 0,
    heads = 12,
  } = options;
  for (const [field, value] of [
    ["hidden", hidden],
    ["vocabSize", vocabSize],
    ["heads", heads],
  ] as const) {
    if (!Number.isInteger(value) || value < 1)
      throw new Error(`${field} must be a positive integer, got ${value}`);
  }
  if (!Number.isInteger(layers) || layers < 0) throw new Error(`layers must be 0 or more, got ${layers}`);
  if (layers > 0 && hidden % heads !== 0)
    throw new Error(`hidden (${hidden}) must be a multiple of heads (${heads})`);
  const random = mulberry32(seed);
  const initializers: Tensor[] = [
    floatTensor("word_embeddings", [vocabSize, hidden], uniform(vocabSize * hidden, 0.5, random)),
  ];
  const nodes: GraphNode[] = [
    { opType: "Gather", inputs: ["word_embeddings", "input_ids"], outputs: ["words"] },
  ];
  let embeddings = "words";
  if (tokenTypeIds) {
    initializers.push(floatTensor("token_type_embeddings", [2, hidden], uniform(2 * hidden, 0.5, random)));
    nodes.push(
      { opType: "Gather", inputs: ["token_type_embeddings", "token_type_ids"], outputs: ["types"] },
      { opType: "Add", inputs: ["words", "types"], outputs: ["embeddings"] },
    );
    embeddings = "embeddings";
  }
  const limit = 1 / Math.sqrt(hidden);
  initializers.push(
    floatTensor("dense.weight", [hidden, hidden], uniform(hidden * hidden, limit, random)),
    floatTensor("dense.bias", [hidden], uniform(hidden, limit, random)),
    int64Tensor("last_axis", [1], [-1n]),
    floatTensor("one", [], Float32Array.of(1)),
  );
  nodes.push(
    {
      opType: "Cast",
      inputs: ["attention_mask"],
      outputs: ["mask"],
      attributes: { to: { int: ElemType.FLOAT } },
    },
    { opType: "Unsqueeze", inputs: ["mask", "last_axis"], outputs: ["mask3"] },
    // Padding contributes zeros, so neither its own state nor the context below depends on the pad id.
    { opType: "Mul", inputs: [embeddings, "mask3"], outputs: ["masked"] },
  );
  if (layers > 0) {
    const layer = attentionLayers({ hidden, layers, heads, random });
    initializers.push(...layer.initializers);
    nodes.push(...layer.nodes);
  } else {
    initializers.push(int64Tensor("sequence_axis", [1], [1n]));
    nodes.push(
      {
        opType: "ReduceSum",
        inputs: ["masked", "sequence_axis"],
        outputs: ["context.sum"],
        attributes: { keepdims: { int: 1 } },
      },
      {
        opType: "ReduceSum",
        inputs: ["mask3", "sequence_axis"],
        outputs: ["context.count"],
        attributes: { keepdims: { int: 1 } },
      },
      { opType: "Max", inputs: ["context.count", "one"], outputs: ["context.divisor"] },
      { opType: "Div", inputs: ["context.sum", "context.divisor"], outputs: ["context"] },
      { opType: "Add", inputs: ["masked", "context"], outputs: ["mixed"] },
    );
  }
  nodes.push(
    { opType: "MatMul", inputs: ["mixed", "dense.weight"], outputs: ["dense.matmul"] },
    { opType: "Add", inputs: ["dense.matmul", "dense.bias"], outputs: ["dense.out"] },
    { opType: "Tanh", inputs: ["dense.out"], outputs: ["last_hidden_state"] },
  );
  const inputNames = tokenTypeIds
    ? ["input_ids", "attention_mask", "token_type_ids"]
    : ["input_ids", "attention_mask"];
  return {
    hidden,
    seed,
    random,
    spec: {
      graphName: name,
      inputs: inputNames.map((input) => ({
        name: input,
        elemType: ElemType.INT64,
        dims: ["batch_size", "sequence_length"],
      })),
      initializers,
      nodes,
    },
  };
}

/**
 * BERT's encoder layers on `masked` [batch, seq, hidden] into `mixed`: per layer, multi-head
 * self-attention whose scores are pushed to -10000 at padding (`mask` [batch, seq]), output dense,
 * residual and LayerNorm, then GELU feed-forward (4 × hidden), residual and LayerNorm.
 */
function attentionLayers(options: { hidden: number; layers: number; heads: number; random: () => number }) {
  const { hidden, layers, heads, random } = options;
  const head = hidden / heads;
  const limit = 1 / Math.sqrt(hidden);
  const initializers: Tensor[] = [
    int64Tensor("attention.heads_shape", [4], [0n, 0n, BigInt(heads), BigInt(head)]),
    int64Tensor("attention.hidden_shape", [3], [0n, 0n, BigInt(hidden)]),
    int64Tensor("attention.mask_axes", [2], [1n, 2n]),
    floatTensor("attention.scale", [], Float32Array.of(1 / Math.sqrt(head))),
    floatTensor("attention.mask_fill", [], Float32Array.of(-10000)),
    floatTensor("gelu.sqrt2", [], Float32Array.of(Math.SQRT2)),
    floatTensor("gelu.half", [], Float32Array.of(0.5)),
  ];
  const nodes: GraphNode[] = [
    // (1 - mask) * -10000, as [batch, 1, 1, seq]: added to every head's scores.
    { opType: "Sub", inputs: ["one", "mask"], outputs: ["attention.padding"] },
    { opType: "Mul", inputs: ["attention.padding", "attention.mask_fill"], outputs: ["attention.bias2"] },
    { opType: "Unsqueeze", inputs: ["attention.bias2", "attention.mask_axes"], outputs: ["attention.bias"] },
  ];
  const dense = (prefix: string, input: string, rows: number, columns: number, output: string) => {
    initializers.push(
      floatTensor(`${prefix}.weight`, [rows, columns], uniform(rows * columns, limit, random)),
      floatTensor(`${prefix}.bias`, [columns], uniform(columns, limit, random)),
    );
    nodes.push(
      { opType: "MatMul", inputs: [input, `${prefix}.weight`], outputs: [`${prefix}.matmul`] },
      { opType: "Add", inputs: [`${prefix}.matmul`, `${prefix}.bias`], outputs: [output] },
    );
  };
  const layerNorm = (prefix: string, input: string, output: string) => {
    initializers.push(
      floatTensor(`${prefix}.gamma`, [hidden], new Float32Array(hidden).fill(1)),
      floatTensor(`${prefix}.beta`, [hidden], new Float32Array(hidden)),
    );
    nodes.push({
      opType: "LayerNormalization",
      inputs: [input, `${prefix}.gamma`, `${prefix}.beta`],
      outputs: [output],
      attributes: { axis: { int: -1 }, epsilon: { float: 1e-12 } },
    });
  };
  let x = "masked";
  for (let l = 0; l < layers; l++) {
    const p = `layer${l}`;
    for (const part of ["query", "key", "value"]) {
      dense(`${p}.${part}`, x, hidden, hidden, `${p}.${part}.out`);
      nodes.push({
        opType: "Reshape",
        inputs: [`${p}.${part}.out`, "attention.heads_shape"],
        outputs: [`${p}.${part}.heads`],
      });
    }
    nodes.push(
      // [batch, heads, seq, head] for queries and values, [batch, heads, head, seq] for keys.
      {
        opType: "Transpose",
        inputs: [`${p}.query.heads`],
        outputs: [`${p}.q`],
        attributes: { perm: { ints: [0, 2, 1, 3] } },
      },
      {
        opType: "Transpose",
        inputs: [`${p}.key.heads`],
        outputs: [`${p}.k`],
        attributes: { perm: { ints: [0, 2, 3, 1] } },
      },
      {
        opType: "Transpose",
        inputs: [`${p}.value.heads`],
        outputs: [`${p}.v`],
        attributes: { perm: { ints: [0, 2, 1, 3] } },
      },
      { opType: "MatMul", inputs: [`${p}.q`, `${p}.k`], outputs: [`${p}.scores.raw`] },
      { opType: "Mul", inputs: [`${p}.scores.raw`, "attention.scale"], outputs: [`${p}.scores.scaled`] },
      { opType: "Add", inputs: [`${p}.scores.scaled`, "attention.bias"], outputs: [`${p}.scores`] },
      {
        opType: "Softmax",
        inputs: [`${p}.scores`],
        outputs: [`${p}.probs`],
        attributes: { axis: { int: -1 } },
      },
      { opType: "MatMul", inputs: [`${p}.probs`, `${p}.v`], outputs: [`${p}.context.heads`] },
      {
        opType: "Transpose",
        inputs: [`${p}.context.heads`],
        outputs: [`${p}.context.t`],
        attributes: { perm: { ints: [0, 2, 1, 3] } },
      },
      { opType: "Reshape", inputs: [`${p}.context.t`, "attention.hidden_shape"], outputs: [`${p}.context`] },
    );
    dense(`${p}.attention.output`, `${p}.context`, hidden, hidden, `${p}.attention.dense`);
    nodes.push({ opType: "Add", inputs: [x, `${p}.attention.dense`], outputs: [`${p}.attention.residual`] });
    layerNorm(`${p}.attention.norm`, `${p}.attention.residual`, `${p}.attention.out`);
    dense(`${p}.intermediate`, `${p}.attention.out`, hidden, 4 * hidden, `${p}.intermediate.out`);
    // GELU as BERT's: 0.5 x (1 + erf(x / sqrt 2)).
    nodes.push(
      { opType: "Div", inputs: [`${p}.intermediate.out`, "gelu.sqrt2"], outputs: [`${p}.gelu.scaled`] },
      { opType: "Erf", inputs: [`${p}.gelu.scaled`], outputs: [`${p}.gelu.erf`] },
      { opType: "Add", inputs: [`${p}.gelu.erf`, "one"], outputs: [`${p}.gelu.plus`] },
      { opType: "Mul", inputs: [`${p}.intermediate.out`, `${p}.gelu.plus`], outputs: [`${p}.gelu.product`] },
      { opType: "Mul", inputs: [`${p}.gelu.product`, "gelu.half"], outputs: [`${p}.gelu`] },
    );
    dense(`${p}.output`, `${p}.gelu`, 4 * hidden, hidden, `${p}.output.dense`);
    nodes.push({
      opType: "Add",
      inputs: [`${p}.attention.out`, `${p}.output.dense`],
      outputs: [`${p}.output.residual`],
    });
    layerNorm(`${p}.output.norm`, `${p}.output.residual`, `${p}.out`);
    x = `${p}.out`;
  }
  nodes.push({ opType: "Identity", inputs: [x], outputs: ["mixed"] });
  return { initializers, nodes };
}
