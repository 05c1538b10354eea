import { InvalidRequestError } from "#core/errors.ts";
import type {
  ArtifactRef,
  ImageTaskConfig,
  ModelSignature,
  ServableVersion,
  TaskConfig,
  TextTaskConfig,
} from "#core/model.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import type { InferRequest } from "#core/v2/wire.ts";
import { classify, pool } from "./outputs.ts";
import {
  EMBEDDING_OUTPUT,
  IMAGE_INPUT,
  LABEL_OUTPUT,
  SCORE_OUTPUT,
  TEXT_INPUT,
  type TextBatch,
  type TextTokenizer,
  TOKENIZER_INPUTS,
} from "./task.ts";

/** A task's version: its record holds the task registration checked. */
export type TaskVersion = ServableVersion & { readonly task: TaskConfig };
export type TextTaskVersion = ServableVersion & { readonly task: TextTaskConfig };
export type ImageTaskVersion = ServableVersion & { readonly task: ImageTaskConfig };

/** Loads a version's tokenizer from its artifact, once per sha256. */
export interface TokenizerSource {
  tokenizer(ref: ArtifactRef): Promise<TextTokenizer>;
}

/** The most texts in one request: each is a row of the model's batch. */
export const MAX_TEXTS = 2048;

export function hasTask(version: ServableVersion): version is TaskVersion {
  return version.task !== undefined;
}

export function isTextTask(version: ServableVersion): version is TextTaskVersion {
  return version.task !== undefined && version.task.kind !== "image-classification";
}

export function isImageTask(version: ServableVersion): version is ImageTaskVersion {
  return version.task?.kind === "image-classification";
}

/**
 * Whether a request for a task version is a task request: one input named `text` (text tasks) or
 * `image` (image tasks); any other request takes the tensor route.
 */
export function isTaskRequest(version: TaskVersion, request: InferRequest): boolean {
  const [first] = request.inputs;
  const name = version.task.kind === "image-classification" ? IMAGE_INPUT : TEXT_INPUT;
  if (request.inputs.length !== 1 || first?.name !== name) return false;
  // A model whose own tensor input has the task input's name keeps its tensor route for tensors.
  return first.datatype === "BYTES" || !version.signature.inputs.some((input) => input.name === name);
}

/** The texts of a task request: a BYTES tensor of shape [N] or [N, 1], N at least one. */
export function textsOf(input: NamedTensor): string[] {
  const { dims, data } = input;
  const rows = dims[0] ?? 0;
  if (input.type !== "string" || !(dims.length === 1 || (dims.length === 2 && dims[1] === 1)) || rows < 1) {
    throw new InvalidRequestError(
      `input '${TEXT_INPUT}' must be BYTES of shape [N] (one string per row), got ${input.type === "string" ? "BYTES" : input.type} [${dims.join(", ")}]`,
    );
  }
  if (rows > MAX_TEXTS)
    throw new InvalidRequestError(`input '${TEXT_INPUT}' has ${rows} texts; at most ${MAX_TEXTS}`);
  return [...(data as readonly string[])];
}

/** `parameters.top_k`: how many labels per row, 1 by default, at most the number of classes. */
export function topKOf(request: InferRequest): number {
  const value = request.parameters?.top_k;
  if (value === undefined) return 1;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
    throw new InvalidRequestError(
      `parameters.top_k must be a positive integer, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

/** The model's inputs from the tokenizer's batch, by the names the model takes. */
export function tokenizerFeeds(signature: ModelSignature, batch: TextBatch): NamedTensor[] {
  const dims = [batch.batch, batch.length];
  const data = {
    input_ids: batch.inputIds,
    attention_mask: batch.attentionMask,
    token_type_ids: batch.tokenTypeIds,
  };
  return signature.inputs
    .filter((spec) => (TOKENIZER_INPUTS as readonly string[]).includes(spec.name))
    .map((spec) => ({ name: spec.name, type: "int64", dims, data: data[spec.name as keyof typeof data] }));
}

/** `label` and `score` [rows, k] from a classifier's output [rows, width]: its labels, or class indices. */
export function classificationOutputs(
  version: ServableVersion,
  output: NamedTensor,
  rows: number,
  topK: number,
  probabilities: boolean,
): NamedTensor[] {
  if (output.type !== "float32") throw new Error(`output '${output.name}' is ${output.type}, not float32`);
  const width = output.dims.at(-1) ?? 0;
  const k = Math.min(topK, width);
  // A manifest uploaded after registration may change the labels: class indices then, not a 500.
  const names = version.labels?.length === width ? version.labels : undefined;
  const { labels, scores } = classify(output.data as Float32Array, rows, width, names, k, probabilities);
  return [
    { name: LABEL_OUTPUT, type: "string", dims: [rows, k], data: labels },
    { name: SCORE_OUTPUT, type: "float32", dims: [rows, k], data: scores },
  ];
}

/** The task's outputs from the model's: labels and scores, or one embedding per text. */
export function taskOutputs(
  version: TextTaskVersion,
  output: NamedTensor,
  batch: TextBatch,
  topK: number,
): NamedTensor[] {
  const { task } = version;
  if (output.type !== "float32") throw new Error(`output '${task.output}' is ${output.type}, not float32`);
  const values = output.data as Float32Array;
  if (task.kind === "text-classification")
    return classificationOutputs(version, output, batch.batch, topK, task.probabilities);
  const width = output.dims.at(-1) ?? 0;
  // Per-token states are pooled; a model that outputs one vector per text is used as it is.
  const perToken = output.dims.length === 3;
  const length = perToken ? (output.dims[1] ?? 0) : 1;
  const mask = perToken ? batch.attentionMask : new BigInt64Array(batch.batch).fill(1n);
  const embedding = pool(
    values,
    batch.batch,
    length,
    width,
    mask,
    perToken ? task.pooling : "cls",
    task.normalize,
  );
  return [{ name: EMBEDDING_OUTPUT, type: "float32", dims: [batch.batch, width], data: embedding }];
}
