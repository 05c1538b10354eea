import type { ModelVersion } from "./model.ts";
import type { ModelRegistry, ModelSummary } from "./registry.ts";

export interface RegistryCacheOptions {
  /** How long a found record is served from memory. */
  readonly ttlMs: number;
  /** How long "not found" is remembered: short, so a new upload shows up quickly. */
  readonly missTtlMs: number;
  /** Entries kept at most; the oldest go first. */
  readonly maxEntries: number;
  readonly now?: () => number;
}

/**
 * Whether a read can be kept for the full TTL. "Not found", empty lists and versions still
 * registering are about to change: they get the short TTL, so a new version serves promptly.
 */
function isSettled(result: unknown): boolean {
  if (result === undefined) return false;
  const registering = (value: unknown) =>
    typeof value === "object" && value !== null && (value as Partial<ModelVersion>).status === "registering";
  if (Array.isArray(result)) return result.length > 0 && !result.some(registering);
  return !registering(result);
}

interface Entry {
  readonly expires: number;
  readonly value: Promise<unknown>;
}

/**
 * Registry reads with a short in-memory TTL, in front of DynamoDB. Concurrent misses for one key
 * share one read, and a failed read is not remembered.
 */
export class CachedModelRegistry implements ModelRegistry {
  readonly #inner: ModelRegistry;
  readonly #options: RegistryCacheOptions;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();

  constructor(inner: ModelRegistry, options: RegistryCacheOptions) {
    this.#inner = inner;
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  getVersion(name: string, version: number): Promise<ModelVersion | undefined> {
    return this.#cached(`v\0${name}\0${version}`, () => this.#inner.getVersion(name, version));
  }

  getAlias(name: string, alias: string): Promise<number | undefined> {
    return this.#cached(`a\0${name}\0${alias}`, () => this.#inner.getAlias(name, alias));
  }

  listVersions(name: string): Promise<ModelVersion[]> {
    return this.#cached(`l\0${name}`, () => this.#inner.listVersions(name));
  }

  listModels(): Promise<ModelSummary[]> {
    return this.#cached("m", () => this.#inner.listModels());
  }

  /** Drops every cached entry; for tests and for callers that just wrote. */
  clear(): void {
    this.#entries.clear();
  }

  #cached<T>(key: string, load: () => Promise<T>): Promise<T> {
    const now = this.#now();
    const hit = this.#entries.get(key);
    if (hit !== undefined && hit.expires > now) return hit.value as Promise<T>;

    const value = load();
    // Until it settles the entry lives for the hit TTL; then it is re-timed by outcome.
    this.#set(key, { expires: now + this.#options.ttlMs, value });
    value.then(
      (result) => {
        if (this.#entries.get(key)?.value !== value) return;
        const ttl = isSettled(result) ? this.#options.ttlMs : this.#options.missTtlMs;
        this.#set(key, { expires: this.#now() + ttl, value });
      },
      () => {
        if (this.#entries.get(key)?.value === value) this.#entries.delete(key);
      },
    );
    return value;
  }

  #set(key: string, entry: Entry): void {
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    while (this.#entries.size > this.#options.maxEntries) {
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.delete(oldest);
    }
  }
}
