import { createHash } from "node:crypto";
import type { ImageSpec, ModelSignature, TaskConfig, TensorSpec } from "#core/model.ts";
import { preprocessImages, sampleImages } from "#core/tasks/image.ts";
import { IMAGE_DEFAULTS, type TextTokenizer, TOKENIZER_INPUTS } from "#core/tasks/task.ts";
import { tokenizerFeeds } from "#core/tasks/text-task.ts";
import { loadTextTokenizer } from "#core/tasks/tokenizer.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import { type Manifest, uploadKey } from "./manifest.ts";

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
  if (kind === "image-classification") return checkImageTask(manifest, signature, labels, model.path, deps);
  const file = manifest.tokenizer ?? "tokenizer.json";
  const key = uploadKey(model.name, model.version, file);
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

/**
 * An image classifier: one FP32 input of rank 4 with 3 channels where the layout puts them, a fixed
 * height and width (if any) equal to the image size, and an FP32 [batch, classes] output; then the
 * whole chain on two generated images (a PNG and a JPEG).
 */
async function checkImageTask(
  manifest: Manifest,
  signature: ModelSignature,
  labels: readonly string[] | undefined,
  path: string,
  deps: TaskCheckDeps,
): Promise<TaskCheck> {
  const [input, ...more] = signature.inputs;
  if (input === undefined || more.length > 0 || input.datatype !== "FP32" || input.shape.length !== 4) {
    return {
      failure: `an image-classification model takes one FP32 input [batch, 3, height, width] or [batch, height, width, 3]; this one takes ${describe(signature.inputs)}`,
    };
  }
  const given = manifest.image ?? {};
  // Without a layout in the manifest, the input's shape says where the 3 channels are.
  const layout =
    given.layout ?? (input.shape[1] !== 3 && input.shape[3] === 3 ? "NHWC" : IMAGE_DEFAULTS.layout);
  const [channels, height, width] =
    layout === "NCHW"
      ? [input.shape[1], input.shape[2], input.shape[3]]
      : [input.shape[3], input.shape[1], input.shape[2]];
  if (typeof channels === "number" && channels !== 3) {
    return {
      failure: `input '${input.name}' has ${channels} channels where the ${layout} layout puts them; images have 3 (set image.layout if the model takes the other one)`,
    };
  }
  const fixed =
    typeof height === "number" && typeof width === "number" ? ([height, width] as const) : undefined;
  const size = given.size ?? fixed ?? IMAGE_DEFAULTS.size;
  if (fixed !== undefined && (size[0] !== fixed[0] || size[1] !== fixed[1])) {
    return {
      failure: `image.size is [${size.join(", ")}] but input '${input.name}' takes ${fixed[0]} x ${fixed[1]} images: leave image.size out or make them agree`,
    };
  }
  const output = signature.outputs.find((spec) => spec.datatype === "FP32" && spec.shape.length === 2);
  if (output === undefined) {
    return {
      failure: `an image-classification model outputs FP32 scores [batch, classes]; this one outputs ${describe(signature.outputs)}`,
    };
  }
  const image: ImageSpec = {
    size: [size[0], size[1]],
    resize: given.resize ?? IMAGE_DEFAULTS.resize,
    mean: given.mean ?? IMAGE_DEFAULTS.mean,
    std: given.std ?? IMAGE_DEFAULTS.std,
    scale: given.scale ?? IMAGE_DEFAULTS.scale,
    layout,
    channels: given.channels ?? IMAGE_DEFAULTS.channels,
  };
  const images = await sampleImages();
  const batch = await preprocessImages(images, image);
  let result: NamedTensor | undefined;
  try {
    [result] = await deps.runSample(
      path,
      [{ name: input.name, type: "float32", dims: batch.dims, data: batch.data }],
      [output.name],
    );
  } catch (error) {
    return {
      failure: `the model did not run on a sample image pre-processed as the manifest says (${batch.dims.join(" x ")}): ${(error as Error).message}`,
    };
  }
  if (result === undefined || result.type !== "float32" || result.dims[0] !== images.length) {
    return { failure: `the model's '${output.name}' did not give one row per sample image` };
  }
  const classes = result.dims.at(-1) ?? 0;
  if (labels !== undefined && labels.length !== classes) {
    return { failure: `labels has ${labels.length} entries; the classifier outputs ${classes} classes` };
  }
  return {
    task: {
      kind: "image-classification",
      input: input.name,
      image,
      output: output.name,
      probabilities: rowsAreDistributions(result.data as Float32Array, images.length, classes),
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
