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
  } = options;
  for (const [field, value] of [
    ["hidden", hidden],
    ["vocabSize", vocabSize],
  ] as const) {
    if (!Number.isInteger(value) || value < 1)
      throw new Error(`${field} must be a positive integer, got ${value}`);
  }
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
    int64Tensor("sequence_axis", [1], [1n]),
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
