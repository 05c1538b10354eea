import * as z from "zod";
import { MODEL_NAME_PATTERN, SIDE_FILE_PATTERN, VERSION_PATTERN } from "#core/model.ts";
import { IMAGE_CHANNELS, IMAGE_LAYOUTS, IMAGE_RESIZES, POOLINGS, TASK_KINDS } from "#core/tasks/task.ts";
import { describeZodError, requestInputSchema } from "#core/v2/wire.ts";

/** Variants whose outputs differ from the original's by construction: they serve only when a person says so. */
export const LOSSY_VARIANT_KINDS = ["int8-dynamic", "fp16"] as const;
export type LossyVariantKind = (typeof LOSSY_VARIANT_KINDS)[number];

/** A version's payload capture, as a manifest or an operator's admin call sets it. */
export const captureSettingsSchema = z
  .object({
    samplePercent: z.number().min(0).max(100),
    requests: z.boolean().default(true),
    responses: z.boolean().default(true),
  })
  .strict();

export { SIDE_FILE_PATTERN } from "#core/model.ts";

/** The largest version an upload key may carry: registry numbers stay 32-bit. */
export const MAX_VERSION = 2 ** 31 - 1;

/**
 * The optional `models/<name>/<version>/maas.json` beside a model. Upload it before the model: it is
 * read when the model registers. One uploaded later updates only the descriptive fields.
 */
const manifestSchema = z
  .object({
    description: z.string().max(4096).optional(),
    labels: z.array(z.string().max(256)).max(100_000).optional(),
    tags: z.record(z.string().max(128), z.string().max(256)).optional(),
    /** Overrides the size-based choice between Lambda and SageMaker. */
    target: z.enum(["lambda", "sagemaker"]).optional(),
    /** Example requests' inputs: used by the optimizer's parity gate instead of generated ones. */
    samples: z
      .array(z.object({ inputs: z.array(requestInputSchema).min(1) }))
      .max(64)
      .optional(),
    /**
     * Sampled capture of requests and responses to S3 (`capture/<model>/<version>/...`), for audits
     * and drift checks; an operator can change it per version later.
     */
    capture: captureSettingsSchema.optional(),
    /** What the model does with text or images on the V2 route (issue 19), beside the tensor route. */
    task: z.enum(TASK_KINDS).optional(),
    /** A file beside the model, uploaded before it: Hugging Face's tokenizer.json. Text tasks need one. */
    tokenizer: z
      .string()
      .regex(SIDE_FILE_PATTERN, "a file name beside the model, such as tokenizer.json")
      .optional(),
    /** Tokens per row, past which a text is truncated. */
    maxLength: z.number().int().min(1).max(8192).optional(),
    /** feature-extraction: per-token states to one vector. @default "mean" */
    pooling: z.enum(POOLINGS).optional(),
    /** feature-extraction: L2-normalize the embedding. @default true */
    normalize: z.boolean().optional(),
    /**
     * image-classification: how an encoded image becomes the model's input. Fields left out take the
     * defaults in IMAGE_DEFAULTS; `size` left out takes the model's own fixed height and width, if any.
     */
    image: z
      .object({
        size: z.tuple([z.number().int().min(1).max(4096), z.number().int().min(1).max(4096)]).optional(),
        resize: z.enum(IMAGE_RESIZES).optional(),
        mean: z.tuple([z.number(), z.number(), z.number()]).optional(),
        std: z.tuple([z.number().positive(), z.number().positive(), z.number().positive()]).optional(),
        scale: z.number().positive().optional(),
        layout: z.enum(IMAGE_LAYOUTS).optional(),
        channels: z.enum(IMAGE_CHANNELS).optional(),
      })
      .strict()
      .optional(),
    /** Serve the original upload even if an optimized variant passes the parity gate. */
    pinOriginal: z.boolean().optional(),
    optimize: z
      .object({
        /**
         * Lossy variant kinds the optimizer may select when one passes the parity gate and is the
         * fastest; without this only lossless variants are selected.
         */
        allowLossy: z.array(z.enum(LOSSY_VARIANT_KINDS)).max(LOSSY_VARIANT_KINDS.length),
      })
      .strict()
      .optional(),
  })
  .strict()
  .refine((manifest) => !(manifest.pinOriginal && (manifest.optimize?.allowLossy.length ?? 0) > 0), {
    message: "pinOriginal and optimize.allowLossy contradict each other: keep one",
    path: ["optimize", "allowLossy"],
  })
  .refine(
    (manifest) =>
      (manifest.task !== "text-classification" && manifest.task !== "feature-extraction") ||
      manifest.tokenizer !== undefined,
    {
      message:
        'a text task needs a tokenizer: "tokenizer": "tokenizer.json", uploaded beside the model before it',
      path: ["tokenizer"],
    },
  )
  .refine(
    (manifest) =>
      manifest.task !== undefined ||
      (manifest.tokenizer ?? manifest.maxLength ?? manifest.pooling ?? manifest.normalize) === undefined,
    {
      message: 'tokenizer, maxLength, pooling and normalize belong to a task: name one in "task"',
      path: ["task"],
    },
  )
  .refine(
    (manifest) =>
      manifest.task !== "image-classification" ||
      (manifest.tokenizer ?? manifest.maxLength ?? manifest.pooling ?? manifest.normalize) === undefined,
    {
      message: "tokenizer, maxLength, pooling and normalize belong to text tasks, not image-classification",
      path: ["task"],
    },
  )
  .refine((manifest) => manifest.image === undefined || manifest.task === "image-classification", {
    message: 'image belongs to "task": "image-classification"',
    path: ["image"],
  });

export type Manifest = z.infer<typeof manifestSchema>;

export class InvalidManifestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidManifestError";
  }
}

export function parseManifest(text: string): Manifest {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new InvalidManifestError(`maas.json is not valid JSON: ${(error as Error).message}`);
  }
  const result = manifestSchema.safeParse(json);
  if (!result.success)
    throw new InvalidManifestError(`maas.json is invalid: ${describeZodError(result.error)}`);
  return result.data;
}

/** Object keys publishers write: `models/<name>/<version>/model.onnx` and its optional manifest. */
const UPLOAD_KEY = /^models\/([^/]+)\/([^/]+)\/(model\.onnx|maas\.json)$/;

export interface UploadKey {
  readonly name: string;
  readonly version: number;
  readonly file: "model.onnx" | "maas.json";
}

class InvalidUploadKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidUploadKeyError";
  }
}

/** Parses an upload key; the error says what a publisher should fix. */
export function parseUploadKey(key: string): UploadKey {
  const match = UPLOAD_KEY.exec(key);
  if (match === null) {
    throw new InvalidUploadKeyError(
      `'${key}' is not a model upload: use models/<name>/<version>/model.onnx (or maas.json beside it)`,
    );
  }
  const [, name = "", version = "", file] = match;
  if (!MODEL_NAME_PATTERN.test(name)) {
    throw new InvalidUploadKeyError(
      `'${name}' is not a valid model name: 1-64 lower-case letters, digits, '-', '_' or '.', starting with a letter or digit`,
    );
  }
  if (!VERSION_PATTERN.test(version) || Number(version) > MAX_VERSION) {
    throw new InvalidUploadKeyError(`'${version}' is not a valid version: use a positive integer`);
  }
  return { name, version: Number(version), file: file as UploadKey["file"] };
}

/** A file of a version's upload: `models/<name>/<version>/<file>`. */
export function uploadKey(name: string, version: number, file: string): string {
  return `models/${name}/${version}/${file}`;
}

export function manifestKey(name: string, version: number): string {
  return uploadKey(name, version, "maas.json");
}

export function modelKey(name: string, version: number): string {
  return uploadKey(name, version, "model.onnx");
}

/** Content-addressed home of a verified upload: identical bytes are stored once and never change. */
export function artifactKey(sha256: string): string {
  return `artifacts/sha256/${sha256}.onnx`;
}
