import { createHash } from "node:crypto";
import type { ModelSignature, TaskConfig, TensorSpec } from "#core/model.ts";
import { type TextTokenizer, TOKENIZER_INPUTS } from "#core/tasks/task.ts";
import { tokenizerFeeds } from "#core/tasks/text-task.ts";
import { loadTextTokenizer } from "#core/tasks/tokenizer.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import type { Manifest } from "./manifest.ts";

/**
 * Registration's check of a task version (issue 19): the whole chain on a sample, before the version
 * is ready. A problem is the publisher's to fix, so it fails the version with the reason.
 */

/** What the check needs of registration: the bucket's files and a run of the model. */
export interface TaskCheckDeps {
  head(bucket: string, key: string): Promise<{ bytes: number; etag: string } | undefined>;
  readText(bucket: string, key: string): Promise<string | undefined>;
  copyToArtifact(bucket: string, sourceKey: string, etag: string, targetKey: string): Promise<void>;
  /** Runs the model file on `inputs` for `outputs`. */
  runSample(path: string, inputs: readonly NamedTensor[], outputs: readonly string[]): Promise<NamedTensor[]>;
}

/** A tokenizer.json past this size is refused before it is read: Hugging Face's largest are a few MB. */
const MAX_TOKENIZER_BYTES = 32 * 1024 * 1024;
const DEFAULT_MAX_LENGTH = 512;

/** Texts the chain is run on: two rows, so padding and batching are part of the check. */
const SAMPLE_TEXTS = ["Hello, world.", "Registration runs the tokenizer and the model together on a sample."];

export type TaskCheck = { readonly task: TaskConfig } | { readonly failure: string };

function tokenizerArtifactKey(sha256: string): string {
  return `artifacts/sha256/${sha256}.json`;
}

export async function checkTask(
  manifest: Manifest,
  signature: ModelSignature,
  labels: readonly string[] | undefined,
  model: { readonly bucket: string; readonly name: string; readonly version: number; readonly path: string },
  deps: TaskCheckDeps,
): Promise<TaskCheck | undefined> {
  const kind = manifest.task;
  if (kind === undefined) return undefined;
  if (kind === "image-classification") {
    return {
      failure:
        "image-classification is not served by this release yet; text-classification and feature-extraction are",
    };
  }
  const file = manifest.tokenizer ?? "tokenizer.json";
  const key = `models/${model.name}/${model.version}/${file}`;
  const head = await deps.head(model.bucket, key);
  if (head === undefined) {
    return {
      failure: `the manifest names the tokenizer '${file}', but ${key} is not in the bucket: upload it beside the model, before the model`,
    };
  }
  if (head.bytes > MAX_TOKENIZER_BYTES) {
    return { failure: `${file} is ${head.bytes} bytes; a tokenizer may take at most ${MAX_TOKENIZER_BYTES}` };
  }
  const text = await deps.readText(model.bucket, key);
  if (text === undefined)
    return { failure: `${key} went away while the version registered: upload it again` };
  let tokenizer: TextTokenizer;
  try {
    tokenizer = await loadTextTokenizer(text);
  } catch (error) {
    return { failure: `${file} is not a Hugging Face tokenizer: ${(error as Error).message}` };
  }

  const fed = signature.inputs.filter((input) =>
    (TOKENIZER_INPUTS as readonly string[]).includes(input.name),
  );
  const others = signature.inputs.filter((input) => !fed.includes(input));
  if (!fed.some((input) => input.name === "input_ids") || others.length > 0) {
    return {
      failure: `a ${kind} model takes what a tokenizer feeds (input_ids, and attention_mask or token_type_ids if it has them); this one takes ${describe(signature.inputs)}`,
    };
  }
  const notInt64 = fed.find((input) => input.datatype !== "INT64");
  if (notInt64 !== undefined) {
    return {
      failure: `input '${notInt64.name}' is ${notInt64.datatype}; the tokenizer feeds INT64 token ids`,
    };
  }
  const wanted = kind === "text-classification" ? [2] : [3, 2];
  const output = wanted
    .map((rank) => signature.outputs.find((spec) => spec.datatype === "FP32" && spec.shape.length === rank))
    .find((spec) => spec !== undefined);
  if (output === undefined) {
    return {
      failure:
        kind === "text-classification"
          ? `a text-classification model outputs FP32 scores [batch, classes]; this one outputs ${describe(signature.outputs)}`
          : `a feature-extraction model outputs FP32 token states [batch, tokens, width] or embeddings [batch, width]; this one outputs ${describe(signature.outputs)}`,
    };
  }

  const maxLength = manifest.maxLength ?? DEFAULT_MAX_LENGTH;
  const batch = tokenizer.encode(SAMPLE_TEXTS, maxLength);
  const inputs = tokenizerFeeds(signature, batch);
  let result: NamedTensor | undefined;
  try {
    [result] = await deps.runSample(model.path, inputs, [output.name]);
  } catch (error) {
    return {
      failure: `the model did not run on the tokenizer's ids for a sample text: ${(error as Error).message}`,
    };
  }
  if (result === undefined || result.type !== "float32" || result.dims[0] !== batch.batch) {
    return { failure: `the model's '${output.name}' did not give one row per sample text` };
  }
  const width = result.dims.at(-1) ?? 0;
  let probabilities = false;
  if (kind === "text-classification") {
    if (labels !== undefined && labels.length !== width) {
      return { failure: `labels has ${labels.length} entries; the classifier outputs ${width} classes` };
    }
    probabilities = rowsAreDistributions(result.data as Float32Array, batch.batch, width);
  }

  const bytes = Buffer.from(text, "utf8");
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  const artifact = tokenizerArtifactKey(sha256);
  await deps.copyToArtifact(model.bucket, key, head.etag, artifact);
  return {
    task: {
      kind,
      tokenizer: { bucket: model.bucket, key: artifact, sha256, bytes: bytes.length },
      maxLength,
      output: output.name,
      pooling: manifest.pooling ?? "mean",
      normalize: manifest.normalize ?? true,
      probabilities,
    },
  };
}

/** A classifier whose rows already sum to one in [0, 1] ends in a softmax: no second one on top. */
function rowsAreDistributions(values: Float32Array, rows: number, width: number): boolean {
  for (let row = 0; row < rows; row++) {
    let sum = 0;
    for (let i = row * width; i < (row + 1) * width; i++) {
      const value = values[i] as number;
      if (!(value >= 0 && value <= 1)) return false;
      sum += value;
    }
    if (Math.abs(sum - 1) > 1e-3) return false;
  }
  return true;
}

function describe(specs: readonly TensorSpec[]): string {
  return (
    specs.map((spec) => `${spec.name} ${spec.datatype} [${spec.shape.join(", ")}]`).join(", ") || "nothing"
  );
}
