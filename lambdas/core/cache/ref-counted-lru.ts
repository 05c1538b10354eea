// A Map, not lru-cache: lru-cache evicts its oldest entry even if pinned or held, and cannot refuse a load.

/** What a caller holds between `acquire` or `load` and `release`. */
export interface CacheEntry<K, V> {
  readonly key: K;
  readonly value: V;
  readonly bytes: number;
  readonly pinned: boolean;
}

/** A load's first step (finding and sizing what to load) and its second (creating the value). */
export interface PreparedLoad<V> {
  readonly bytes: number;
  readonly create: () => Promise<V>;
}

export interface RefCountedLruOptions<K, V> {
  /** @default Infinity */
  readonly maxEntries?: number;
  /** Budget on the summed `bytes` of entries. @default Infinity */
  readonly maxBytes?: number;
  /** Frees a value once it is evicted or deleted and no caller holds it; its failures are ignored. */
  readonly dispose: (value: V, key: K) => Promise<void> | void;
  /**
   * Present: room is made before each load, from idle unpinned entries only, and a load that cannot
   * fit is refused with this error before it starts. Absent: a loaded entry is always admitted, then
   * least recently used entries, held ones included, are evicted until the budgets hold (the new
   * entry stays even when it alone is over them).
   */
  readonly noRoom?: (key: K, bytes: number) => Error;
  /** How long a failed `create` is remembered: meanwhile callers get the failure instead of a new load. @default 0 */
  readonly failureMemoryMs?: number;
  /**
   * The error callers get for a failed `create`: `retryInMs` is undefined for the load that just
   * failed, and the time left for a remembered one. @default the failure itself
   */
  readonly loadError?: (cause: Error, retryInMs: number | undefined) => Error;
  readonly now?: () => number;
}

class Entry<K, V> implements CacheEntry<K, V> {
  readonly key: K;
  readonly value: V;
  readonly bytes: number;
  /** Callers holding it: it is disposed only once this drops to zero. */
  busy: number;
  pinned = false;
  /** Evicted or deleted: disposed once `busy` drops to zero. */
  retired = false;
  disposed = false;

  constructor(key: K, value: V, bytes: number, busy: number) {
    this.key = key;
    this.value = value;
    this.bytes = bytes;
    this.busy = busy;
  }
}

class Loading<K, V> {
  /** Callers waiting on this load; the new entry starts held by each of them. */
  claims = 0;
  promise!: Promise<Entry<K, V>>;
}

const identity = (cause: Error) => cause;

/**
 * Values keyed by `K`, bounded by count and bytes with least recently used eviction, one load per key
 * at a time, failed loads optionally remembered for a while, and pinned entries never evicted. An
 * entry is disposed only when it has left the cache and no caller holds it.
 */
export class RefCountedLru<K, V> {
  readonly #options: RefCountedLruOptions<K, V>;
  readonly #maxEntries: number;
  readonly #maxBytes: number;
  readonly #now: () => number;
  readonly #loadError: (cause: Error, retryInMs: number | undefined) => Error;
  /** Insertion order is recency order. */
  readonly #entries = new Map<K, Entry<K, V>>();
  readonly #loading = new Map<K, Loading<K, V>>();
  readonly #failures = new Map<K, { error: Error; until: number }>();
  /** The key last moved to or added at the newest end of `#entries`. */
  #newest: K | undefined;
  /** Bytes of entries, and with `noRoom`, of loads that reserved room too. */
  #bytes = 0;
  /** Loads holding a reservation (with `noRoom`). */
  #reserved = 0;

  constructor(options: RefCountedLruOptions<K, V>) {
    this.#options = options;
    this.#maxEntries = options.maxEntries ?? Number.POSITIVE_INFINITY;
    this.#maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY;
    this.#now = options.now ?? Date.now;
    this.#loadError = options.loadError ?? identity;
  }

  get size(): number {
    return this.#entries.size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  has(key: K): boolean {
    return this.#entries.has(key);
  }

  /** Entries, least recently used first. */
  values(): IterableIterator<CacheEntry<K, V>> {
    return this.#entries.values();
  }

  /** Holds the entry for `key` if it is loaded, marking it most recently used; `release` it after. */
  acquire(key: K): CacheEntry<K, V> | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    // Moved to the newest end, unless it is there already (the common case of one hot key).
    if (key !== this.#newest) {
      this.#entries.delete(key);
      this.#entries.set(key, entry);
      this.#newest = key;
    }
    entry.busy += 1;
    return entry;
  }

  /**
   * Resolves with the entry for `key` held for this caller, loading it through `prepare` if needed.
   * Concurrent callers share one load; a failure of `prepare` reaches them as is and is not remembered.
   */
  load(key: K, prepare: () => Promise<PreparedLoad<V>>): Promise<CacheEntry<K, V>> {
    // The caller may have waited a turn since it last looked: another caller may have loaded it since.
    const loaded = this.acquire(key);
    if (loaded !== undefined) return Promise.resolve(loaded);
    const failure = this.#failures.get(key);
    if (failure !== undefined) {
      const left = failure.until - this.#now();
      if (left > 0) return Promise.reject(this.#loadError(failure.error, left));
      this.#failures.delete(key);
    }
    let loading = this.#loading.get(key);
    if (loading === undefined) {
      const record = new Loading<K, V>();
      record.promise = this.#create(key, prepare, record).finally(() => this.#loading.delete(key));
      this.#loading.set(key, record);
      loading = record;
    }
    loading.claims += 1;
    return loading.promise;
  }

  /** Ends a hold from `acquire` or `load`; returns a promise only when this disposes the entry. */
  release(held: CacheEntry<K, V>): Promise<void> | undefined {
    const entry = held as Entry<K, V>;
    entry.busy -= 1;
    return entry.retired ? this.#disposeIfIdle(entry) : undefined;
  }

  /** Keeps a held entry out of eviction; only `delete` or `close` removes it. */
  pin(held: CacheEntry<K, V>): void {
    (held as Entry<K, V>).pinned = true;
  }

  /** Removes `key` now and disposes it now, or when its last holder releases it. False if not loaded. */
  async delete(key: K): Promise<boolean> {
    const entry = this.#entries.get(key);
    if (entry === undefined) return false;
    this.#remove(entry);
    await this.#retire(entry);
    return true;
  }

  /** Removes every entry, disposing idle ones now and held ones on release; for shutdown and tests. */
  async close(): Promise<void> {
    const entries = [...this.#entries.values()];
    for (const entry of entries) this.#remove(entry);
    await Promise.all(entries.map((entry) => this.#retire(entry)));
  }

  /** Resolves with the new entry already held once for each caller that waited on it. */
  async #create(key: K, prepare: () => Promise<PreparedLoad<V>>, loading: Loading<K, V>) {
    const { bytes, create } = await prepare();
    const reserving = this.#options.noRoom !== undefined;
    if (reserving) await this.#reserve(key, bytes);
    let value: V;
    try {
      value = await create();
    } catch (error) {
      if (reserving) {
        this.#bytes -= bytes;
        this.#reserved -= 1;
      }
      const cause = error instanceof Error ? error : new Error(String(error));
      const memoryMs = this.#options.failureMemoryMs ?? 0;
      if (memoryMs > 0) this.#failures.set(key, { error: cause, until: this.#now() + memoryMs });
      throw this.#loadError(cause, undefined);
    }
    // Later callers find it in the map; earlier ones were counted while it was being loaded.
    const entry = new Entry(key, value, bytes, loading.claims);
    this.#entries.set(key, entry);
    this.#newest = key;
    if (reserving) {
      this.#reserved -= 1;
    } else {
      this.#bytes += bytes;
      await this.#evictBeyondBudget(key);
    }
    return entry;
  }

  #over(bytes: number, entries: number): boolean {
    return entries > this.#maxEntries || bytes > this.#maxBytes;
  }

  /** Evicts least recently used unpinned entries, held ones too, never `keep`, until within both bounds. */
  async #evictBeyondBudget(keep: K): Promise<void> {
    const evicted: Entry<K, V>[] = [];
    for (const entry of this.#entries.values()) {
      if (!this.#over(this.#bytes, this.#entries.size)) break;
      if (entry.key === keep || entry.pinned) continue;
      this.#remove(entry);
      evicted.push(entry);
    }
    await Promise.all(evicted.map((entry) => this.#retire(entry)));
  }

  /**
   * Reserves room for one entry of `bytes`, evicting idle unpinned entries (least recently used first).
   * Checking and reserving happen in one synchronous step, so concurrent loads cannot claim the same room;
   * if there is not room enough, nothing is evicted.
   */
  async #reserve(key: K, bytes: number): Promise<void> {
    const victims: Entry<K, V>[] = [];
    let freed = 0;
    const count = () => this.#entries.size + this.#reserved + 1 - victims.length;
    for (const entry of this.#entries.values()) {
      if (!this.#over(this.#bytes - freed + bytes, count())) break;
      if (entry.pinned || entry.busy > 0) continue;
      victims.push(entry);
      freed += entry.bytes;
    }
    if (this.#over(this.#bytes - freed + bytes, count())) throw this.#options.noRoom!(key, bytes);
    for (const victim of victims) this.#remove(victim);
    this.#bytes += bytes;
    this.#reserved += 1;
    await Promise.all(victims.map((victim) => this.#retire(victim)));
  }

  #remove(entry: Entry<K, V>): void {
    if (this.#entries.get(entry.key) !== entry) return;
    this.#entries.delete(entry.key);
    this.#bytes -= entry.bytes;
  }

  #retire(entry: Entry<K, V>): Promise<void> {
    entry.retired = true;
    return this.#disposeIfIdle(entry) ?? Promise.resolve();
  }

  #disposeIfIdle(entry: Entry<K, V>): Promise<void> | undefined {
    if (!entry.retired || entry.busy > 0 || entry.disposed) return undefined;
    entry.disposed = true;
    return this.#dispose(entry);
  }

  async #dispose(entry: Entry<K, V>): Promise<void> {
    try {
      await this.#options.dispose(entry.value, entry.key);
    } catch {
      // The entry has left the cache either way, and the caller that released it has its answer.
    }
  }
}
