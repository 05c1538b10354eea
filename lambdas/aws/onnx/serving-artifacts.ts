import { AwsHttpError } from "#aws/http/aws-http.ts";
import { ArtifactIntegrityError, ModelNotReadyError } from "#core/errors.ts";
import {
  type ArtifactRef,
  ORIGINAL_VARIANT,
  type ServableVersion,
  servingArtifact,
  servingVariantKind,
} from "#core/model.ts";
import type { ArtifactCache, LocalArtifact } from "./artifact-cache.ts";

/** Puts an upload's bytes back under the content-addressed key they were verified against. */
export interface ArtifactRestorer {
  restore(
    upload: { readonly bucket: string; readonly key: string; readonly etag: string },
    to: ArtifactRef,
  ): Promise<void>;
}

/** What happened while a version's artifact was looked for, for the logs. */
export interface RecoveryEvent {
  readonly event: "variant-fallback" | "artifact-restored" | "restore-failed" | "artifact-lost";
  readonly model: string;
  readonly version: number;
  readonly key: string;
  readonly reason: string;
}

export interface ServingArtifactsOptions {
  /** @default none: a recovered artifact is served from the upload but not put back in the bucket */
  readonly restorer?: ArtifactRestorer;
  readonly report?: (event: RecoveryEvent) => void;
  /** How long a selected variant found missing is passed over, and a lost version answers 503 without looking again. @default 30 000 */
  readonly rememberMs?: number;
  readonly now?: () => number;
}

/** The selected variant is missing or corrupt: the original serves instead (ask again for its ref). */
export class VariantUnavailableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "VariantUnavailableError";
  }
}

/** An object gone from the bucket (404, or 403 where the role may not list it) or whose bytes no longer match. */
function isLostObject(error: unknown): boolean {
  return (
    error instanceof ArtifactIntegrityError ||
    (error instanceof AwsHttpError && (error.status === 404 || error.status === 403))
  );
}

/**
 * Finds a verified local copy of what a version serves, healing what it can: a selected variant that is
 * missing or corrupt falls back to the original (reported, and remembered for a while); an original
 * that is missing or corrupt is fetched from the version's upload key when the upload still has the
 * same sha256 (the cache verifies it), and put back under its content-addressed key. Only when nothing
 * verifiable is left does the version answer 503, with the reason.
 */
export class ServingArtifacts {
  readonly #cache: ArtifactCache;
  readonly #options: ServingArtifactsOptions;
  readonly #rememberMs: number;
  readonly #now: () => number;
  /** Selected variants found missing, by sha256: until when the original serves instead. */
  readonly #fallbacks = new Map<string, number>();
  /** Originals found missing with no usable upload, by sha256. */
  readonly #lost = new Map<string, { until: number; error: ModelNotReadyError }>();

  constructor(cache: ArtifactCache, options: ServingArtifactsOptions = {}) {
    this.#cache = cache;
    this.#options = options;
    this.#rememberMs = options.rememberMs ?? 30_000;
    this.#now = options.now ?? Date.now;
  }

  /** The artifact that serves the version now: its selected one, unless that was found missing lately. */
  ref(version: ServableVersion): ArtifactRef {
    const selected = servingArtifact(version);
    if (selected === version.artifact) return selected;
    const until = this.#fallbacks.get(selected.sha256);
    if (until === undefined) return selected;
    if (until > this.#now()) return version.artifact;
    this.#fallbacks.delete(selected.sha256);
    return selected;
  }

  /** The kind of what `ref` serves, for x-maas-variant. */
  variant(version: ServableVersion): string {
    return this.ref(version) === version.artifact ? ORIGINAL_VARIANT : servingVariantKind(version);
  }

  /** A verified local copy of `ref` (what `ref(version)` returned). */
  async load(version: ServableVersion, ref: ArtifactRef): Promise<LocalArtifact> {
    try {
      return await this.#cache.load(ref);
    } catch (error) {
      if (!isLostObject(error)) throw error;
      if (ref !== version.artifact) {
        this.#fallbacks.set(ref.sha256, this.#now() + this.#rememberMs);
        this.#report(version, "variant-fallback", ref, error);
        throw new VariantUnavailableError(`variant ${ref.key} is unavailable`, { cause: error });
      }
      return await this.#recoverOriginal(version, error);
    }
  }

  async #recoverOriginal(version: ServableVersion, lostError: unknown): Promise<LocalArtifact> {
    const original = version.artifact;
    const known = this.#lost.get(original.sha256);
    if (known !== undefined && known.until > this.#now()) throw known.error;
    const upload = version.source;
    if (upload === undefined)
      return this.#giveUp(version, lostError, "and the version records no upload to rebuild it from");
    const fromUpload: ArtifactRef = { ...original, key: upload.key };
    let local: LocalArtifact;
    try {
      // Verified against the original's sha256: an upload replaced (or rewritten at registration) does not pass.
      local = await this.#cache.load(fromUpload);
    } catch (error) {
      if (!isLostObject(error)) throw error;
      return this.#giveUp(
        version,
        error,
        `and its upload ${upload.key} is gone or no longer has the same bytes`,
      );
    }
    this.#lost.delete(original.sha256);
    const restorer = this.#options.restorer;
    if (restorer !== undefined) {
      // Put back for every other environment; this one already serves from its verified copy.
      restorer.restore({ bucket: original.bucket, ...upload }, original).then(
        () => this.#report(version, "artifact-restored", original, lostError),
        (error: unknown) => this.#report(version, "restore-failed", original, error),
      );
    }
    return local;
  }

  #giveUp(version: ServableVersion, cause: unknown, why: string): never {
    const original = version.artifact;
    const error = new ModelNotReadyError(
      `model '${version.name}' version ${version.version} cannot be served: its artifact (sha256 ${original.sha256}) is missing or corrupt ${why}; publish it again`,
      { cause },
    );
    this.#lost.set(original.sha256, { until: this.#now() + this.#rememberMs, error });
    this.#report(version, "artifact-lost", original, cause);
    throw error;
  }

  #report(version: ServableVersion, event: RecoveryEvent["event"], ref: ArtifactRef, cause: unknown): void {
    this.#options.report?.({
      event,
      model: version.name,
      version: version.version,
      key: ref.key,
      reason: cause instanceof Error ? cause.message : String(cause),
    });
  }
}
