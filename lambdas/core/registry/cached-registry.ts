import type { ModelVersion } from "#core/model.ts";
import type { ModelEntries, ModelRegistry, ModelSummary } from "./registry.ts";

export interface RegistryCacheOptions {
  /** How long a found record is served from memory. */
  readonly ttlMs: number;
  /**
   * For this long after a settled entry expires, a read still gets it at once while a re-read runs in
   * the background: refreshes leave the request path. Later, a read waits for the registry again.
   * @default ttlMs
   */
  readonly staleMs?: number;
  /** How long "not found" is remembered: short, so a new upload shows up quickly. */
  readonly missTtlMs: number;
  /** Entries kept at most; the oldest go first. */
  readonly maxEntries: number;
  readonly now?: () => number;
}

/*
 * Whether a read can be kept for the full TTL. "Not found", empty lists and versions still
 * registering are about to change: they get the short TTL, so a new version serves promptly. A model
 * without a given alias is its steady state (most have no `default`): alias moves, and new aliases,
 * are seen within the TTL.
 */
const settledVersion = (version: ModelVersion | undefined) =>
  version !== undefined && version.status !== "registering";
const settledVersions = (versions: readonly ModelVersion[]) =>
  versions.length > 0 && versions.every(settledVersion);
const alwaysSettled = () => true;

interface Entry {
  readonly expires: number;
  readonly value: Promise<unknown>;
  /** Resolved, to a result kept for the full TTL: the only kind served stale. */
  settled: boolean;
  refreshing: boolean;
}

/**
 * Registry reads with a short in-memory TTL, in front of DynamoDB. Concurrent misses for one key
 * share one read, a failed read is not remembered, and a settled entry is refreshed in the
 * background when it expires (stale-while-revalidate), so warm requests never wait on DynamoDB.
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
    return this.#cached(
      `v\0${name}\0${version}`,
      () => this.#inner.getVersion(name, version),
      settledVersion,
    );
  }

  getAlias(name: string, alias: string): Promise<number | undefined> {
    return this.#cached(`a\0${name}\0${alias}`, () => this.#inner.getAlias(name, alias), alwaysSettled);
  }

  listVersions(name: string): Promise<ModelVersion[]> {
    return this.#cached(`l\0${name}`, () => this.#inner.listVersions(name), settledVersions);
  }

  getModel(name: string): Promise<ModelEntries> {
    return this.#cached(
      `g\0${name}`,
      () => this.#inner.getModel(name),
      (model) => settledVersions(model.versions),
    );
  }

  listModels(): Promise<ModelSummary[]> {
    return this.#cached(
      "m",
      () => this.#inner.listModels(),
      (models) => models.length > 0,
    );
  }

  /** Drops every cached entry; for tests and for callers that just wrote. */
  clear(): void {
    this.#entries.clear();
  }

  #cached<T>(key: string, load: () => Promise<T>, isSettled: (result: T) => boolean): Promise<T> {
    const now = this.#now();
    const hit = this.#entries.get(key);
    if (hit !== undefined) {
      if (hit.expires > now) return hit.value as Promise<T>;
      if (hit.settled && now - hit.expires < (this.#options.staleMs ?? this.#options.ttlMs)) {
        if (!hit.refreshing) this.#refresh(key, load, hit, isSettled);
        return hit.value as Promise<T>;
      }
    }

    const value = load();
    // Until it settles the entry lives for the hit TTL; then it is re-timed by outcome.
    const entry: Entry = { expires: now + this.#options.ttlMs, value, settled: false, refreshing: false };
    this.#set(key, entry);
    value.then(
      (result) => {
        if (this.#entries.get(key) !== entry) return;
        this.#settle(key, value, isSettled(result));
      },
      () => {
        if (this.#entries.get(key) === entry) this.#entries.delete(key);
      },
    );
    return value;
  }

  /** Re-reads an expired entry while it is still served; a failed re-read leaves it to expire. */
  #refresh<T>(key: string, load: () => Promise<T>, stale: Entry, isSettled: (result: T) => boolean): void {
    stale.refreshing = true;
    load().then(
      (result) => {
        if (this.#entries.get(key) !== stale) return;
        this.#settle(key, Promise.resolve(result), isSettled(result));
      },
      () => {
        stale.refreshing = false;
      },
    );
  }

  #settle(key: string, value: Promise<unknown>, settled: boolean): void {
    const ttl = settled ? this.#options.ttlMs : this.#options.missTtlMs;
    this.#set(key, { expires: this.#now() + ttl, value, settled, refreshing: false });
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
