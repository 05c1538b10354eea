import * as z from "zod";
import {
  InvalidRequestError,
  MaasError,
  MethodNotAllowedError,
  ModelNotFoundError,
  RouteNotFoundError,
} from "#core/errors.ts";
import type { JobObjects } from "#core/jobs/jobs.ts";
import { type FigureSeries, MINUTE_MS, type ModelFigures } from "#core/metrics/figures.ts";
import {
  ALIAS_PATTERN,
  type CaptureSettings,
  MODEL_NAME_PATTERN,
  type ModelVersion,
  ORIGINAL_VARIANT,
  servingVariantKind,
  VERSION_PATTERN,
} from "#core/model.ts";
import {
  captureSettingsSchema,
  MAX_VERSION,
  modelKey,
  SIDE_FILE_PATTERN,
  uploadKey,
} from "#core/registry/manifest.ts";
import { type AliasRecord, isServable, type ModelRegistryWriter } from "#core/registry/registry.ts";
import { MAX_JSON_DEPTH, nestsDeeperThan } from "#core/v2/parse.ts";
import { safeDecode } from "#core/v2/routes.ts";
import { describeZodError } from "#core/v2/wire.ts";

/** The request conflicts with the registry's state (an alias still points at a version, no rollback target). */
export class ConflictError extends MaasError {
  constructor(message: string) {
    super(409, "conflict", message);
    this.name = "ConflictError";
  }
}

/** Not kept, or not wired, in this deployment (figures, publish uploads): the message says which. */
export class NotImplementedError extends MaasError {
  constructor(message: string) {
    super(501, "not_implemented", message);
    this.name = "NotImplementedError";
  }
}

/**
 * Presigned uploads into the model bucket, for publishing from a browser. URLs may be relative to the
 * API's origin (the local gateway forwards them to its S3 endpoint) or absolute (S3 itself).
 */
export interface VersionUploads extends Pick<JobObjects, "presignPut" | "presignMultipart"> {
  /** Whether an object is at `key`. */
  exists(key: string): Promise<boolean>;
}

export interface AdminDeps {
  readonly registry: ModelRegistryWriter;
  /** Removes a deleted version's uploaded files; its content-addressed artifact may be shared and stays. */
  readonly deleteUpload: (name: string, version: number) => Promise<void>;
  readonly now: () => string;
  /** Per-minute figures of a model; without it `GET .../figures` answers 501. */
  readonly figures?: ModelFigures;
  /** Presigned publish uploads; without it `POST .../uploads` answers 501. */
  readonly uploads?: VersionUploads;
  /** Lifetime of presigned upload URLs. @default 3600 */
  readonly uploadExpiresSeconds?: number;
}

export type AdminRoute =
  | { readonly kind: "list-models" }
  | { readonly kind: "list-versions"; readonly model: string }
  | { readonly kind: "figures"; readonly model: string; readonly minutes: number }
  | { readonly kind: "create-uploads"; readonly model: string; readonly version: number }
  | { readonly kind: "get-version"; readonly model: string; readonly version: number }
  | { readonly kind: "delete-version"; readonly model: string; readonly version: number }
  | { readonly kind: "set-variant"; readonly model: string; readonly version: number }
  | { readonly kind: "set-capture"; readonly model: string; readonly version: number }
  | { readonly kind: "stop-capture"; readonly model: string; readonly version: number }
  | { readonly kind: "list-aliases"; readonly model: string }
  | { readonly kind: "get-alias"; readonly model: string; readonly alias: string }
  | { readonly kind: "set-alias"; readonly model: string; readonly alias: string }
  | { readonly kind: "delete-alias"; readonly model: string; readonly alias: string }
  | { readonly kind: "rollback-alias"; readonly model: string; readonly alias: string };

const ADMIN_PATH =
  /^\/admin\/models(?:\/([^/]+)(?:\/(versions|aliases|figures)(?:\/([^/]+)(?:\/(rollback|variant|capture|uploads))?)?)?)?\/?$/;

/** Minutes of figures a request may ask for: a day, CloudWatch's one-minute resolution kept for 15 days. */
const MAX_FIGURE_MINUTES = 1440;
const figuresQuerySchema = z.object({
  minutes: z.coerce.number().int().min(1).max(MAX_FIGURE_MINUTES).default(60),
});

/**
 * Matches an admin request; 404 for unknown paths and names, 405 for a known path and wrong method,
 * 400 for a query a route cannot take.
 */
export function matchAdminRoute(
  method: string,
  path: string,
  query: Readonly<Record<string, string | undefined>> | null = null,
): AdminRoute {
  const match = ADMIN_PATH.exec(path);
  if (match === null) throw new RouteNotFoundError(method, path);
  const [, rawModel, collection, rawItem, action] = match;
  const allow = (allowed: string[]) => {
    if (!allowed.includes(method)) throw new MethodNotAllowedError(method, path, allowed);
  };
  if (rawModel === undefined) {
    allow(["GET"]);
    return { kind: "list-models" };
  }
  const model = safeDecode(rawModel);
  if (!MODEL_NAME_PATTERN.test(model)) throw new ModelNotFoundError(`model '${model}' not found`);
  if (collection === undefined) throw new RouteNotFoundError(method, path);

  if (collection === "figures") {
    if (rawItem !== undefined) throw new RouteNotFoundError(method, path);
    allow(["GET"]);
    const parsed = figuresQuerySchema.safeParse({ minutes: query?.minutes });
    if (!parsed.success) {
      throw new InvalidRequestError(`minutes must be an integer from 1 to ${MAX_FIGURE_MINUTES}`);
    }
    return { kind: "figures", model, minutes: parsed.data.minutes };
  }

  if (collection === "versions") {
    if (action === "rollback") throw new RouteNotFoundError(method, path);
    if (rawItem === undefined) {
      allow(["GET"]);
      return { kind: "list-versions", model };
    }
    if (!VERSION_PATTERN.test(rawItem)) throw new ModelNotFoundError(`'${rawItem}' is not a version number`);
    const version = Number(rawItem);
    if (action === "uploads") {
      allow(["POST"]);
      return { kind: "create-uploads", model, version };
    }
    if (action === "variant") {
      allow(["PUT"]);
      return { kind: "set-variant", model, version };
    }
    if (action === "capture") {
      allow(["PUT", "DELETE"]);
      return method === "PUT"
        ? { kind: "set-capture", model, version }
        : { kind: "stop-capture", model, version };
    }
    allow(["GET", "DELETE"]);
    return method === "GET"
      ? { kind: "get-version", model, version }
      : { kind: "delete-version", model, version };
  }

  if (rawItem === undefined) {
    allow(["GET"]);
    return { kind: "list-aliases", model };
  }
  const alias = safeDecode(rawItem);
  if (!ALIAS_PATTERN.test(alias)) {
    throw new InvalidRequestError(
      `'${alias}' is not a valid alias: a lower-case letter, then letters, digits, '-' or '_' (at most 64)`,
    );
  }
  if (action === "variant" || action === "capture" || action === "uploads")
    throw new RouteNotFoundError(method, path);
  if (action === "rollback") {
    allow(["POST"]);
    return { kind: "rollback-alias", model, alias };
  }
  allow(["GET", "PUT", "DELETE"]);
  if (method === "GET") return { kind: "get-alias", model, alias };
  return method === "PUT" ? { kind: "set-alias", model, alias } : { kind: "delete-alias", model, alias };
}

const setAliasSchema = z.object({ version: z.number().int().positive() }).strict();

/** Files of a version a publisher may upload: the model, its manifest, and files the manifest names. */
const UPLOAD_FILE = new RegExp(`^model\\.onnx$|${SIDE_FILE_PATTERN.source}`);
/** S3's most parts in one multipart upload. */
const MAX_UPLOAD_PARTS = 10_000;
const uploadFileSchema = z.union([
  z.string().regex(UPLOAD_FILE),
  z
    .object({ name: z.string().regex(UPLOAD_FILE), parts: z.number().int().min(1).max(MAX_UPLOAD_PARTS) })
    .strict(),
]);
const createUploadsSchema = z
  .object({ files: z.array(uploadFileSchema).min(1).max(8) })
  .strict()
  .transform(({ files }) => files.map((file) => (typeof file === "string" ? { name: file } : file)))
  .refine((files) => files.some((file) => file.name === "model.onnx"), {
    message: "files must include model.onnx",
  })
  .refine((files) => new Set(files.map((file) => file.name)).size === files.length, {
    message: "files must not repeat a name",
  });
const UPLOADS_EXAMPLE = '{"files": ["maas.json", "tokenizer.json", "model.onnx"]}';

/** One file's place to upload: a presigned PUT, or the parts of a multipart upload and its completion. */
type VersionUpload =
  | { readonly file: string; readonly key: string; readonly url: string }
  | ({ readonly file: string; readonly key: string } & Awaited<ReturnType<JobObjects["presignMultipart"]>>);

/** Registration reads the manifest and the files it names when model.onnx arrives: the model goes last. */
function uploadOrder(a: { name: string }, b: { name: string }): number {
  const rank = (name: string) => (name === "maas.json" ? 0 : name === "model.onnx" ? 2 : 1);
  return rank(a.name) - rank(b.name);
}
const setVariantSchema = z.object({ kind: z.string().min(1).max(64) }).strict();

/** Capture switched off: the registry keeps the field (its updates only set). */
const CAPTURE_OFF: CaptureSettings = { samplePercent: 0, requests: false, responses: false };

function captureBody(body: string): CaptureSettings {
  const parsed = captureSettingsSchema.safeParse(
    jsonBody(body, '{"samplePercent": 10, "requests": true, "responses": true}'),
  );
  if (!parsed.success) throw new InvalidRequestError(describeZodError(parsed.error));
  return parsed.data;
}

/** How many times an operator's change re-reads the version when a concurrent write changed its status. */
const VARIANT_CHOICE_ATTEMPTS = 3;

/**
 * The variant a version serves on its target: the selected one on Lambda; the SageMaker endpoint serves
 * the original upload's archive (as SageMakerRunner does). Absent while nothing can serve.
 */
function servedVariant(record: ModelVersion): string | undefined {
  if (!isServable(record)) return undefined;
  return record.target === "sagemaker" ? ORIGINAL_VARIANT : servingVariantKind(record);
}

/** A version as operators see it: the registry record less its internals, with the aliases naming it. */
function describeVersion(record: ModelVersion, aliases: readonly AliasRecord[] = []) {
  const serving = servedVariant(record);
  return {
    name: record.name,
    version: record.version,
    status: record.status,
    ...(record.reason === undefined ? {} : { reason: record.reason }),
    target: record.target,
    ...(record.signature === undefined ? {} : { signature: record.signature }),
    ...(record.artifact === undefined
      ? {}
      : { sha256: record.artifact.sha256, bytes: record.artifact.bytes }),
    // The artifact location stays internal; everything the optimizer measured is shown.
    variants: record.variants.map(({ artifact: _artifact, ...variant }) => variant),
    ...(serving === undefined ? {} : { serving }),
    ...(record.variantChoice === undefined ? {} : { variantChoice: record.variantChoice }),
    ...(record.warnings === undefined ? {} : { warnings: record.warnings }),
    ...(record.optimizedAt === undefined ? {} : { optimizedAt: record.optimizedAt }),
    ...(record.optimizeError === undefined ? {} : { optimizeError: record.optimizeError }),
    aliases: aliases.filter((alias) => alias.version === record.version).map((alias) => alias.alias),
    ...(record.labels === undefined ? {} : { labels: record.labels }),
    ...(record.description === undefined ? {} : { description: record.description }),
    ...(record.tags === undefined ? {} : { tags: record.tags }),
    ...(record.capture === undefined ? {} : { capture: record.capture }),
    ...(record.task === undefined ? {} : { task: describeTask(record.task) }),
    ...(record.rejectedUpload === undefined ? {} : { rejectedUpload: record.rejectedUpload }),
    createdAt: record.createdAt,
    updatedAt: record.updatedAt,
  };
}

/** A version's task as its manifest set it; the tokenizer's location stays internal. */
function describeTask(task: NonNullable<ModelVersion["task"]>) {
  if (task.kind === "image-classification") return task;
  const { tokenizer: _tokenizer, ...described } = task;
  return described;
}

/** Registry management: versions, status, aliases, promotion and rollback. */
export class AdminService {
  readonly #deps: AdminDeps;

  constructor(deps: AdminDeps) {
    this.#deps = deps;
  }

  async handle(route: AdminRoute, body: string): Promise<{ status: number; body?: unknown }> {
    const registry = this.#deps.registry;
    switch (route.kind) {
      case "list-models":
        return { status: 200, body: { models: await registry.listModels() } };
      case "figures":
        return { status: 200, body: await this.#figures(route.model, route.minutes) };
      case "create-uploads":
        return { status: 201, body: await this.#createUploads(route.model, route.version, body) };
      case "list-versions": {
        const [versions, aliases] = await Promise.all([
          this.#versionsOf(route.model),
          registry.listAliases(route.model),
        ]);
        return {
          status: 200,
          body: { name: route.model, versions: versions.map((v) => describeVersion(v, aliases)) },
        };
      }
      case "get-version": {
        const [record, aliases] = await Promise.all([
          this.#version(route.model, route.version),
          registry.listAliases(route.model),
        ]);
        return { status: 200, body: describeVersion(record, aliases) };
      }
      case "delete-version":
        return this.#deleteVersion(route.model, route.version);
      case "set-variant":
        return { status: 200, body: await this.#setVariant(route.model, route.version, body) };
      case "set-capture":
        return { status: 200, body: await this.#setCapture(route.model, route.version, captureBody(body)) };
      case "stop-capture":
        return { status: 200, body: await this.#setCapture(route.model, route.version, CAPTURE_OFF) };
      case "list-aliases":
        await this.#versionsOf(route.model);
        return { status: 200, body: { name: route.model, aliases: await registry.listAliases(route.model) } };
      case "get-alias":
        return { status: 200, body: await this.#alias(route.model, route.alias) };
      case "set-alias":
        return { status: 200, body: await this.#setAlias(route.model, route.alias, body) };
      case "delete-alias": {
        if (!(await registry.deleteAlias(route.model, route.alias))) {
          throw new ModelNotFoundError(`model '${route.model}' has no alias '${route.alias}'`);
        }
        return { status: 204 };
      }
      case "rollback-alias":
        return { status: 200, body: await this.#rollback(route.model, route.alias) };
    }
  }

  /** The last `minutes` minutes, the current one included (partly counted), oldest first. */
  async #figures(name: string, minutes: number): Promise<FigureSeries> {
    const figures = this.#deps.figures;
    if (figures === undefined) throw new NotImplementedError("figures are not kept in this deployment");
    const versions = await this.#versionsOf(name);
    const now = new Date(this.#deps.now()).getTime();
    const to = new Date(now + MINUTE_MS);
    const from = new Date(now - (minutes - 1) * MINUTE_MS);
    return figures.series(name, from, to, versions);
  }

  /**
   * Presigned uploads of a new version's files, in the order to upload them (model.onnx last). Only for
   * a version the registry does not know and whose model is not in the bucket yet: nothing published
   * is overwritten.
   */
  async #createUploads(name: string, version: number, body: string) {
    const uploads = this.#deps.uploads;
    if (uploads === undefined) {
      throw new NotImplementedError("publishing through presigned uploads is not set up in this deployment");
    }
    if (version > MAX_VERSION)
      throw new InvalidRequestError(`a version is a positive integer up to ${MAX_VERSION}`);
    const parsed = createUploadsSchema.safeParse(jsonBody(body, UPLOADS_EXAMPLE));
    if (!parsed.success)
      throw new InvalidRequestError(`${describeZodError(parsed.error)}: send ${UPLOADS_EXAMPLE}`);
    const existing = await this.#deps.registry.getVersionConsistent(name, version);
    if (existing !== undefined) {
      throw new ConflictError(
        `version ${version} of model '${name}' already exists (${existing.status}): publish a new version number`,
      );
    }
    if (await uploads.exists(modelKey(name, version))) {
      throw new ConflictError(
        `version ${version} of model '${name}' is already uploaded and being registered: publish a new version number`,
      );
    }
    const expiresIn = this.#deps.uploadExpiresSeconds ?? 3600;
    const files = [...parsed.data].sort(uploadOrder);
    const tickets = await Promise.all(
      files.map(async (file): Promise<VersionUpload> => {
        const key = uploadKey(name, version, file.name);
        if (!("parts" in file))
          return { file: file.name, key, url: await uploads.presignPut(key, expiresIn) };
        const multipart = await uploads.presignMultipart(key, file.parts, expiresIn);
        return { file: file.name, key, ...multipart };
      }),
    );
    return { name, version, expiresIn, uploads: tickets };
  }

  async #versionsOf(name: string): Promise<ModelVersion[]> {
    const versions = await this.#deps.registry.listVersions(name);
    if (versions.length === 0) throw new ModelNotFoundError(`model '${name}' not found`);
    return versions;
  }

  async #version(name: string, version: number): Promise<ModelVersion> {
    const record = await this.#deps.registry.getVersionConsistent(name, version);
    if (record === undefined) throw new ModelNotFoundError(`model '${name}' has no version ${version}`);
    return record;
  }

  async #alias(name: string, alias: string): Promise<AliasRecord> {
    const record = await this.#deps.registry.getAliasRecord(name, alias);
    if (record === undefined) throw new ModelNotFoundError(`model '${name}' has no alias '${alias}'`);
    return record;
  }

  async #setAlias(name: string, alias: string, body: string): Promise<AliasRecord> {
    const json = jsonBody(body, '{"version": 2}');
    const parsed = setAliasSchema.safeParse(json);
    if (!parsed.success) throw new InvalidRequestError(describeZodError(parsed.error));
    return this.#pointAlias(name, alias, await this.#version(name, parsed.data.version));
  }

  /**
   * Aliases only ever point at servable versions: moving one is how traffic moves. Takes the record
   * its caller has already read (consistently), so a rollback reads the version once.
   */
  async #pointAlias(name: string, alias: string, record: ModelVersion): Promise<AliasRecord> {
    if (!isServable(record)) {
      const why =
        record.status === "failed" ? `failed: ${record.reason ?? "no reason recorded"}` : record.status;
      throw new ConflictError(
        `version ${record.version} of model '${name}' cannot take traffic: it is ${why}`,
      );
    }
    return this.#deps.registry.setAlias(name, alias, record.version, this.#deps.now());
  }

  /**
   * An operator's choice of the variant a version serves, `original` to go back to the upload. Written
   * only while the version is in the status it was read in, so it never lands on a record that moved.
   */
  async #setVariant(name: string, version: number, body: string) {
    const json = jsonBody(body, '{"kind": "int8-dynamic"}');
    const parsed = setVariantSchema.safeParse(json);
    if (!parsed.success) throw new InvalidRequestError(describeZodError(parsed.error));
    const { kind } = parsed.data;
    return this.#change(name, version, "the variant was chosen", (record) =>
      chooseVariant(record, kind, this.#deps.now()),
    );
  }

  /** An operator's capture settings for one version, whatever its manifest said. */
  #setCapture(name: string, version: number, capture: CaptureSettings) {
    return this.#change(name, version, "its capture was set", () => ({
      capture,
      updatedAt: this.#deps.now(),
    }));
  }

  /**
   * Applies an operator's change to a version, written only while the version is in the status it was
   * read in (re-read and retried a few times), and answers the version's admin record.
   */
  async #change(
    name: string,
    version: number,
    what: string,
    changesFor: (record: ModelVersion) => Partial<Omit<ModelVersion, "name" | "version">>,
  ) {
    for (let attempt = 1; ; attempt++) {
      const record = await this.#version(name, version);
      const changes = changesFor(record);
      if (await this.#deps.registry.updateVersion(name, version, record.status, changes)) {
        const aliases = await this.#deps.registry.listAliases(name);
        return describeVersion({ ...record, ...changes }, aliases);
      }
      if (attempt >= VARIANT_CHOICE_ATTEMPTS) {
        throw new ConflictError(`version ${version} of model '${name}' kept changing while ${what}; retry`);
      }
    }
  }

  async #rollback(name: string, alias: string): Promise<AliasRecord> {
    const current = await this.#alias(name, alias);
    if (current.previous === undefined) {
      throw new ConflictError(`alias '${alias}' of model '${name}' has no earlier version to roll back to`);
    }
    const previous = await this.#deps.registry.getVersionConsistent(name, current.previous);
    if (previous === undefined) {
      throw new ConflictError(
        `alias '${alias}' of model '${name}' cannot roll back: its previous version ${current.previous} was deleted`,
      );
    }
    return this.#pointAlias(name, alias, previous);
  }

  async #deleteVersion(name: string, version: number) {
    await this.#version(name, version);
    const naming = (await this.#deps.registry.listAliases(name)).filter((alias) => alias.version === version);
    if (naming.length > 0) {
      const names = naming.map((alias) => `'${alias.alias}'`).join(", ");
      throw new ConflictError(
        `version ${version} of model '${name}' is the target of alias ${names}: move the alias first`,
      );
    }
    await this.#deps.registry.deleteVersion(name, version);
    await this.#deps.deleteUpload(name, version);
    return { status: 204 };
  }
}

/**
 * The registry changes that make `kind` serve `record`: `selected` on that variant alone (on none but
 * the original's own entry for `original`) and the choice recorded as an operator's. Throws 409 for what
 * cannot serve.
 */
function chooseVariant(
  record: ModelVersion,
  kind: string,
  at: string,
): Pick<ModelVersion, "variants" | "variantChoice" | "updatedAt"> {
  const id = `version ${record.version} of model '${record.name}'`;
  if (!isServable(record)) {
    const why =
      record.status === "failed" ? `failed: ${record.reason ?? "no reason recorded"}` : record.status;
    throw new ConflictError(`${id} cannot serve a variant: it is ${why}`);
  }
  if (kind !== ORIGINAL_VARIANT) {
    if (record.target === "sagemaker") {
      throw new ConflictError(
        `${id} is served by SageMaker, whose endpoint serves the original upload: only '${ORIGINAL_VARIANT}' can be chosen`,
      );
    }
    const variant = record.variants.find((candidate) => candidate.kind === kind);
    if (variant === undefined) {
      const built = record.variants.map((candidate) => candidate.kind);
      throw new ConflictError(
        built.length === 0
          ? `${id} has no variant '${kind}': it has no variants yet (optimization has not finished)`
          : `${id} has no variant '${kind}'; its variants are: ${built.join(", ")}`,
      );
    }
    if (variant.error !== undefined) {
      throw new ConflictError(`variant '${kind}' of ${id} failed: ${variant.error}`);
    }
    if (variant.artifact === undefined) {
      throw new ConflictError(`variant '${kind}' of ${id} was not built`);
    }
    // The gate bounds how far a chosen lossy variant may drift; one that missed it is not servable.
    if (variant.parity !== undefined && !variant.parity.passed) {
      throw new ConflictError(
        `variant '${kind}' of ${id} failed the parity gate (${variant.parity.reason ?? "outputs differ"}): it cannot serve`,
      );
    }
  }
  return {
    variants: record.variants.map((variant) => ({ ...variant, selected: variant.kind === kind })),
    variantChoice: { kind, by: "operator", at },
    updatedAt: at,
  };
}

/** An admin body: small JSON, refused before JSON.parse when it nests deeper than any request may. */
function jsonBody(body: string, example: string): unknown {
  if (nestsDeeperThan(body, MAX_JSON_DEPTH)) {
    throw new InvalidRequestError(
      `body nests deeper than ${MAX_JSON_DEPTH} levels; send JSON like ${example}`,
    );
  }
  try {
    return JSON.parse(body);
  } catch {
    throw new InvalidRequestError(`body must be JSON like ${example}`);
  }
}
