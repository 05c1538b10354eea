import { access } from "node:fs/promises";
import { type PreparedLoad, RefCountedLru } from "#core/cache/ref-counted-lru.ts";
import { ModelNotReadyError } from "#core/errors.ts";
import type { LocalArtifact } from "./artifact-cache.ts";

export interface PooledSession {
  release(): Promise<void>;
}

export interface SessionPoolOptions<S extends PooledSession> {
  /** Creates a session from a verified local artifact: its path, or its bytes. */
  readonly create: (artifact: LocalArtifact) => Promise<S>;
  readonly maxSessions: number;
  /** Budget on the summed artifact sizes of open sessions, a proxy for their memory. */
  readonly maxBytes: number;
  /** After a failed load, callers get the failure for this long; then the load is tried again. */
  readonly retryAfterMs: number;
  /**
   * Keeps a located artifact's file from being deleted until the returned function is called, or
   * undefined if it is gone already (ArtifactCache's `hold`). @default files are never deleted
   */
  readonly hold?: (artifact: LocalArtifact) => (() => void) | undefined;
  readonly now?: () => number;
}

function notReady(cause: Error, retryInMs: number | undefined): Error {
  if (retryInMs === undefined)
    return new ModelNotReadyError(`model failed to load: ${cause.message}`, { cause });
  const message = `model failed to load (${cause.message}); retrying in ${Math.ceil(retryInMs / 1000)} s`;
  return new ModelNotReadyError(message, { cause });
}

/**
 * onnxruntime sessions keyed by artifact digest: bounded by count and bytes with least recently
 * used eviction, one creation per key at a time, and failed loads remembered only briefly. A session
 * is never released while a caller holds it, even if it is evicted meanwhile.
 */
export class SessionPool<S extends PooledSession> {
  readonly #create: (artifact: LocalArtifact) => Promise<S>;
  /** Undefined when no cache deletes the files: then a missing file is the model's failure. */
  readonly #hold: ((artifact: LocalArtifact) => (() => void) | undefined) | undefined;
  readonly #sessions: RefCountedLru<string, S>;

  constructor(options: SessionPoolOptions<S>) {
    this.#create = options.create;
    this.#hold = options.hold;
    this.#sessions = new RefCountedLru<string, S>({
      maxEntries: options.maxSessions,
      maxBytes: options.maxBytes,
      dispose: (session) => session.release(),
      failureMemoryMs: options.retryAfterMs,
      loadError: notReady,
      now: options.now,
    });
  }

  get size(): number {
    return this.#sessions.size;
  }

  get bytes(): number {
    return this.#sessions.bytes;
  }

  has(key: string): boolean {
    return this.#sessions.has(key);
  }

  /** Runs `work` with the session for `key`, creating it from `locate()`'s artifact on first use. */
  async use<T>(
    key: string,
    bytes: number,
    locate: () => Promise<LocalArtifact>,
    work: (session: S) => Promise<T>,
  ) {
    const entry =
      this.#sessions.acquire(key) ?? (await this.#sessions.load(key, () => this.#prepare(bytes, locate)));
    try {
      return await work(entry.value);
    } finally {
      // Only an evicted session is ever released: a live one costs no wait here.
      const released = this.#sessions.release(entry);
      if (released !== undefined) await released;
    }
  }

  /**
   * Drops `session` from the pool if it is still the one kept for `key` (a session that can no longer
   * run); it is released once its last caller is done.
   */
  async discard(key: string, session: S): Promise<void> {
    for (const entry of this.#sessions.values()) {
      if (entry.key === key && entry.value === session) await this.#sessions.delete(key);
    }
  }

  /** Releases every session; for shutdown and tests. */
  close(): Promise<void> {
    return this.#sessions.close();
  }

  // A failed download belongs to one S3 object, not to these bytes: it propagates as is, unremembered.
  async #prepare(bytes: number, locate: () => Promise<LocalArtifact>): Promise<PreparedLoad<S>> {
    const first = await this.#locateHeld(locate);
    return {
      bytes,
      create: async () => {
        const [artifact, release] = first;
        try {
          return await this.#create(artifact);
        } catch (error) {
          // A file deleted behind the cache's back is no fault of the model: fetched again, once.
          const vanished =
            this.#hold !== undefined && typeof artifact === "string" && !(await exists(artifact));
          if (!vanished) throw error;
        } finally {
          release();
        }
        const [again, releaseAgain] = await this.#locateHeld(locate);
        try {
          return await this.#create(again);
        } finally {
          releaseAgain();
        }
      },
    };
  }

  /** The artifact, held until its session is created; located again, once, if it went in between. */
  async #locateHeld(locate: () => Promise<LocalArtifact>): Promise<[LocalArtifact, () => void]> {
    const artifact = await locate();
    if (this.#hold === undefined) return [artifact, () => undefined];
    const release = this.#hold(artifact);
    if (release !== undefined) return [artifact, release];
    const again = await locate();
    return [again, this.#hold(again) ?? (() => undefined)];
  }
}

function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
