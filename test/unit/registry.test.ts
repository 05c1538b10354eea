import { describe, expect, it } from "vitest";
import { ModelNotFoundError, ModelNotReadyError } from "#core/errors.ts";
import type { ModelVersion, VersionStatus } from "#core/model.ts";
import { CachedModelRegistry, type RegistryCacheOptions } from "#core/registry/cached-registry.ts";
import {
  assertServable,
  type ModelEntries,
  type ModelRegistry,
  type ModelSummary,
  resolveVersion,
} from "#core/registry/registry.ts";

function version(
  name: string,
  number: number,
  status: VersionStatus = "ready",
  reason?: string,
): ModelVersion {
  return {
    name,
    version: number,
    status,
    reason,
    target: "lambda",
    artifact: {
      bucket: "models",
      key: `models/${name}/${number}/model.onnx`,
      sha256: "0".repeat(64),
      bytes: 1,
    },
    signature: { inputs: [], outputs: [] },
    variants: [],
    createdAt: "2026-01-01T00:00:00Z",
    updatedAt: "2026-01-01T00:00:00Z",
  };
}

/** The registry as the serving path reads it, held in memory and counting every read. */
class InMemoryRegistry implements ModelRegistry {
  readonly versions: ModelVersion[] = [];
  readonly aliases = new Map<string, number>();
  reads = 0;

  add(...records: ModelVersion[]): this {
    this.versions.push(...records);
    return this;
  }

  alias(name: string, alias: string, target: number): this {
    this.aliases.set(`${name}/${alias}`, target);
    return this;
  }

  async getVersion(name: string, number: number): Promise<ModelVersion | undefined> {
    this.reads += 1;
    return this.versions.find((record) => record.name === name && record.version === number);
  }

  async getAlias(name: string, alias: string): Promise<number | undefined> {
    this.reads += 1;
    return this.aliases.get(`${name}/${alias}`);
  }

  async listVersions(name: string): Promise<ModelVersion[]> {
    this.reads += 1;
    return this.versions.filter((record) => record.name === name).sort((a, b) => a.version - b.version);
  }

  async getModel(name: string): Promise<ModelEntries> {
    this.reads += 1;
    const prefix = `${name}/`;
    const aliases = [...this.aliases].filter(([key]) => key.startsWith(prefix));
    return {
      versions: this.versions.filter((record) => record.name === name).sort((a, b) => a.version - b.version),
      aliases: new Map(aliases.map(([key, version]) => [key.slice(prefix.length), version])),
    };
  }

  async listModels(): Promise<ModelSummary[]> {
    this.reads += 1;
    const names = [...new Set(this.versions.map((record) => record.name))];
    return names.map((name) => ({
      name,
      versions: this.versions.filter((record) => record.name === name).map((record) => record.version),
    }));
  }
}

describe("resolveVersion", () => {
  it("resolves a version number", async () => {
    const registry = new InMemoryRegistry().add(version("iris", 1), version("iris", 2));

    const resolved = await resolveVersion(registry, "iris", "2");

    expect(resolved.version).toBe(2);
  });

  it("resolves an alias to the version it names", async () => {
    const registry = new InMemoryRegistry()
      .add(version("iris", 1), version("iris", 2))
      .alias("iris", "prod", 1);

    const resolved = await resolveVersion(registry, "iris", "prod");

    expect(resolved.version).toBe(1);
  });

  it("serves the default alias over the newest version when no version is named, from one read", async () => {
    const registry = new InMemoryRegistry()
      .add(version("iris", 1), version("iris", 2), version("iris", 3))
      .alias("iris", "default", 2);

    const resolved = await resolveVersion(registry, "iris", undefined);

    expect(resolved.version).toBe(2);
    expect(registry.reads).toBe(1);
  });

  it("serves the newest servable version when there is no default alias", async () => {
    const registry = new InMemoryRegistry().add(
      version("iris", 1, "ready"),
      version("iris", 2, "optimizing"),
      version("iris", 3, "failed", "bad graph"),
      version("iris", 4, "registering"),
    );

    const resolved = await resolveVersion(registry, "iris", undefined);

    expect(resolved.version).toBe(2);
  });

  it("returns the newest version when none is servable, for the caller to refuse", async () => {
    const registry = new InMemoryRegistry().add(
      version("iris", 1, "failed", "bad graph"),
      version("iris", 2, "registering"),
    );

    const resolved = await resolveVersion(registry, "iris", undefined);

    expect(resolved.version).toBe(2);
    expect(() => assertServable(resolved)).toThrow(ModelNotReadyError);
  });

  it("answers 404 for a model without versions", async () => {
    const registry = new InMemoryRegistry().add(version("iris", 1));

    await expect(resolveVersion(registry, "wine", undefined)).rejects.toThrow(
      new ModelNotFoundError("model 'wine' not found"),
    );
  });

  it("answers 404 for a version that does not exist", async () => {
    const registry = new InMemoryRegistry().add(version("iris", 1));

    const error = await resolveVersion(registry, "iris", "7").catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(ModelNotFoundError);
    expect((error as ModelNotFoundError).status).toBe(404);
    expect((error as ModelNotFoundError).message).toBe("model 'iris' has no version 7");
  });

  it("answers 404 for an alias that does not exist", async () => {
    const registry = new InMemoryRegistry().add(version("iris", 1));

    await expect(resolveVersion(registry, "iris", "canary")).rejects.toThrow(
      new ModelNotFoundError("model 'iris' has no version or alias 'canary'"),
    );
  });

  it("answers 404 naming the alias when an alias points at a missing version", async () => {
    const registry = new InMemoryRegistry().add(version("iris", 1)).alias("iris", "prod", 9);

    await expect(resolveVersion(registry, "iris", "prod")).rejects.toThrow(
      new ModelNotFoundError("model 'iris' has no version 9 (named by alias 'prod')"),
    );
  });

  it("answers 404 naming the default alias when it points at a missing version", async () => {
    const registry = new InMemoryRegistry().add(version("iris", 1)).alias("iris", "default", 9);

    await expect(resolveVersion(registry, "iris", undefined)).rejects.toThrow(
      "model 'iris' has no version 9 (named by alias 'default')",
    );
  });

  it.each(["0", "01", "-1", "1.5", "Prod", "a b"])(
    "answers 404 for %j, which is neither a version number nor an alias",
    async (reference) => {
      const registry = new InMemoryRegistry().add(version("iris", 1));

      await expect(resolveVersion(registry, "iris", reference)).rejects.toThrow(
        new ModelNotFoundError(`'${reference}' is neither a version number nor an alias of model 'iris'`),
      );
    },
  );
});

describe("assertServable", () => {
  it.each(["ready", "optimizing"] as const)("lets a %s version serve", (status) => {
    expect(() => assertServable(version("iris", 1, status))).not.toThrow();
  });

  it("answers 503 with the recorded reason for a failed version", () => {
    const error = (() => {
      try {
        assertServable(version("iris", 3, "failed", "graph uses an unsafe operator"));
      } catch (caught) {
        return caught as ModelNotReadyError;
      }
      throw new Error("accepted");
    })();

    expect(error).toBeInstanceOf(ModelNotReadyError);
    expect(error.status).toBe(503);
    expect(error.message).toBe("model 'iris' version 3 failed to register: graph uses an unsafe operator");
  });

  it("says so when a failed version has no reason recorded", () => {
    expect(() => assertServable(version("iris", 3, "failed"))).toThrow(
      "model 'iris' version 3 failed to register: no reason recorded",
    );
  });

  it("answers 503 asking to retry for a registering version", () => {
    expect(() => assertServable(version("iris", 4, "registering"))).toThrow(
      new ModelNotReadyError("model 'iris' version 4 is registering; retry shortly"),
    );
  });
});

/** The registry's next getVersion call fails as a throttled read would (and counts as a read). */
function failNextGetVersion(inner: InMemoryRegistry): void {
  const getVersion = inner.getVersion.bind(inner);
  let failures = 1;
  inner.getVersion = async (name, number) => {
    if (failures-- > 0) {
      inner.reads += 1;
      throw new Error("throttled");
    }
    return getVersion(name, number);
  };
}

describe("CachedModelRegistry", () => {
  function setup(options: Partial<RegistryCacheOptions> = {}) {
    const inner = new InMemoryRegistry().add(version("iris", 1), version("iris", 2)).alias("iris", "prod", 1);
    const clock = { now: 1_000_000 };
    const cache = new CachedModelRegistry(inner, {
      ttlMs: 10_000,
      missTtlMs: 1_000,
      maxEntries: 100,
      now: () => clock.now,
      ...options,
    });
    return { inner, clock, cache };
  }

  it("keeps a version that is still registering only for the short TTL, so it serves once ready", async () => {
    const { inner, clock, cache } = setup();
    inner.add(version("iris", 3, "registering"));

    await cache.getVersion("iris", 3);
    await cache.listVersions("iris");
    await cache.getModel("iris");
    clock.now += 1_001;
    await cache.getVersion("iris", 3);
    await cache.listVersions("iris");
    await cache.getModel("iris");

    expect(inner.reads).toBe(6);
  });

  it("keeps a model's versions and aliases for the full TTL once settled, and an unknown model for the miss TTL", async () => {
    const { inner, clock, cache } = setup();

    const model = await cache.getModel("iris");
    expect(model.versions.map((record) => record.version)).toEqual([1, 2]);
    expect(model.aliases.get("prod")).toBe(1);
    expect((await cache.getModel("wine")).versions).toEqual([]);
    clock.now += 1_000;
    await cache.getModel("iris");
    await cache.getModel("wine");

    expect(inner.reads).toBe(3);
  });

  it("serves repeated reads within the TTL from memory", async () => {
    const { inner, clock, cache } = setup();

    const first = await cache.getVersion("iris", 1);
    clock.now += 9_999;
    const second = await cache.getVersion("iris", 1);

    expect(second).toBe(first);
    expect(inner.reads).toBe(1);
  });

  it("serves an expired entry once more while it re-reads it in the background, then the new value", async () => {
    const { inner, clock, cache } = setup();
    await cache.getAlias("iris", "prod");
    inner.alias("iris", "prod", 2);

    clock.now += 10_000;
    const [stale, again] = await Promise.all([
      cache.getAlias("iris", "prod"),
      cache.getAlias("iris", "prod"),
    ]);
    await new Promise((settled) => setImmediate(settled));
    const moved = await cache.getAlias("iris", "prod");

    expect([stale, again, moved]).toEqual([1, 1, 2]);
    expect(inner.reads).toBe(2); // one background re-read for both stale reads
  });

  it("waits for the registry once an entry expired longer ago than the stale window", async () => {
    const { inner, clock, cache } = setup({ staleMs: 5_000 });
    await cache.getAlias("iris", "prod");
    inner.alias("iris", "prod", 2);

    clock.now += 10_000 + 5_000;
    const moved = await cache.getAlias("iris", "prod");

    expect(moved).toBe(2);
    expect(inner.reads).toBe(2);
  });

  it("keeps serving a stale entry when its re-read fails, and tries again on the next read", async () => {
    const { inner, clock, cache } = setup();
    await cache.getVersion("iris", 1);
    failNextGetVersion(inner);

    clock.now += 10_000;
    expect((await cache.getVersion("iris", 1))?.version).toBe(1);
    await new Promise((settled) => setImmediate(settled));
    expect((await cache.getVersion("iris", 1))?.version).toBe(1);
    await new Promise((settled) => setImmediate(settled));

    expect(inner.reads).toBe(3); // the first read, then a failed re-read and one that worked
  });

  it("keeps a missing alias for the full TTL: most models have no default alias", async () => {
    const { inner, clock, cache } = setup();
    expect(await cache.getAlias("iris", "default")).toBeUndefined();

    clock.now += 9_999;
    expect(await cache.getAlias("iris", "default")).toBeUndefined();

    expect(inner.reads).toBe(1);
  });

  it("keeps each kind of read under its own key", async () => {
    const { inner, cache } = setup();

    await cache.getVersion("iris", 1);
    await cache.getVersion("iris", 2);
    await cache.getAlias("iris", "prod");
    await cache.listVersions("iris");
    await cache.listModels();
    await cache.listModels();
    await cache.getVersion("iris", 2);

    expect(inner.reads).toBe(5);
  });

  it("remembers a missing version only for the shorter miss TTL", async () => {
    const { inner, clock, cache } = setup();
    expect(await cache.getVersion("iris", 3)).toBeUndefined();
    clock.now += 999;
    expect(await cache.getVersion("iris", 3)).toBeUndefined();
    expect(inner.reads).toBe(1);
    inner.add(version("iris", 3));

    clock.now += 1;
    const appeared = await cache.getVersion("iris", 3);

    expect(appeared?.version).toBe(3);
    expect(inner.reads).toBe(2);
  });

  it("treats an empty version list as a miss", async () => {
    const { inner, clock, cache } = setup();
    expect(await cache.listVersions("wine")).toEqual([]);
    inner.add(version("wine", 1));

    clock.now += 1_000;
    const versions = await cache.listVersions("wine");

    expect(versions.map((record) => record.version)).toEqual([1]);
  });

  it("shares one inner read between concurrent misses for one key", async () => {
    const { inner, cache } = setup();

    const results = await Promise.all([
      cache.getVersion("iris", 1),
      cache.getVersion("iris", 1),
      cache.getVersion("iris", 1),
    ]);

    expect(inner.reads).toBe(1);
    expect(results[1]).toBe(results[0]);
    expect(results[2]).toBe(results[0]);
  });

  it("does not remember a failed read", async () => {
    const { inner, cache } = setup();
    failNextGetVersion(inner);

    await expect(cache.getVersion("iris", 1)).rejects.toThrow("throttled");
    const retried = await cache.getVersion("iris", 1);

    expect(retried?.version).toBe(1);
    expect(inner.reads).toBe(2);
  });

  it("keeps at most maxEntries entries, dropping the oldest", async () => {
    const { inner, cache } = setup({ maxEntries: 2 });
    await cache.getVersion("iris", 1);
    await cache.getVersion("iris", 2);
    await cache.getAlias("iris", "prod");

    await cache.getAlias("iris", "prod");
    await cache.getVersion("iris", 2);
    expect(inner.reads).toBe(3);
    await cache.getVersion("iris", 1);

    expect(inner.reads).toBe(4);
  });

  it("forgets everything on clear", async () => {
    const { inner, cache } = setup();
    await cache.getVersion("iris", 1);

    cache.clear();
    await cache.getVersion("iris", 1);

    expect(inner.reads).toBe(2);
  });
});
