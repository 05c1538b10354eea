/**
 * Tasks: a model version whose manifest names one takes text (or images) on the V2 route and answers
 * labels and scores, or embeddings, instead of tensors only (issue 19). The shared vocabulary of the
 * manifest, the registry record, registration's checks and serving.
 */

export const TASK_KINDS = ["text-classification", "feature-extraction", "image-classification"] as const;
export type TaskKind = (typeof TASK_KINDS)[number];

export const POOLINGS = ["mean", "cls"] as const;
export type Pooling = (typeof POOLINGS)[number];

/** The BYTES input a text task request carries: one string per row. */
export const TEXT_INPUT = "text";
/** The BYTES input an image task request carries: one encoded JPEG, PNG or WebP per row. */
export const IMAGE_INPUT = "image";

export const IMAGE_RESIZES = ["stretch", "cover", "contain"] as const;
export const IMAGE_LAYOUTS = ["NCHW", "NHWC"] as const;
export const IMAGE_CHANNELS = ["RGB", "BGR"] as const;
/** A manifest's `image` fields left out: ImageNet's statistics at 224 x 224, as torchvision's models take. */
export const IMAGE_DEFAULTS = {
  size: [224, 224],
  resize: "stretch",
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225],
  scale: 255,
  layout: "NCHW",
  channels: "RGB",
} as const;

/** A task's outputs on the V2 route. */
export const LABEL_OUTPUT = "label";
export const SCORE_OUTPUT = "score";
export const EMBEDDING_OUTPUT = "embedding";

/** The model inputs a tokenizer feeds, by name; a text model takes `input_ids` and any of the others. */
export const TOKENIZER_INPUTS = ["input_ids", "attention_mask", "token_type_ids"] as const;

/** A batch of texts as the model takes them: row-major [batch, length], padded to the longest row. */
export interface TextBatch {
  readonly batch: number;
  readonly length: number;
  readonly inputIds: BigInt64Array;
  readonly attentionMask: BigInt64Array;
  readonly tokenTypeIds: BigInt64Array;
  /** Tokens that were not padding, over the whole batch (OpenAI's `usage.prompt_tokens`). */
  readonly tokenCount: number;
}

/** Turns texts into token ids: a `tokenizer.json` (Hugging Face's format), loaded once per version. */
export interface TextTokenizer {
  /**
   * Encodes each text with the tokenizer's own normalizer, pre-tokenizer, model and post-processor
   * (BERT: `[CLS] ... [SEP]`), truncates a row past `maxLength` keeping its final special token (as
   * Hugging Face's Python and Rust tokenizers do), and pads every row to the longest with the pad token.
   */
  encode(texts: readonly string[], maxLength: number): TextBatch;
}
