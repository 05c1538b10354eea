import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LocalArtifact } from "#aws/onnx/artifact-cache.ts";
import { createOrtSession } from "#aws/onnx/runner.ts";
import { type PooledSession, SessionPool, type SessionPoolOptions } from "#aws/onnx/session-pool.ts";
import { ArtifactIntegrityError, ModelNotReadyError } from "#core/errors.ts";
import { buildIrisModel } from "../../models/iris.ts";
import { buildFixedShapeModel } from "../../models/zoo.ts";

/** A promise the test settles by hand, to hold a creation or a run open. */
function deferred<T = void>() {
  let resolve!: (value: T) => void;
  let reject!: (error: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

class FakeSession implements PooledSession {
  released = 0;
  constructor(readonly path: string) {}
  async release(): Promise<void> {
    this.released += 1;
  }
}

/** A session factory that records every creation and can be told to hold or fail the next ones. */
class FakeFactory {
  readonly created: FakeSession[] = [];
  calls = 0;
  gate: Promise<void> | undefined;
  failWith: Error | undefined;
  /** Creations allowed in all, so that a pool that keeps reloading fails fast instead of spinning. */
  limit = 1000;

  readonly create = async (artifact: LocalArtifact): Promise<FakeSession> => {
    const path = typeof artifact === "string" ? artifact : `<${artifact.byteLength} bytes>`;
    this.calls += 1;
    if (this.calls > this.limit) throw new Error(`created more than ${this.limit} sessions`);
    if (this.gate) await this.gate;
    if (this.failWith) throw this.failWith;
    const session = new FakeSession(path);
    this.created.push(session);
    return session;
  };
}

function fakePool(options: Partial<SessionPoolOptions<FakeSession>> = {}) {
  const factory = new FakeFactory();
  const clock = { now: 1_000_000 };
  const pool = new SessionPool<FakeSession>({
    create: factory.create,
    maxSessions: 10,
    maxBytes: 1_000_000,
    retryAfterMs: 5_000,
    now: () => clock.now,
    ...options,
  });
  return { pool, factory, clock };
}

/** Uses the session for `key` and returns it; `bytes` stands for its artifact's size. */
function touch(pool: SessionPool<FakeSession>, key: string, bytes = 10): Promise<FakeSession> {
  return pool.use(
    key,
    bytes,
    async () => `/artifacts/${key}.onnx`,
    async (session) => session,
  );
}

/**
 * Starts a run on the session for `key` and holds it open until the test settles `run`; resolves
 * once the run has its session, with the session and the run's result.
 */
async function holdRun<T = void>(pool: SessionPool<FakeSession>, key: string) {
  const run = deferred<T>();
  let session: FakeSession | undefined;
  const result = pool.use(
    key,
    10,
    async () => `/artifacts/${key}.onnx`,
    (used) => {
      session = used;
      return run.promise;
    },
  );
  await settleUntil(() => session !== undefined);
  return { run, session: session!, result };
}

describe("SessionPool with onnxruntime sessions", () => {
  let directory: string;
  let irisPath: string;
  let fixedPath: string;

  beforeAll(async () => {
    directory = await mkdtemp(join(tmpdir(), "session-pool-"));
    irisPath = join(directory, "iris.onnx");
    fixedPath = join(directory, "fixed.onnx");
    await writeFile(irisPath, buildIrisModel());
    await writeFile(fixedPath, buildFixedShapeModel());
  });

  afterAll(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  function ortPool() {
    return new SessionPool<ort.InferenceSession>({
      create: (path) => createOrtSession(path, 1),
      maxSessions: 4,
      maxBytes: 100_000_000,
      retryAfterMs: 5_000,
    });
  }

  it("loads a model once and runs every request on the same session", async () => {
    const pool = ortPool();
    let locates = 0;
    const locate = async () => {
      locates += 1;
      return irisPath;
    };
    const features = new ort.Tensor(
      "float32",
      Float32Array.of(5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3),
      [2, 4],
    );
    const classify = (session: ort.InferenceSession) => session.run({ features });

    const first = await pool.use("iris", 1000, locate, classify);
    const second = await pool.use("iris", 1000, locate, classify);

    expect(first.label!.data).toEqual(["setosa", "virginica"]);
    expect(second.label!.data).toEqual(["setosa", "virginica"]);
    expect(locates).toBe(1);
    expect(pool.size).toBe(1);
    expect(pool.has("iris")).toBe(true);
    await pool.close();
    expect(pool.size).toBe(0);
  });

  it("keeps sessions of different models apart", async () => {
    const pool = ortPool();
    const x = new ort.Tensor("float32", Float32Array.of(1, 2, 3, 4, 5, 6), [2, 3]);

    const doubled = await pool.use(
      "fixed",
      200,
      async () => fixedPath,
      (session) => session.run({ x }),
    );
    await pool.use(
      "iris",
      1000,
      async () => irisPath,
      async (session) => session.inputNames,
    );

    expect(Array.from(doubled.y!.data as Float32Array)).toEqual([2, 4, 6, 8, 10, 12]);
    expect(pool.size).toBe(2);
    expect(pool.bytes).toBe(1200);
    await pool.close();
  });

  it("reports a file onnxruntime cannot load as not ready and caches nothing", async () => {
    const pool = ortPool();
    const brokenPath = join(directory, "broken.onnx");
    await writeFile(brokenPath, "not an onnx model");

    const error = await pool
      .use(
        "broken",
        10,
        async () => brokenPath,
        async () => "ran",
      )
      .catch((caught: unknown) => caught as ModelNotReadyError);

    expect(error).toBeInstanceOf(ModelNotReadyError);
    expect((error as ModelNotReadyError).status).toBe(503);
    expect((error as ModelNotReadyError).message).toMatch(/^model failed to load: /);
    expect(pool.has("broken")).toBe(false);
  });
});

describe("SessionPool", () => {
  it("creates one session for concurrent first requests to one key", async () => {
    const { pool, factory } = fakePool();
    const gate = deferred();
    factory.gate = gate.promise;

    const requests = [touch(pool, "a"), touch(pool, "a"), touch(pool, "a")];
    gate.resolve();
    const sessions = await Promise.all(requests);

    expect(factory.calls).toBe(1);
    expect(new Set(sessions).size).toBe(1);
    expect(sessions[0]!.path).toBe("/artifacts/a.onnx");
  });

  it("does not locate the artifact again once the session exists", async () => {
    const { pool } = fakePool();
    let locates = 0;
    const locate = async () => {
      locates += 1;
      return "/artifacts/a.onnx";
    };

    await pool.use("a", 10, locate, async () => undefined);
    await pool.use("a", 10, locate, async () => undefined);

    expect(locates).toBe(1);
  });

  it("evicts and releases the least recently used session beyond maxSessions", async () => {
    const { pool } = fakePool({ maxSessions: 2 });
    const a = await touch(pool, "a");
    const b = await touch(pool, "b");
    await touch(pool, "a");

    await touch(pool, "c");

    expect(pool.has("a")).toBe(true);
    expect(pool.has("b")).toBe(false);
    expect(pool.has("c")).toBe(true);
    expect(b.released).toBe(1);
    expect(a.released).toBe(0);
    expect(pool.size).toBe(2);
  });

  it("keeps recency right when the newest session is used again and again", async () => {
    const { pool } = fakePool({ maxSessions: 2 });
    await touch(pool, "a");
    const b = await touch(pool, "b");
    await touch(pool, "b");
    await touch(pool, "a");
    await touch(pool, "a");

    await touch(pool, "c");

    expect(pool.has("a")).toBe(true);
    expect(pool.has("b")).toBe(false);
    expect(b.released).toBe(1);
    await touch(pool, "a");
    await touch(pool, "d");
    expect(pool.has("c")).toBe(false);
    expect(pool.has("a")).toBe(true);
  });

  it("evicts least recently used sessions until the byte budget holds", async () => {
    const { pool } = fakePool({ maxBytes: 100 });
    const a = await touch(pool, "a", 40);
    const b = await touch(pool, "b", 40);

    await touch(pool, "c", 40);

    expect(pool.has("a")).toBe(false);
    expect(a.released).toBe(1);
    expect(b.released).toBe(0);
    expect(pool.bytes).toBe(80);
  });

  it("keeps a session larger than the whole byte budget, alone", async () => {
    const { pool } = fakePool({ maxBytes: 100 });
    await touch(pool, "a", 40);
    await touch(pool, "b", 40);

    const big = await touch(pool, "big", 150);

    expect(pool.size).toBe(1);
    expect(pool.has("big")).toBe(true);
    expect(big.released).toBe(0);
    expect(pool.bytes).toBe(150);
  });

  it("releases an evicted session only after the run using it finishes", async () => {
    const { pool } = fakePool({ maxSessions: 1 });
    const { run, session: inUse, result: longRun } = await holdRun<string>(pool, "a");

    await touch(pool, "b");
    expect(pool.has("a")).toBe(false);
    expect(inUse!.released).toBe(0);
    run.resolve("done");

    expect(await longRun).toBe("done");
    expect(inUse!.released).toBe(1);
  });

  it("releases an evicted session after its run fails", async () => {
    const { pool } = fakePool({ maxSessions: 1 });
    const { run, session: inUse, result: longRun } = await holdRun<string>(pool, "a");
    await touch(pool, "b");

    run.reject(new Error("inference failed"));

    await expect(longRun).rejects.toThrow("inference failed");
    expect(inUse!.released).toBe(1);
  });

  it("serves concurrent first requests for different keys with room for one session", async () => {
    // Each new session evicts the others; none may be evicted before its own request has used it.
    const { pool, factory } = fakePool({ maxSessions: 1 });
    factory.limit = 30;

    const results = await Promise.all(
      ["a", "b", "c"].map((key) =>
        pool.use(
          key,
          10,
          async () => `/artifacts/${key}.onnx`,
          async (session) => session.path,
        ),
      ),
    );

    expect(results).toEqual(["/artifacts/a.onnx", "/artifacts/b.onnx", "/artifacts/c.onnx"]);
    expect(factory.calls).toBe(3);
    expect(pool.size).toBe(1);
    expect(factory.created.map((session) => session.released).sort()).toEqual([0, 1, 1]);
  });

  it("reports a failed load as not ready and does not cache it as a session", async () => {
    const { pool, factory } = fakePool();
    factory.failWith = new Error("protobuf parsing failed");

    const error = await touch(pool, "a").catch((caught: unknown) => caught as ModelNotReadyError);

    expect(error).toBeInstanceOf(ModelNotReadyError);
    expect((error as ModelNotReadyError).message).toBe("model failed to load: protobuf parsing failed");
    expect(pool.has("a")).toBe(false);
    expect(pool.size).toBe(0);
  });

  it("answers from the remembered failure within retryAfterMs, without loading again", async () => {
    const { pool, factory, clock } = fakePool({ retryAfterMs: 5_000 });
    factory.failWith = new Error("out of memory");
    await touch(pool, "a").catch(() => undefined);
    factory.failWith = undefined;

    clock.now += 1_000;
    const error = await touch(pool, "a").catch((caught: unknown) => caught as ModelNotReadyError);

    expect(error).toBeInstanceOf(ModelNotReadyError);
    expect((error as ModelNotReadyError).message).toBe(
      "model failed to load (out of memory); retrying in 4 s",
    );
    expect(factory.calls).toBe(1);
  });

  it("tries the load again once retryAfterMs has passed", async () => {
    const { pool, factory, clock } = fakePool({ retryAfterMs: 5_000 });
    factory.failWith = new Error("out of memory");
    await touch(pool, "a").catch(() => undefined);
    factory.failWith = undefined;

    clock.now += 5_000;
    const session = await touch(pool, "a");

    expect(factory.calls).toBe(2);
    expect(session.path).toBe("/artifacts/a.onnx");
    expect(pool.has("a")).toBe(true);
  });

  it("passes a failure to locate the artifact through as is, and does not remember it", async () => {
    const { pool, factory } = fakePool();
    const integrity = new ArtifactIntegrityError("sha256 mismatch");

    const error = await pool
      .use(
        "a",
        10,
        () => Promise.reject(integrity),
        async () => "ran",
      )
      .catch((caught: unknown) => caught);
    const session = await touch(pool, "a");

    expect(error).toBe(integrity);
    expect(factory.calls).toBe(1);
    expect(session.path).toBe("/artifacts/a.onnx");
  });

  it("shares one failed load between concurrent requests", async () => {
    const { pool, factory } = fakePool();
    const gate = deferred();
    factory.gate = gate.promise;
    factory.failWith = new Error("bad model");

    const requests = [touch(pool, "a"), touch(pool, "a")].map((request) =>
      request.catch((caught: unknown) => caught as Error),
    );
    gate.resolve();
    const errors = await Promise.all(requests);

    expect(factory.calls).toBe(1);
    expect(errors.every((error) => error instanceof ModelNotReadyError)).toBe(true);
  });

  it("releases every idle session on close and defers busy ones until their run ends", async () => {
    const { pool } = fakePool();
    const idle = await touch(pool, "idle");
    const { run, session: busy, result: running } = await holdRun(pool, "busy");

    await pool.close();
    expect(idle.released).toBe(1);
    expect(busy!.released).toBe(0);
    run.resolve();
    await running;

    expect(busy!.released).toBe(1);
    expect(pool.size).toBe(0);
    expect(pool.bytes).toBe(0);
  });
});

/** Lets pending promise callbacks run until the condition holds (bounded, so a bug fails fast). */
async function settleUntil(condition: () => boolean): Promise<void> {
  for (let turn = 0; turn < 100 && !condition(); turn++)
    await new Promise((resolve) => setImmediate(resolve));
  if (!condition()) throw new Error("condition never held");
}
