import * as z from "zod/mini";
import { ModelNotFoundError, ModelNotReadyError } from "#core/errors.ts";
import {
  ALIAS_PATTERN,
  type ModelVersion,
  type ServableVersion,
  V2_DATATYPES,
  VERSION_PATTERN,
} from "#core/model.ts";
import { IMAGE_CHANNELS, IMAGE_LAYOUTS, IMAGE_RESIZES, POOLINGS } from "#core/tasks/task.ts";

/** Read side of the model registry, as the serving path sees it. */
export interface ModelRegistry {
  getVersion(name: string, version: number): Promise<ModelVersion | undefined>;
  /** The version an alias points at, if the alias exists. */
  getAlias(name: string, alias: string): Promise<number | undefined>;
  /** Every version of a model, oldest first. */
  listVersions(name: string): Promise<ModelVersion[]>;
  /** A model's versions and aliases in one read: what a request that names no version resolves from. */
  getModel(name: string): Promise<ModelEntries>;
  listModels(): Promise<ModelSummary[]>;
}

/** A model's records as one read returns them. */
export interface ModelEntries {
  /** Every version, oldest first. */
  readonly versions: readonly ModelVersion[];
  /** The version each alias points at, by alias. */
  readonly aliases: ReadonlyMap<string, number>;
}

export interface ModelSummary {
  readonly name: string;
  readonly versions: readonly number[];
}

export const DEFAULT_ALIAS = "default";

export interface AliasRecord {
  readonly alias: string;
  readonly version: number;
  /** The version the alias pointed at before its last move: where a rollback returns. */
  readonly previous?: number;
  readonly updatedAt: string;
}

/** Write side of the registry: registration, lifecycle and alias management. */
export interface ModelRegistryWriter extends ModelRegistry {
  /** Writes the record unless the version exists; returns the existing record if it did. */
  createVersion(record: ModelVersion): Promise<ModelVersion | undefined>;
  /** Applies `changes` only while the version is in `expected` status; false if it was not. */
  updateVersion(
    name: string,
    version: number,
    expected: ModelVersion["status"],
    changes: Partial<Omit<ModelVersion, "name" | "version">>,
  ): Promise<boolean>;
  /** A strongly consistent read, for decisions that must see the latest write. */
  getVersionConsistent(name: string, version: number): Promise<ModelVersion | undefined>;
  listAliases(name: string): Promise<AliasRecord[]>;
  getAliasRecord(name: string, alias: string): Promise<AliasRecord | undefined>;
  /** Points the alias at `version`, remembering the version it pointed at before. */
  setAlias(name: string, alias: string, version: number, now?: string): Promise<AliasRecord>;
  deleteAlias(name: string, alias: string): Promise<boolean>;
  deleteVersion(name: string, version: number): Promise<boolean>;
}

const tensorSpecSchema = z.object({
  name: z.string(),
  datatype: z.enum(V2_DATATYPES),
  shape: z.array(z.union([z.int(), z.string()])),
  classLabels: z.optional(z.array(z.string())),
});

const nonnegativeInt = z.int().check(z.nonnegative());
const nonnegative = z.number().check(z.nonnegative());

const artifactSchema = z.object({
  bucket: z.string(),
  key: z.string(),
  sha256: z.string().check(z.regex(/^[0-9a-f]{64}$/)),
  bytes: nonnegativeInt,
});

/**
 * A registry record as stored; parsed on every read so a bad record fails loudly, once. zod/mini, as
 * every schema on the inference function's path: the classic API builds each schema's methods when
 * it is constructed, which a cold start pays for (see README, cold path).
 */
export const modelVersionSchema = z.object({
  name: z.string(),
  version: z.int().check(z.positive()),
  status: z.enum(["registering", "optimizing", "ready", "failed"]),
  reason: z.optional(z.string()),
  target: z.enum(["lambda", "sagemaker"]),
  artifact: z.optional(artifactSchema),
  signature: z.optional(z.object({ inputs: z.array(tensorSpecSchema), outputs: z.array(tensorSpecSchema) })),
  variants: z._default(
    z.array(
      z.object({
        kind: z.string(),
        bytes: nonnegativeInt,
        selected: z.boolean(),
        artifact: z.optional(artifactSchema),
        detail: z.optional(z.string()),
        p50Ms: z.optional(nonnegative),
        benchmarkRuns: z.optional(nonnegativeInt),
        winRate: z.optional(z.number().check(z.minimum(0), z.maximum(1))),
        loadMs: z.optional(nonnegative),
        parity: z.optional(
          z.object({
            passed: z.boolean(),
            maxAbsDiff: z.number(),
            maxRelativeDiff: z.number(),
            cosine: z.number(),
            top1Agreement: z.optional(z.number()),
            top1Rows: z.optional(z.int()),
            reason: z.optional(z.string()),
            lossless: z.optional(z.boolean()),
            inputs: z.enum(["samples", "generated"]),
          }),
        ),
        error: z.optional(z.string()),
      }),
    ),
    [],
  ),
  labels: z.optional(z.array(z.string())),
  warnings: z.optional(z.array(z.string())),
  variantChoice: z.optional(
    z.object({ kind: z.string(), by: z.enum(["manifest", "operator"]), at: z.string() }),
  ),
  description: z.optional(z.string()),
  tags: z.optional(z.record(z.string(), z.string())),
  task: z.optional(
    z.discriminatedUnion("kind", [
      z.object({
        kind: z.enum(["text-classification", "feature-extraction"]),
        tokenizer: artifactSchema,
        maxLength: z.int().check(z.positive()),
        output: z.string(),
        pooling: z.enum(POOLINGS),
        normalize: z.boolean(),
        probabilities: z.boolean(),
      }),
      z.object({
        kind: z.literal("image-classification"),
        input: z.string(),
        image: z.object({
          size: z.tuple([z.int().check(z.positive()), z.int().check(z.positive())]),
          resize: z.enum(IMAGE_RESIZES),
          mean: z.tuple([z.number(), z.number(), z.number()]),
          std: z.tuple([z.number(), z.number(), z.number()]),
          scale: z.number(),
          layout: z.enum(IMAGE_LAYOUTS),
          channels: z.enum(IMAGE_CHANNELS),
        }),
        output: z.string(),
        probabilities: z.boolean(),
      }),
    ]),
  ),
  capture: z.optional(
    z.object({
      samplePercent: z.number().check(z.minimum(0), z.maximum(100)),
      requests: z.boolean(),
      responses: z.boolean(),
    }),
  ),
  source: z.optional(z.object({ key: z.string(), etag: z.string() })),
  optimizeState: z.optional(z.enum(["pending", "queued"])),
  optimizeAttempt: z.optional(
    z.object({ id: z.string(), startedAt: z.string(), error: z.optional(z.string()) }),
  ),
  optimizedAt: z.optional(z.string()),
  optimizeError: z.optional(z.string()),
  rejectedUpload: z.optional(z.object({ etag: z.string(), at: z.string(), reason: z.string() })),
  createdAt: z.string(),
  updatedAt: z.string(),
}) satisfies z.ZodMiniType<ModelVersion, unknown>;

/** Versions that may serve traffic: an `optimizing` version keeps serving its original. */
export function isServable(version: ModelVersion): version is ServableVersion {
  return (
    (version.status === "ready" || version.status === "optimizing") &&
    version.artifact !== undefined &&
    version.signature !== undefined
  );
}

/**
 * Resolves a version reference as the V2 routes use it: a positive integer is a version, any other
 * reference an alias, and no reference means the alias `default` if set, else the newest servable
 * version. Throws 404 for what does not exist; returns records in any status (callers decide).
 */
export async function resolveVersion(
  registry: ModelRegistry,
  name: string,
  reference: string | undefined,
): Promise<ModelVersion> {
  if (reference === undefined) {
    // One read of the model's records, aliases and versions together: a cold request pays one round
    // trip on one connection, and a warm one one cache lookup.
    const { versions, aliases } = await registry.getModel(name);
    const aliased = aliases.get(DEFAULT_ALIAS);
    if (aliased !== undefined) {
      const record = versions.find((candidate) => candidate.version === aliased);
      if (record === undefined) {
        throw new ModelNotFoundError(
          `model '${name}' has no version ${aliased} (named by alias '${DEFAULT_ALIAS}')`,
        );
      }
      return record;
    }
    if (versions.length === 0) throw new ModelNotFoundError(`model '${name}' not found`);
    const newestServable = versions.findLast(isServable);
    if (newestServable !== undefined) return newestServable;
    return versions.at(-1) as ModelVersion;
  }
  if (VERSION_PATTERN.test(reference)) return mustGet(registry, name, Number(reference));
  if (!ALIAS_PATTERN.test(reference)) {
    throw new ModelNotFoundError(
      `'${reference}' is neither a version number nor an alias of model '${name}'`,
    );
  }
  const aliased = await registry.getAlias(name, reference);
  if (aliased === undefined)
    throw new ModelNotFoundError(`model '${name}' has no version or alias '${reference}'`);
  return mustGet(registry, name, aliased, `alias '${reference}'`);
}

async function mustGet(registry: ModelRegistry, name: string, version: number, via?: string) {
  const record = await registry.getVersion(name, version);
  if (record === undefined) {
    const suffix = via ? ` (named by ${via})` : "";
    throw new ModelNotFoundError(`model '${name}' has no version ${version}${suffix}`);
  }
  return record;
}

/** Throws 503 unless the version can serve traffic, with a reason the caller can act on. */
export function assertServable(version: ModelVersion): asserts version is ServableVersion {
  if (isServable(version)) return;
  const id = `model '${version.name}' version ${version.version}`;
  if (version.status === "failed") {
    throw new ModelNotReadyError(`${id} failed to register: ${version.reason ?? "no reason recorded"}`);
  }
  throw new ModelNotReadyError(`${id} is ${version.status}; retry shortly`);
}
