import { RefCountedLru } from "#core/cache/ref-counted-lru.ts";
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

interface Loaded<M> {
  readonly model: M;
  readonly path: string;
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
  readonly #models: RefCountedLru<string, Loaded<M>>;

  constructor(options: ModelCacheOptions<M>) {
    this.#options = options;
    const budget = options.budgetBytes;
    this.#models = new RefCountedLru<string, Loaded<M>>({
      maxBytes: budget,
      dispose: (loaded) => options.unload(loaded.model),
      noRoom: (key, bytes) =>
        new InsufficientMemoryError(
          bytes > budget
            ? `model '${key}' needs about ${bytes} bytes; the whole budget is ${budget} bytes (MAAS_MEMORY_BUDGET_BYTES)`
            : `no room for model '${key}' (about ${bytes} bytes): ${this.#models.bytes} of ${budget} bytes are held by models in use or loaded by SageMaker`,
        ),
    });
  }

  get budgetBytes(): number {
    return this.#options.budgetBytes;
  }

  /** Estimated bytes of loaded models and models being loaded. */
  get usedBytes(): number {
    return this.#models.bytes;
  }

  /** Whether the model for `key` is loaded. */
  has(key: string): boolean {
    return this.#models.has(key);
  }

  /** Loaded models, least recently used first. */
  list(): CachedModel<M>[] {
    return Array.from(this.#models.values(), ({ key, value, bytes, pinned }) => ({
      model: value.model,
      key,
      path: value.path,
      bytes,
      pinned,
    }));
  }

  /** Runs `work` with the model for `key`, loading it from `path` first if needed. */
  async use<T>(key: string, path: () => Promise<string>, work: (model: M) => Promise<T>): Promise<T> {
    const entry = this.#models.acquire(key) ?? (await this.#load(key, await path()));
    try {
      return await work(entry.value.model);
    } finally {
      // Only an unloaded model is ever released: a live one costs no wait here.
      const released = this.#models.release(entry);
      if (released !== undefined) await released;
    }
  }

  /** Loads and pins a model (the multi-model load API). Returns false if it was loaded already. */
  async load(key: string, path: string): Promise<boolean> {
    const existing = this.#models.acquire(key);
    const entry = existing ?? (await this.#load(key, path));
    this.#models.pin(entry);
    await this.#models.release(entry);
    return existing === undefined;
  }

  /** Unloads a model now, or as soon as its last call finishes. Returns false if it was not loaded. */
  unload(key: string): Promise<boolean> {
    return this.#models.delete(key);
  }

  close(): Promise<void> {
    return this.#models.close();
  }

  #load(key: string, path: string) {
    return this.#models.load(key, async () => ({
      bytes: await this.#options.estimateBytes(path),
      create: async () => ({ model: await this.#options.load(key, path), path }),
    }));
  }
}
