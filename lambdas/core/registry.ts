import * as z from "zod";
import { ModelNotFoundError, ModelNotReadyError } from "./errors.ts";
import {
  ALIAS_PATTERN,
  type ModelVersion,
  type ServableVersion,
  V2_DATATYPES,
  VERSION_PATTERN,
} from "./model.ts";

/** Read side of the model registry, as the serving path sees it. */
export interface ModelRegistry {
  getVersion(name: string, version: number): Promise<ModelVersion | undefined>;
  /** The version an alias points at, if the alias exists. */
  getAlias(name: string, alias: string): Promise<number | undefined>;
  /** Every version of a model, oldest first. */
  listVersions(name: string): Promise<ModelVersion[]>;
  listModels(): Promise<ModelSummary[]>;
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
  shape: z.array(z.union([z.number().int(), z.string()])),
});

const artifactSchema = z.object({
  bucket: z.string(),
  key: z.string(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  bytes: z.number().int().nonnegative(),
});

/** A registry record as stored; parsed on every read so a bad record fails loudly, once. */
export const modelVersionSchema = z.object({
  name: z.string(),
  version: z.number().int().positive(),
  status: z.enum(["registering", "optimizing", "ready", "failed"]),
  reason: z.string().optional(),
  target: z.enum(["lambda", "sagemaker"]),
  artifact: artifactSchema.optional(),
  signature: z.object({ inputs: z.array(tensorSpecSchema), outputs: z.array(tensorSpecSchema) }).optional(),
  variants: z
    .array(
      z.object({
        kind: z.string(),
        bytes: z.number().int().nonnegative(),
        selected: z.boolean(),
        artifact: artifactSchema.optional(),
        detail: z.string().optional(),
        p50Ms: z.number().nonnegative().optional(),
        benchmarkRuns: z.number().int().nonnegative().optional(),
        winRate: z.number().min(0).max(1).optional(),
        loadMs: z.number().nonnegative().optional(),
        parity: z
          .object({
            passed: z.boolean(),
            maxAbsDiff: z.number(),
            maxRelativeDiff: z.number(),
            cosine: z.number(),
            top1Agreement: z.number().optional(),
            top1Rows: z.number().int().optional(),
            reason: z.string().optional(),
            inputs: z.enum(["samples", "generated"]),
          })
          .optional(),
        error: z.string().optional(),
      }),
    )
    .default([]),
  labels: z.array(z.string()).optional(),
  description: z.string().optional(),
  tags: z.record(z.string(), z.string()).optional(),
  source: z.object({ key: z.string(), etag: z.string() }).optional(),
  optimizeState: z.enum(["pending", "queued"]).optional(),
  optimizeAttempt: z
    .object({ id: z.string(), startedAt: z.string(), error: z.string().optional() })
    .optional(),
  optimizedAt: z.string().optional(),
  optimizeError: z.string().optional(),
  rejectedUpload: z.object({ etag: z.string(), at: z.string(), reason: z.string() }).optional(),
  createdAt: z.string(),
  updatedAt: z.string(),
}) satisfies z.ZodType<ModelVersion, unknown>;

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
    // Both reads at once: a cold request pays one round trip, not two. They are awaited in turn, as
    // Promise.all costs more than both reads once they are cached.
    const aliasRead = registry.getAlias(name, DEFAULT_ALIAS);
    const versionsRead = registry.listVersions(name);
    versionsRead.catch(() => undefined); // not awaited when the alias answers
    const aliased = await aliasRead;
    if (aliased !== undefined) return mustGet(registry, name, aliased, `alias '${DEFAULT_ALIAS}'`);
    const versions = await versionsRead;
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
