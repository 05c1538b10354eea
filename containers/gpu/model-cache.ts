import { MaasError } from "#core/errors.ts";

/** There is no room for the model within the memory budget: SageMaker's cue (HTTP 507) to unload others. */
export class InsufficientMemoryError extends MaasError {
  constructor(message: string) {
    super(507, "insufficient_memory", message);
    this.name = "InsufficientMemoryError";
  }
}

export interface ModelCacheOptions<M> {
  /** Memory for loaded models, in estimated bytes. */
  readonly budgetBytes: number;
  /** What a model will occupy once loaded (from its file size). */
  readonly estimateBytes: (path: string) => Promise<number>;
  readonly load: (key: string, path: string) => Promise<M>;
  readonly unload: (model: M) => Promise<void>;
}

interface Entry<M> {
  readonly key: string;
  readonly path: string;
  readonly bytes: number;
  readonly model: M;
  /** Loaded through the multi-model load API: only SageMaker's unload call removes it. */
  pinned: boolean;
  /** Calls using the model now: it is released only once this drops to zero. */
  busy: number;
  retired: boolean;
  released: boolean;
}

interface Loading<M> {
  claims: number;
  promise: Promise<Entry<M>>;
}

export interface CachedModel<M> {
  readonly model: M;
  readonly key: string;
  readonly path: string;
  readonly bytes: number;
  readonly pinned: boolean;
}

/**
 * Loaded models under a memory budget. Models loaded on demand are unloaded least recently used
 * first when room is needed; models SageMaker loaded explicitly (pinned) stay until it unloads them,
 * as its multi-model contract expects. A model in use is never released under a caller.
 */
export class ModelCache<M> {
  readonly #options: ModelCacheOptions<M>;
  /** Insertion order is recency order. */
  readonly #entries = new Map<string, Entry<M>>();
  readonly #loading = new Map<string, Loading<M>>();
  #usedBytes = 0;

  constructor(options: ModelCacheOptions<M>) {
    this.#options = options;
  }

  get budgetBytes(): number {
    return this.#options.budgetBytes;
  }

  /** Estimated bytes of loaded models and models being loaded. */
  get usedBytes(): number {
    return this.#usedBytes;
  }

  /** Loaded models, least recently used first. */
  list(): CachedModel<M>[] {
    return [...this.#entries.values()];
  }

  /** Runs `work` with the model for `key`, loading it from `path` first if needed. */
  async use<T>(key: string, path: () => Promise<string>, work: (model: M) => Promise<T>): Promise<T> {
    const entry = this.#claim(key) ?? (await this.#load(key, await path(), false));
    try {
      return await work(entry.model);
    } finally {
      entry.busy -= 1;
      // Only a retired model is ever released: a live one costs no wait here.
      if (entry.retired) await this.#releaseIfIdle(entry);
    }
  }

  /** Loads and pins a model (the multi-model load API). Returns false if it was loaded already. */
  async load(key: string, path: string): Promise<boolean> {
    const existing = this.#claim(key);
    const entry = existing ?? (await this.#load(key, path, true));
    entry.pinned = true;
    entry.busy -= 1;
    return existing === undefined;
  }

  /** Unloads a model now, or as soon as its last call finishes. Returns false if it was not loaded. */
  async unload(key: string): Promise<boolean> {
    const entry = this.#entries.get(key);
    if (entry === undefined) return false;
    this.#remove(entry);
    await this.#retire(entry);
    return true;
  }

  async close(): Promise<void> {
    const entries = [...this.#entries.values()];
    for (const entry of entries) this.#remove(entry);
    await Promise.all(entries.map((entry) => this.#retire(entry)));
  }

  #claim(key: string): Entry<M> | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    entry.busy += 1;
    return entry;
  }

  /** Resolves with the entry already claimed once for each caller that waited on it. */
  #load(key: string, path: string, pinned: boolean): Promise<Entry<M>> {
    // Finding the path took a turn of the event loop: another caller may have loaded the model since.
    const loaded = this.#claim(key);
    if (loaded !== undefined) return Promise.resolve(loaded);
    let loading = this.#loading.get(key);
    if (loading === undefined) {
      const record: Loading<M> = { claims: 0, promise: Promise.resolve() as unknown as Promise<Entry<M>> };
      record.promise = this.#create(key, path, pinned, record).finally(() => this.#loading.delete(key));
      this.#loading.set(key, record);
      loading = record;
    }
    loading.claims += 1;
    return loading.promise;
  }

  async #create(key: string, path: string, pinned: boolean, loading: Loading<M>): Promise<Entry<M>> {
    const bytes = await this.#options.estimateBytes(path);
    await this.#reserve(key, bytes);
    let model: M;
    try {
      model = await this.#options.load(key, path);
    } catch (error) {
      this.#usedBytes -= bytes;
      throw error;
    }
    const entry: Entry<M> = {
      key,
      path,
      bytes,
      model,
      pinned,
      busy: loading.claims,
      retired: false,
      released: false,
    };
    this.#entries.set(key, entry);
    return entry;
  }

  /**
   * Reserves `bytes` of the budget, unloading idle, unpinned models (least recently used first) to
   * make room. Checking and reserving happen in one synchronous step, so concurrent loads cannot both
   * claim the same room.
   */
  async #reserve(key: string, bytes: number): Promise<void> {
    const budget = this.#options.budgetBytes;
    if (bytes > budget) {
      throw new InsufficientMemoryError(
        `model '${key}' needs about ${bytes} bytes; the whole budget is ${budget} bytes (MAAS_MEMORY_BUDGET_BYTES)`,
      );
    }
    const victims: Entry<M>[] = [];
    let freed = 0;
    for (const entry of this.#entries.values()) {
      if (this.#usedBytes - freed + bytes <= budget) break;
      if (entry.pinned || entry.busy > 0) continue;
      victims.push(entry);
      freed += entry.bytes;
    }
    if (this.#usedBytes - freed + bytes > budget) {
      throw new InsufficientMemoryError(
        `no room for model '${key}' (about ${bytes} bytes): ${this.#usedBytes} of ${budget} bytes are held by models in use or loaded by SageMaker`,
      );
    }
    for (const victim of victims) this.#remove(victim);
    this.#usedBytes += bytes;
    await Promise.all(victims.map((victim) => this.#retire(victim)));
  }

  #remove(entry: Entry<M>): void {
    if (this.#entries.get(entry.key) !== entry) return;
    this.#entries.delete(entry.key);
    this.#usedBytes -= entry.bytes;
  }

  async #retire(entry: Entry<M>): Promise<void> {
    entry.retired = true;
    await this.#releaseIfIdle(entry);
  }

  async #releaseIfIdle(entry: Entry<M>): Promise<void> {
    if (!entry.retired || entry.busy > 0 || entry.released) return;
    entry.released = true;
    await this.#options.unload(entry.model).catch(() => undefined);
  }
}
