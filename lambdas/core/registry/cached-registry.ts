import { LRUCache } from "lru-cache";
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
  /** Entries kept at most; the least recently used go first. */
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

/** One registry read, as the cache's fetchMethod performs it. */
interface RegistryRead {
  load(): Promise<unknown>;
  isSettled(result: unknown): boolean;
}

/** A registry answer with its times: boxed, since lru-cache takes an undefined value for "nothing". */
interface Answer {
  readonly value: unknown;
  /** Until then the answer is fresh; from then on a read starts a re-read. */
  readonly freshUntil: number;
  /** Until then the answer may be served while a re-read runs: a settled answer's stale window. */
  readonly servableUntil: number;
}

/**
 * Registry reads with a short in-memory TTL, in front of DynamoDB. Concurrent misses for one key
 * share one read, a failed read is not remembered, and a settled entry is refreshed in the
 * background when it expires (stale-while-revalidate), so warm requests never wait on DynamoDB.
 */
export class CachedModelRegistry implements ModelRegistry {
  readonly #inner: ModelRegistry;
  readonly #now: () => number;
  readonly #answers: LRUCache<string, Answer, RegistryRead>;

  constructor(inner: ModelRegistry, options: RegistryCacheOptions) {
    this.#inner = inner;
    const now = options.now ?? Date.now;
    const staleMs = options.staleMs ?? options.ttlMs;
    this.#now = now;
    // The answer carries its own times, not lru-cache's `ttl`: that counts an entry stale only once its
    // age exceeds the ttl, and serves every stale entry alike, where only settled answers may be.
    this.#answers = new LRUCache<string, Answer, RegistryRead>({
      max: options.maxEntries,
      fetchMethod: async (_key, _stale, { context }) => {
        const value = await context.load();
        const settled = context.isSettled(value);
        const freshUntil = now() + (settled ? options.ttlMs : options.missTtlMs);
        return { value, freshUntil, servableUntil: settled ? freshUntil + staleMs : freshUntil };
      },
      // A read during a background re-read gets the old answer, which a failed re-read leaves in place.
      allowStale: true,
      noDeleteOnFetchRejection: true,
      // Eviction and clear() do not fail the callers of a read in flight; its answer is just not kept.
      ignoreFetchAbort: true,
    });
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
    this.#answers.clear();
  }

  async #cached<T>(key: string, load: () => Promise<T>, isSettled: (result: T) => boolean): Promise<T> {
    const context: RegistryRead = { load, isSettled };
    // fetch resolves undefined only for an aborted read or an undefined answer: neither happens here.
    const answer = (await this.#answers.fetch(key, { context }))!;
    const now = this.#now();
    if (now < answer.freshUntil) return answer.value as T;
    // forceRefresh starts the re-read unless one is running already, which it joins.
    if (now < answer.servableUntil) {
      void this.#answers.fetch(key, { context, forceRefresh: true });
      return answer.value as T;
    }
    const reread = (await this.#answers.fetch(key, { context, forceRefresh: true, allowStale: false }))!;
    return reread.value as T;
  }
}
