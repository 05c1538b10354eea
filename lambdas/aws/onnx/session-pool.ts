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
  readonly now?: () => number;
}

interface Entry<S> {
  readonly session: S;
  readonly bytes: number;
  /** Runs in progress or claimed: an evicted session is released only once this drops to zero. */
  busy: number;
  retired: boolean;
  released: boolean;
}

interface Loading<S> {
  /** Callers waiting on this creation; the new session starts claimed by each of them. */
  claims: number;
  promise: Promise<Entry<S>>;
}

/**
 * onnxruntime sessions keyed by artifact digest: bounded by count and bytes with least recently
 * used eviction, one creation per key at a time, and failed loads remembered only briefly. A session
 * is never released while a caller holds it, even if it is evicted meanwhile.
 */
export class SessionPool<S extends PooledSession> {
  readonly #options: SessionPoolOptions<S>;
  readonly #now: () => number;
  /** Insertion order is recency order. */
  readonly #entries = new Map<string, Entry<S>>();
  readonly #loading = new Map<string, Loading<S>>();
  readonly #failures = new Map<string, { error: Error; until: number }>();
  /** The key last moved to or added at the newest end of `#entries`. */
  #newest: string | undefined;
  #bytes = 0;

  constructor(options: SessionPoolOptions<S>) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  get size(): number {
    return this.#entries.size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  has(key: string): boolean {
    return this.#entries.has(key);
  }

  /** Runs `work` with the session for `key`, creating it from `locate()`'s artifact on first use. */
  async use<T>(
    key: string,
    bytes: number,
    locate: () => Promise<LocalArtifact>,
    work: (session: S) => Promise<T>,
  ) {
    const entry = this.#claimLoaded(key) ?? (await this.#load(key, bytes, locate));
    try {
      return await work(entry.session);
    } finally {
      entry.busy -= 1;
      // Only a retired session is ever released: a live one costs no wait here.
      if (entry.retired) await this.#releaseIfIdle(entry);
    }
  }

  /** Releases every session; for shutdown and tests. */
  async close(): Promise<void> {
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    this.#bytes = 0;
    await Promise.all(entries.map((entry) => this.#retire(entry)));
  }

  #claimLoaded(key: string): Entry<S> | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    // Moved to the newest end, unless it is there already (the common case of one hot model).
    if (key !== this.#newest) {
      this.#entries.delete(key);
      this.#entries.set(key, entry);
      this.#newest = key;
    }
    entry.busy += 1;
    return entry;
  }

  /** Resolves with the new session already claimed for this caller. */
  #load(key: string, bytes: number, locate: () => Promise<LocalArtifact>): Promise<Entry<S>> {
    const failure = this.#failures.get(key);
    if (failure !== undefined) {
      if (failure.until > this.#now()) {
        const seconds = Math.ceil((failure.until - this.#now()) / 1000);
        const message = `model failed to load (${failure.error.message}); retrying in ${seconds} s`;
        return Promise.reject(new ModelNotReadyError(message, { cause: failure.error }));
      }
      this.#failures.delete(key);
    }
    let loading = this.#loading.get(key);
    if (loading === undefined) {
      const record: Loading<S> = { claims: 0, promise: Promise.resolve() as unknown as Promise<Entry<S>> };
      record.promise = this.#create(key, bytes, locate, record).finally(() => this.#loading.delete(key));
      this.#loading.set(key, record);
      loading = record;
    }
    loading.claims += 1;
    return loading.promise;
  }

  async #create(key: string, bytes: number, locate: () => Promise<LocalArtifact>, loading: Loading<S>) {
    // A failed download belongs to one S3 object, not to these bytes: it propagates as is, uncached.
    const artifact = await locate();
    let session: S;
    try {
      session = await this.#options.create(artifact);
    } catch (error) {
      const cause = error instanceof Error ? error : new Error(String(error));
      this.#failures.set(key, { error: cause, until: this.#now() + this.#options.retryAfterMs });
      throw new ModelNotReadyError(`model failed to load: ${cause.message}`, { cause });
    }
    // Later callers find it in the map; earlier ones were counted while it was being created.
    const entry: Entry<S> = { session, bytes, busy: loading.claims, retired: false, released: false };
    this.#entries.set(key, entry);
    this.#newest = key;
    this.#bytes += bytes;
    await this.#evictBeyondBudget(key);
    return entry;
  }

  /** Evicts least recently used sessions, never the one just created, until within both bounds. */
  async #evictBeyondBudget(keep: string): Promise<void> {
    const evicted: Entry<S>[] = [];
    for (const [key, entry] of this.#entries) {
      const over = this.#entries.size > this.#options.maxSessions || this.#bytes > this.#options.maxBytes;
      if (!over) break;
      if (key === keep) continue;
      this.#entries.delete(key);
      this.#bytes -= entry.bytes;
      evicted.push(entry);
    }
    await Promise.all(evicted.map((entry) => this.#retire(entry)));
  }

  async #retire(entry: Entry<S>): Promise<void> {
    entry.retired = true;
    await this.#releaseIfIdle(entry);
  }

  async #releaseIfIdle(entry: Entry<S>): Promise<void> {
    if (!entry.retired || entry.busy > 0 || entry.released) return;
    entry.released = true;
    await entry.session.release().catch(() => undefined);
  }
}
