import { describe, expect, it } from "vitest";
import {
  type CacheEntry,
  type PreparedLoad,
  RefCountedLru,
  type RefCountedLruOptions,
} from "#core/cache/ref-counted-lru.ts";

/** A promise the test settles by hand, to hold a load open. */
function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((res) => {
    resolve = res;
  });
  return { promise, resolve };
}

class NoRoomError extends Error {
  override name = "NoRoomError";
}

/** A cache of strings ("value of <key>") that records every creation and disposal. */
function lru(options: Partial<RefCountedLruOptions<string, string>> = {}) {
  const events: string[] = [];
  const clock = { now: 1_000 };
  const cache = new RefCountedLru<string, string>({
    dispose: (value) => {
      events.push(`dispose ${value}`);
    },
    now: () => clock.now,
    ...options,
  });
  return { cache, events, clock };
}

function prepared(events: string[], key: string, bytes = 10): () => Promise<PreparedLoad<string>> {
  return async () => ({
    bytes,
    create: async () => {
      events.push(`create ${key}`);
      return key;
    },
  });
}

/** Loads `key` (or finds it), holds it, and returns the entry still held. */
async function hold(
  cache: RefCountedLru<string, string>,
  events: string[],
  key: string,
  bytes = 10,
): Promise<CacheEntry<string, string>> {
  return cache.acquire(key) ?? (await cache.load(key, prepared(events, key, bytes)));
}

/** Loads or finds `key` and releases it at once: a request that used it. */
async function touch(cache: RefCountedLru<string, string>, events: string[], key: string, bytes = 10) {
  await cache.release(await hold(cache, events, key, bytes));
}

const keys = (cache: RefCountedLru<string, string>) => Array.from(cache.values(), (entry) => entry.key);

describe("RefCountedLru", () => {
  it("evicts the least recently used entry beyond maxEntries, counting a hit as a use", async () => {
    const { cache, events } = lru({ maxEntries: 2 });
    await touch(cache, events, "a");
    await touch(cache, events, "b");
    await touch(cache, events, "a");

    await touch(cache, events, "c");

    expect(keys(cache)).toEqual(["a", "c"]);
    expect(events).toEqual(["create a", "create b", "create c", "dispose b"]);
  });

  it("evicts least recently used entries until the byte budget holds, keeping one larger than it alone", async () => {
    const { cache, events } = lru({ maxBytes: 100 });
    await touch(cache, events, "a", 40);
    await touch(cache, events, "b", 40);

    await touch(cache, events, "c", 40);
    expect(keys(cache)).toEqual(["b", "c"]);
    expect(cache.bytes).toBe(80);

    await touch(cache, events, "big", 150);
    expect(keys(cache)).toEqual(["big"]);
    expect(cache.bytes).toBe(150);
    expect(events.filter((event) => event.startsWith("dispose"))).toEqual([
      "dispose a",
      "dispose b",
      "dispose c",
    ]);
  });

  it("disposes an entry evicted while held only when its last holder releases it", async () => {
    const { cache, events } = lru({ maxEntries: 1 });
    const first = await hold(cache, events, "a");
    const second = await hold(cache, events, "a");

    await touch(cache, events, "b");
    expect(cache.has("a")).toBe(false);
    await cache.release(first);
    expect(events).not.toContain("dispose a");

    await cache.release(second);
    expect(events).toContain("dispose a");
  });

  it("disposes an entry deleted while held only on release, and only once", async () => {
    const { cache, events } = lru();
    const held = await hold(cache, events, "a");

    expect(await cache.delete("a")).toBe(true);
    expect(await cache.delete("a")).toBe(false);
    expect(events).toEqual(["create a"]);
    await cache.release(held);
    await cache.close();

    expect(events).toEqual(["create a", "dispose a"]);
  });

  it("runs one load for concurrent callers of one key and holds the entry once for each", async () => {
    const { cache, events } = lru();
    const gate = deferred();
    let prepares = 0;
    const prepare = async () => {
      prepares += 1;
      await gate.promise;
      return { bytes: 10, create: async () => `value ${prepares}` };
    };

    const loads = [cache.load("a", prepare), cache.load("a", prepare), cache.load("a", prepare)];
    gate.resolve();
    const entries = await Promise.all(loads);

    expect(prepares).toBe(1);
    expect(new Set(entries).size).toBe(1);
    expect(entries[0]!.value).toBe("value 1");
    await cache.delete("a");
    await cache.release(entries[0]!);
    await cache.release(entries[1]!);
    expect(events).toEqual([]);
    await cache.release(entries[2]!);
    expect(events).toEqual(["dispose value 1"]);
  });

  it("answers from a remembered failure until failureMemoryMs has passed, then loads again", async () => {
    const { cache, events, clock } = lru({
      failureMemoryMs: 5_000,
      loadError: (cause, retryInMs) => new Error(`${cause.message}; retry in ${retryInMs ?? "-"} ms`),
    });
    let creates = 0;
    let fail = true;
    const prepare = async () => ({
      bytes: 10,
      create: async () => {
        creates += 1;
        if (fail) throw new Error("bad model");
        return "a";
      },
    });
    await expect(cache.load("a", prepare)).rejects.toThrow("bad model; retry in - ms");
    fail = false;

    clock.now += 4_000;
    await expect(cache.load("a", prepare)).rejects.toThrow("bad model; retry in 1000 ms");
    expect(creates).toBe(1);

    clock.now += 1_000;
    await cache.release(await cache.load("a", prepare));
    expect(creates).toBe(2);
    expect(cache.has("a")).toBe(true);
    expect(events).toEqual([]);
  });

  it("forgets a failed load at once without failureMemoryMs, and never remembers a failure to prepare", async () => {
    const { cache, events } = lru({ failureMemoryMs: 5_000 });
    const missing = new Error("no such artifact");
    await expect(cache.load("a", () => Promise.reject(missing))).rejects.toBe(missing);
    await touch(cache, events, "a");

    const forgetful = lru();
    let creates = 0;
    const failing = async () => ({
      bytes: 10,
      create: async () => {
        creates += 1;
        throw new Error("bad model");
      },
    });
    await expect(forgetful.cache.load("b", failing)).rejects.toThrow("bad model");
    await expect(forgetful.cache.load("b", failing)).rejects.toThrow("bad model");

    expect(events).toEqual(["create a"]);
    expect(creates).toBe(2);
  });

  it("never evicts a pinned entry, whatever the budget", async () => {
    const { cache, events } = lru({ maxEntries: 1 });
    const pinned = await hold(cache, events, "pinned");
    cache.pin(pinned);
    await cache.release(pinned);

    await touch(cache, events, "b");
    await touch(cache, events, "c");

    expect(keys(cache)).toEqual(["pinned", "c"]);
    expect(events).toEqual(["create pinned", "create b", "create c", "dispose b"]);
    expect(await cache.delete("pinned")).toBe(true);
    expect(events).toContain("dispose pinned");
  });

  it("ignores a dispose that fails", async () => {
    const { cache, events } = lru({
      maxEntries: 1,
      dispose: () => Promise.reject(new Error("release failed")),
    });
    await touch(cache, events, "a");

    await touch(cache, events, "b");

    expect(keys(cache)).toEqual(["b"]);
  });
});

describe("RefCountedLru with noRoom (room reserved before each load)", () => {
  const noRoom = (key: string, bytes: number) => new NoRoomError(`no room for ${key} (${bytes} bytes)`);

  it("evicts idle entries, least recently used first, before the new one is created", async () => {
    const { cache, events } = lru({ maxBytes: 30, noRoom });
    await touch(cache, events, "a");
    await touch(cache, events, "b");
    await touch(cache, events, "c");
    await touch(cache, events, "a");

    await touch(cache, events, "d", 20);

    expect(keys(cache)).toEqual(["a", "d"]);
    expect(events.slice(3)).toEqual(["dispose b", "dispose c", "create d"]);
  });

  it("never evicts a held or pinned entry, and refuses a load that cannot fit without evicting anything", async () => {
    const { cache, events } = lru({ maxBytes: 30, noRoom });
    const held = await hold(cache, events, "held");
    const pinned = await hold(cache, events, "pinned");
    cache.pin(pinned);
    await cache.release(pinned);
    await touch(cache, events, "idle");

    await expect(cache.load("big", prepared(events, "big", 20))).rejects.toThrow(
      "no room for big (20 bytes)",
    );
    await expect(cache.load("huge", prepared(events, "huge", 40))).rejects.toBeInstanceOf(NoRoomError);
    expect(keys(cache)).toEqual(["held", "pinned", "idle"]);
    await touch(cache, events, "new");

    expect(keys(cache)).toEqual(["held", "pinned", "new"]);
    expect(events).toEqual(["create held", "create pinned", "create idle", "dispose idle", "create new"]);
    await cache.release(held);
  });

  it("counts a load's bytes from its reservation, and gives them back when the load fails", async () => {
    const { cache, events } = lru({ maxBytes: 30, noRoom });
    const gate = deferred();
    const slow = cache.load("slow", async () => ({
      bytes: 20,
      create: async () => {
        await gate.promise;
        throw new Error("bad model");
      },
    }));
    await new Promise((resolve) => setImmediate(resolve));

    expect(cache.bytes).toBe(20);
    await expect(cache.load("b", prepared(events, "b", 20))).rejects.toBeInstanceOf(NoRoomError);
    gate.resolve();
    await expect(slow).rejects.toThrow("bad model");
    expect(cache.bytes).toBe(0);
    await touch(cache, events, "b", 20);
    expect(cache.bytes).toBe(20);
  });

  it("counts loads in flight against maxEntries", async () => {
    const { cache, events } = lru({ maxEntries: 1, noRoom });
    const gate = deferred();
    const slow = cache.load("slow", async () => ({
      bytes: 10,
      create: async () => {
        await gate.promise;
        return "slow";
      },
    }));
    await new Promise((resolve) => setImmediate(resolve));

    await expect(cache.load("b", prepared(events, "b"))).rejects.toBeInstanceOf(NoRoomError);
    gate.resolve();
    await cache.release(await slow);

    expect(keys(cache)).toEqual(["slow"]);
    expect(events).toEqual([]);
  });
});
