/**
 * What the console reads from the API, checked on arrival (zod/mini keeps the bundle small): a field
 * the page relies on that is missing or mistyped is an error shown to the operator, not a blank cell.
 */
import * as z from "zod/mini";

export const configSchema = z.union([
  z.object({ auth: z.literal("key") }),
  z.object({ auth: z.literal("sigv4"), region: z.string().check(z.regex(/^[a-z]{2}(-[a-z]+)+-\d+$/)) }),
]);
export type ConsoleConfig = z.infer<typeof configSchema>;

const dim = z.union([z.number(), z.string()]);
const tensorSpec = z.object({
  name: z.string(),
  datatype: z.string(),
  shape: z.array(dim),
  classLabels: z.optional(z.array(z.string())),
});
export type TensorSpec = z.infer<typeof tensorSpec>;

const parity = z.object({
  passed: z.boolean(),
  maxAbsDiff: z.number(),
  maxRelativeDiff: z.number(),
  cosine: z.number(),
  top1Agreement: z.optional(z.number()),
  top1Rows: z.optional(z.number()),
  reason: z.optional(z.string()),
  lossless: z.optional(z.boolean()),
  inputs: z.string(),
});

const variant = z.object({
  kind: z.string(),
  bytes: z.number(),
  selected: z.boolean(),
  detail: z.optional(z.string()),
  p50Ms: z.optional(z.number()),
  benchmarkRuns: z.optional(z.number()),
  winRate: z.optional(z.number()),
  loadMs: z.optional(z.number()),
  parity: z.optional(parity),
  error: z.optional(z.string()),
});
export type Variant = z.infer<typeof variant>;

export const STATUSES = ["registering", "optimizing", "ready", "failed"] as const;

export const versionSchema = z.object({
  name: z.string(),
  version: z.number(),
  status: z.enum(STATUSES),
  reason: z.optional(z.string()),
  target: z.string(),
  signature: z.optional(z.object({ inputs: z.array(tensorSpec), outputs: z.array(tensorSpec) })),
  sha256: z.optional(z.string()),
  bytes: z.optional(z.number()),
  variants: z.array(variant),
  serving: z.optional(z.string()),
  variantChoice: z.optional(z.object({ kind: z.string(), by: z.string(), at: z.string() })),
  warnings: z.optional(z.array(z.string())),
  optimizedAt: z.optional(z.string()),
  optimizeError: z.optional(z.string()),
  aliases: z.array(z.string()),
  labels: z.optional(z.array(z.string())),
  description: z.optional(z.string()),
  tags: z.optional(z.record(z.string(), z.string())),
  capture: z.optional(z.object({ samplePercent: z.number(), requests: z.boolean(), responses: z.boolean() })),
  task: z.optional(z.looseObject({ kind: z.string() })),
  rejectedUpload: z.optional(z.object({ etag: z.string(), at: z.string(), reason: z.string() })),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type VersionRecord = z.infer<typeof versionSchema>;

/** Whether the version answers infer requests (an optimizing version serves its original). */
export const servable = (version: VersionRecord): boolean =>
  version.status === "ready" || version.status === "optimizing";

export const modelsSchema = z.object({
  models: z.array(z.object({ name: z.string(), versions: z.array(z.number()) })),
});

export const versionsSchema = z.object({ name: z.string(), versions: z.array(versionSchema) });

const aliasSchema = z.object({
  alias: z.string(),
  version: z.number(),
  previous: z.optional(z.number()),
  updatedAt: z.string(),
});
export type AliasRecord = z.infer<typeof aliasSchema>;
export const aliasesSchema = z.object({ name: z.string(), aliases: z.array(aliasSchema) });
export { aliasSchema };

const nullableSeries = z.array(z.nullable(z.number()));
export const figuresSchema = z.object({
  model: z.string(),
  stepSeconds: z.number(),
  timestamps: z.array(z.number()),
  requests: z.array(z.number()),
  errors: z.array(z.number()),
  latencyMs: z.object({ p50: nullableSeries, p90: nullableSeries, p99: nullableSeries }),
});
export type Figures = z.infer<typeof figuresSchema>;

export const uploadsSchema = z.object({
  name: z.string(),
  version: z.number(),
  expiresIn: z.number(),
  uploads: z.array(
    z.union([
      z.object({ file: z.string(), key: z.string(), url: z.string() }),
      z.object({
        file: z.string(),
        key: z.string(),
        uploadId: z.string(),
        partUrls: z.array(z.string()),
        completeUrl: z.string(),
      }),
    ]),
  ),
});
export type UploadTickets = z.infer<typeof uploadsSchema>;

const tensorMetadata = z.object({ name: z.string(), datatype: z.string(), shape: z.array(z.number()) });
export type TensorMetadata = z.infer<typeof tensorMetadata>;

export const metadataSchema = z.object({
  name: z.string(),
  versions: z.optional(z.array(z.string())),
  platform: z.string(),
  inputs: z.array(tensorMetadata),
  outputs: z.array(tensorMetadata),
  parameters: z.optional(
    z.object({
      variant: z.optional(z.string()),
      class_labels: z.optional(z.record(z.string(), z.array(z.string()))),
      task: z.optional(
        z.object({ name: z.string(), inputs: z.array(tensorMetadata), outputs: z.array(tensorMetadata) }),
      ),
    }),
  ),
});
export type ModelMetadata = z.infer<typeof metadataSchema>;

export const inferResponseSchema = z.object({
  model_name: z.string(),
  model_version: z.optional(z.string()),
  id: z.optional(z.string()),
  outputs: z.array(
    z.object({
      name: z.string(),
      datatype: z.string(),
      shape: z.array(z.number()),
      data: z.array(z.unknown()),
    }),
  ),
});
export type InferResponse = z.infer<typeof inferResponseSchema>;
export type OutputTensor = InferResponse["outputs"][number];

/** Every error shape the page can meet: the API's, API Gateway's, OpenAI's. */
export const errorBodySchema = z.union([
  z.object({ error: z.string() }),
  z.object({ error: z.object({ message: z.string() }) }),
  z.object({ message: z.string() }),
]);
