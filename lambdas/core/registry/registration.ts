import { createHash } from "node:crypto";
import type { ModelVersion, ServingTarget } from "#core/model.ts";
import {
  InvalidModelError,
  inspectModel,
  type ModelInspection,
  OLDEST_GUARANTEED_OPSET,
} from "#core/onnx/inspect.ts";
import {
  artifactKey,
  InvalidManifestError,
  type Manifest,
  manifestKey,
  parseManifest,
  parseUploadKey,
} from "./manifest.ts";
import type { ModelRegistryWriter } from "./registry.ts";
import { checkTask, type TaskCheckDeps } from "./task-check.ts";

/** One S3 object-created notification, reduced to what registration needs. */
export interface UploadEvent {
  readonly bucket: string;
  readonly key: string;
  /** The ETag of the object this notification is about: later uploads to the same key have another. */
  readonly etag: string;
  readonly bytes: number;
}

/** The model bucket, as registration uses it. */
export interface UploadStore {
  head(bucket: string, key: string): Promise<{ bytes: number; etag: string } | undefined>;
  /**
   * Streams the object to a local file, only while its ETag is still `etag`, hashing it on the way.
   * Returns "changed" if a newer upload replaced it (or it is gone).
   */
  download(
    bucket: string,
    key: string,
    etag: string,
  ): Promise<{ path: string; sha256: string; bytes: number } | "changed">;
  readText(bucket: string, key: string): Promise<string | undefined>;
  /** Copies the upload, still guarded by its ETag, to its content-addressed key (a no-op if there). */
  copyToArtifact(bucket: string, sourceKey: string, etag: string, targetKey: string): Promise<void>;
}

/** A model file on local disk, with what it hashes to. */
export interface ModelFile {
  readonly path: string;
  readonly sha256: string;
  readonly bytes: number;
}

/**
 * Writes artifacts whose bytes registration made: a model it rewrote to serve (ZipMap outputs replaced)
 * is not the upload, so no copy of the upload will do.
 */
export interface ArtifactWriter {
  /** Content-addressed: a no-op when `key` holds an object already. */
  writeArtifact(bucket: string, key: string, file: ModelFile): Promise<void>;
}

/**
 * The model prefix a SageMaker endpoint loads from. Registering a sagemaker-target version puts the
 * verified model there, under a name derived from its digest (the InvokeEndpoint TargetModel).
 */
export interface EndpointModelStore {
  /** Content-addressed: publishing the same bytes again is a no-op. Throws on infrastructure errors. */
  publish(bucket: string, file: { path: string; sha256: string; bytes: number }): Promise<void>;
}

export interface OptimizeQueue {
  send(message: { name: string; version: number }): Promise<void>;
}

export interface RegistrationDeps {
  readonly store: UploadStore;
  readonly registry: ModelRegistryWriter;
  readonly optimizeQueue: OptimizeQueue;
  readonly artifacts: ArtifactWriter;
  /** Where sagemaker-target models go; absent where this deployment has no SageMaker endpoint. */
  readonly endpointModels?: EndpointModelStore;
  /** Loads the model in onnxruntime and releases it; throws with onnxruntime's reason on failure. */
  readonly tryLoad: (path: string) => Promise<void>;
  /** Runs the model on inputs: a task version's sample (issue 19); without it task versions fail. */
  readonly runSample?: TaskCheckDeps["runSample"];
  readonly readModel: (path: string) => Promise<Uint8Array>;
  /** Writes the model registration rewrote to serve, beside the download. */
  readonly writeModel: (path: string, bytes: Uint8Array) => Promise<void>;
  readonly removeFile: (path: string) => Promise<void>;
  readonly now: () => string;
  readonly limits: {
    /** Larger uploads are refused outright. */
    readonly maxModelBytes: number;
    /** Larger models are served from SageMaker unless the manifest says otherwise. */
    readonly lambdaMaxModelBytes: number;
  };
}

export type RegistrationOutcome =
  | { readonly outcome: "registered"; readonly version: ModelVersion }
  | { readonly outcome: "failed"; readonly reason: string }
  | { readonly outcome: "duplicate" }
  | { readonly outcome: "superseded" }
  | { readonly outcome: "rejected"; readonly reason: string }
  | { readonly outcome: "ignored"; readonly reason: string }
  | { readonly outcome: "manifest-updated" };

/**
 * Registers one upload. Safe to run any number of times for the same event, and concurrently with
 * other uploads to the same key: the first upload to claim a version owns it, versions never change
 * their bytes afterwards, and the optimize message is sent once per version that became ready.
 * Model problems end the version `failed` with a reason; infrastructure errors throw (to be retried).
 */
export async function registerUpload(
  event: UploadEvent,
  deps: RegistrationDeps,
): Promise<RegistrationOutcome> {
  let upload: ReturnType<typeof parseUploadKey>;
  try {
    upload = parseUploadKey(event.key);
  } catch (error) {
    return { outcome: "ignored", reason: (error as Error).message };
  }
  if (upload.file === "maas.json") return applyLateManifest(event, upload.name, upload.version, deps);
  const { name, version } = upload;

  // A record of this very upload still registering means an earlier attempt died midway: redo it.
  const existing = await deps.registry.getVersionConsistent(name, version);
  if (existing !== undefined && !isOwnedBy(existing, event, "registering")) {
    return settleExisting(existing, event, deps);
  }

  const head = await deps.store.head(event.bucket, event.key);
  if (head === undefined || head.etag !== event.etag) return supersede(existing, deps);
  if (head.bytes > deps.limits.maxModelBytes) {
    const claimed = await claim(name, version, event, deps);
    if (!isOwnedBy(claimed, event, "registering")) return settleExisting(claimed, event, deps);
    const limit = deps.limits.maxModelBytes;
    return fail(
      claimed,
      `the model is ${head.bytes} bytes; the limit is ${limit} bytes (MAAS_MAX_MODEL_BYTES)`,
      deps,
    );
  }

  const downloaded = await deps.store.download(event.bucket, event.key, event.etag);
  if (downloaded === "changed") return supersede(existing, deps);
  try {
    const claimed = await claim(name, version, event, deps);
    // Awaited here, so a rejection is handled before the cleanup below runs.
    if (!isOwnedBy(claimed, event, "registering")) return await settleExisting(claimed, event, deps);
    return await register(claimed, event, downloaded, deps);
  } finally {
    await deps.removeFile(downloaded.path);
  }
}

function isOwnedBy(record: ModelVersion, event: UploadEvent, status: ModelVersion["status"]): boolean {
  return record.source?.etag === event.etag && record.status === status;
}

/** Claims the version for this upload; returns the record that owns it (this one or an earlier). */
async function claim(name: string, version: number, event: UploadEvent, deps: RegistrationDeps) {
  const now = deps.now();
  const record: ModelVersion = {
    name,
    version,
    status: "registering",
    target: "lambda",
    variants: [],
    source: { key: event.key, etag: event.etag },
    createdAt: now,
    updatedAt: now,
  };
  return (await deps.registry.createVersion(record)) ?? record;
}

async function register(
  claimed: ModelVersion,
  event: UploadEvent,
  upload: ModelFile,
  deps: RegistrationDeps,
): Promise<RegistrationOutcome> {
  const { name, version } = claimed;
  let manifest: Manifest = {};
  let inspection: ModelInspection;
  try {
    const manifestText = await deps.store.readText(event.bucket, manifestKey(name, version));
    if (manifestText !== undefined) manifest = parseManifest(manifestText);
    inspection = inspectModel(await deps.readModel(upload.path));
  } catch (error) {
    if (error instanceof InvalidModelError || error instanceof InvalidManifestError) {
      return fail(claimed, error.message, deps);
    }
    throw error;
  }
  if (inspection.servedBytes === undefined) return finish(claimed, event, manifest, inspection, upload, deps);

  // The rewrite is deterministic, so a replay of this upload writes the same bytes to the same artifact.
  const served: ModelFile = {
    path: upload.path.replace(/(\.onnx)?$/, ".served.onnx"),
    sha256: createHash("sha256").update(inspection.servedBytes).digest("hex"),
    bytes: inspection.servedBytes.length,
  };
  try {
    await deps.writeModel(served.path, inspection.servedBytes);
    return await finish(claimed, event, manifest, inspection, served, deps);
  } finally {
    await deps.removeFile(served.path);
  }
}

/** Checks the model that will be served, stores its artifact and marks the version ready. */
async function finish(
  claimed: ModelVersion,
  event: UploadEvent,
  manifest: Manifest,
  inspection: ModelInspection,
  served: ModelFile,
  deps: RegistrationDeps,
): Promise<RegistrationOutcome> {
  const { name, version } = claimed;
  const target: ServingTarget =
    manifest.target ?? (served.bytes > deps.limits.lambdaMaxModelBytes ? "sagemaker" : "lambda");
  if (target === "lambda") {
    try {
      await deps.tryLoad(served.path);
    } catch (error) {
      return fail(
        claimed,
        `onnxruntime cannot load the model: ${withoutLocalPath((error as Error).message)}${opsetHint(inspection)}`,
        deps,
      );
    }
  }

  const key = artifactKey(served.sha256);
  if (inspection.servedBytes === undefined) {
    await deps.store.copyToArtifact(event.bucket, event.key, event.etag, key);
  } else {
    await deps.artifacts.writeArtifact(event.bucket, key, served);
  }
  if (target === "sagemaker") await deps.endpointModels?.publish(event.bucket, served);
  const labels = manifest.labels ?? inspection.labels;
  const description = manifest.description ?? inspection.description;
  const { runSample } = deps;
  const checked =
    manifest.task === undefined
      ? undefined
      : runSample === undefined
        ? { failure: "this deployment's registration cannot run task samples" }
        : await checkTask(
            manifest,
            inspection.signature,
            labels,
            { bucket: event.bucket, name, version, path: served.path },
            {
              head: (bucket, key) => deps.store.head(bucket, key),
              readText: (bucket, key) => deps.store.readText(bucket, key),
              copyToArtifact: (bucket, source, etag, target) =>
                deps.store.copyToArtifact(bucket, source, etag, target),
              runSample,
            },
          );
  if (checked !== undefined && "failure" in checked) return fail(claimed, checked.failure, deps);
  const changes = {
    status: "ready" as const,
    target,
    artifact: { bucket: event.bucket, key, sha256: served.sha256, bytes: served.bytes },
    signature: inspection.signature,
    optimizeState: "pending" as const,
    updatedAt: deps.now(),
    ...(labels ? { labels } : {}),
    ...(description ? { description } : {}),
    ...(manifest.tags ? { tags: manifest.tags } : {}),
    ...(manifest.capture ? { capture: manifest.capture } : {}),
    ...(checked === undefined ? {} : { task: checked.task }),
    ...(inspection.warnings.length > 0 ? { warnings: inspection.warnings } : {}),
  };
  // Only the worker whose transition succeeds sends the optimize message.
  if (!(await deps.registry.updateVersion(name, version, "registering", changes)))
    return { outcome: "duplicate" };
  await queueOptimization(name, version, deps);
  return { outcome: "registered", version: { ...claimed, ...changes } };
}

/** Why an old operator set may be what onnxruntime could not load: it dropped some of their kernels. */
function opsetHint(inspection: ModelInspection): string {
  const opset = inspection.opsetVersion;
  if (opset === 0 || opset >= OLDEST_GUARANTEED_OPSET) return "";
  return (
    ` (the model uses ONNX operator set ${opset}; onnxruntime keeps kernels for only some operators ` +
    `below ${OLDEST_GUARANTEED_OPSET}: re-export it with opset >= ${OLDEST_GUARANTEED_OPSET})`
  );
}

/** How long the worker that marked a version ready may take to send its optimize message. */
export const OPTIMIZE_SEND_LEASE_MS = 20_000;

/** Thrown so the message is retried later: another worker's step on this version may still be running. */
export class RegistrationInProgressError extends Error {
  constructor(name: string, version: number) {
    super(`model '${name}' version ${version} is being registered by another worker; retry later`);
    this.name = "RegistrationInProgressError";
  }
}

/**
 * A newer upload replaced this one before it could be read. If this upload had already claimed the
 * version (an earlier attempt died midway), the claim is settled as failed: left registering, it would
 * block the version forever.
 */
async function supersede(
  owned: ModelVersion | undefined,
  deps: RegistrationDeps,
): Promise<RegistrationOutcome> {
  if (owned === undefined) return { outcome: "superseded" };
  return fail(
    owned,
    "the upload was replaced before its registration finished; versions are immutable: publish the model as a new version",
    deps,
  );
}

/** The version exists already: a replay of its own upload, or another upload to an immutable version. */
async function settleExisting(
  existing: ModelVersion,
  event: UploadEvent,
  deps: RegistrationDeps,
): Promise<RegistrationOutcome> {
  if (existing.source?.etag !== event.etag) {
    const reason =
      `model '${existing.name}' version ${existing.version} already exists and versions are immutable: ` +
      `the upload with ETag ${event.etag} was not registered (clients keep the registered bytes); publish it as a new version`;
    // Recorded on the version too, so the publisher sees it in the admin API, not only in the logs.
    await deps.registry.updateVersion(existing.name, existing.version, existing.status, {
      rejectedUpload: { etag: event.etag, at: deps.now(), reason },
    });
    return { outcome: "rejected", reason };
  }
  // The worker that sent nothing after marking the version ready crashed in between: finish its job.
  if (existing.status === "ready" && existing.optimizeState === "pending") {
    // Within the lease the winner may still be sending: retry later rather than send a second message.
    const age = Date.parse(deps.now()) - Date.parse(existing.updatedAt);
    if (age < OPTIMIZE_SEND_LEASE_MS) throw new RegistrationInProgressError(existing.name, existing.version);
    await queueOptimization(existing.name, existing.version, deps);
  }
  return { outcome: "duplicate" };
}

async function queueOptimization(name: string, version: number, deps: RegistrationDeps): Promise<void> {
  await deps.optimizeQueue.send({ name, version });
  await deps.registry.updateVersion(name, version, "ready", {
    optimizeState: "queued",
    updatedAt: deps.now(),
  });
}

async function fail(
  claimed: ModelVersion,
  reason: string,
  deps: RegistrationDeps,
): Promise<RegistrationOutcome> {
  await deps.registry.updateVersion(claimed.name, claimed.version, "registering", {
    status: "failed",
    reason,
    updatedAt: deps.now(),
  });
  return { outcome: "failed", reason };
}

/** A manifest uploaded after its model: descriptive fields only; target and samples took effect already. */
async function applyLateManifest(
  event: UploadEvent,
  name: string,
  version: number,
  deps: RegistrationDeps,
): Promise<RegistrationOutcome> {
  const existing = await deps.registry.getVersionConsistent(name, version);
  if (existing === undefined)
    return { outcome: "ignored", reason: "the manifest will be read when the model registers" };
  // Registration may have read the manifest already: apply this one once it has finished.
  if (existing.status === "registering") throw new RegistrationInProgressError(name, version);
  const text = await deps.store.readText(event.bucket, event.key);
  if (text === undefined) return { outcome: "superseded" };
  let manifest: Manifest;
  try {
    manifest = parseManifest(text);
  } catch (error) {
    return { outcome: "rejected", reason: (error as Error).message };
  }
  await deps.registry.updateVersion(name, version, existing.status, {
    ...(manifest.labels ? { labels: manifest.labels } : {}),
    ...(manifest.description ? { description: manifest.description } : {}),
    ...(manifest.tags ? { tags: manifest.tags } : {}),
    updatedAt: deps.now(),
  });
  return { outcome: "manifest-updated" };
}

/** onnxruntime starts its load errors with the file it read: the function's scratch path, not the publisher's. */
function withoutLocalPath(message: string): string {
  return message.replace(/^Load model from \S+ failed:\s*/, "");
}
