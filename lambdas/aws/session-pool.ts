import { ModelNotReadyError } from "#core/errors.ts";

export interface PooledSession {
  release(): Promise<void>;
}

export interface SessionPoolOptions<S extends PooledSession> {
  /** Creates a session from a verified local artifact. */
  readonly create: (path: string) => Promise<S>;
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
  /** Runs in progress: an evicted session is released only once this drops to zero. */
  busy: number;
  retired: boolean;
}

/**
 * onnxruntime sessions keyed by artifact digest: bounded by count and bytes with least recently
 * used eviction, one creation per key at a time, and failed loads remembered only briefly.
 */
export class SessionPool<S extends PooledSession> {
  readonly #options: SessionPoolOptions<S>;
  readonly #now: () => number;
  /** Insertion order is recency order. */
  readonly #entries = new Map<string, Entry<S>>();
  readonly #loading = new Map<string, Promise<Entry<S>>>();
  readonly #failures = new Map<string, { error: Error; until: number }>();
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

  /**
   * Runs `work` with the session for `key`, creating it from `locate()`'s path on first use. The
   * session cannot be released while `work` runs, even if it is evicted meanwhile.
   */
  async use<T>(key: string, bytes: number, locate: () => Promise<string>, work: (session: S) => Promise<T>) {
    let entry = this.#entries.get(key) ?? (await this.#load(key, bytes, locate));
    // A session evicted between its creation and this line is already released: load it again.
    while (entry.retired) entry = this.#entries.get(key) ?? (await this.#load(key, bytes, locate));
    if (this.#entries.get(key) === entry) {
      this.#entries.delete(key);
      this.#entries.set(key, entry);
    }
    entry.busy += 1;
    try {
      return await work(entry.session);
    } finally {
      entry.busy -= 1;
      if (entry.retired && entry.busy === 0) await entry.session.release().catch(() => undefined);
    }
  }

  /** Releases every session; for shutdown and tests. */
  async close(): Promise<void> {
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    this.#bytes = 0;
    await Promise.all(entries.map((entry) => this.#retire(entry)));
  }

  #load(key: string, bytes: number, locate: () => Promise<string>): Promise<Entry<S>> {
    const failure = this.#failures.get(key);
    if (failure !== undefined) {
      if (failure.until > this.#now()) {
        const seconds = Math.ceil((failure.until - this.#now()) / 1000);
        throw new ModelNotReadyError(
          `model failed to load (${failure.error.message}); retrying in ${seconds} s`,
          {
            cause: failure.error,
          },
        );
      }
      this.#failures.delete(key);
    }
    let loading = this.#loading.get(key);
    if (loading === undefined) {
      loading = this.#create(key, bytes, locate).finally(() => this.#loading.delete(key));
      this.#loading.set(key, loading);
    }
    return loading;
  }

  async #create(key: string, bytes: number, locate: () => Promise<string>): Promise<Entry<S>> {
    // A failed download belongs to one S3 object, not to these bytes: it propagates as is, uncached.
    const path = await locate();
    let session: S;
    try {
      session = await this.#options.create(path);
    } catch (error) {
      const cause = error instanceof Error ? error : new Error(String(error));
      this.#failures.set(key, { error: cause, until: this.#now() + this.#options.retryAfterMs });
      throw new ModelNotReadyError(`model failed to load: ${cause.message}`, { cause });
    }
    const entry: Entry<S> = { session, bytes, busy: 0, retired: false };
    this.#entries.set(key, entry);
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
    if (entry.busy === 0) await entry.session.release().catch(() => undefined);
  }
}
