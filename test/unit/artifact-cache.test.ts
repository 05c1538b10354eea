import { createHash } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ArtifactCache, type ArtifactSource, type LocalArtifact } from "#aws/onnx/artifact-cache.ts";
import { SessionPool } from "#aws/onnx/session-pool.ts";
import { ArtifactIntegrityError, ModelNotReadyError } from "#core/errors.ts";
import type { ArtifactRef } from "#core/model.ts";

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

function artifact(content: Uint8Array, key = "models/m/1/model.onnx"): ArtifactRef {
  return { bucket: "models", key, sha256: sha256(content), bytes: content.length };
}

/** Deterministic bytes of a given size, different for each seed. */
function bytesOf(size: number, seed: number): Buffer {
  return Buffer.from(Uint8Array.from({ length: size }, (_, i) => (i * 31 + seed * 17) & 0xff));
}

/** Artifacts served from memory by key, in chunks, optionally slowly; counts every open. */
class InMemorySource implements ArtifactSource {
  readonly objects = new Map<string, Buffer>();
  readonly opens = new Map<string, number>();
  chunkSize = 64;
  delayMs = 0;

  put(key: string, content: Buffer): this {
    this.objects.set(key, content);
    return this;
  }

  openCount(key: string): number {
    return this.opens.get(key) ?? 0;
  }

  /** The `onSent` callback each open was given. */
  readonly onSents: (undefined | (() => void))[] = [];

  async open(ref: ArtifactRef, onSent?: () => void): Promise<Readable> {
    this.onSents.push(onSent);
    this.opens.set(ref.key, this.openCount(ref.key) + 1);
    const content = this.objects.get(ref.key);
    if (content === undefined) throw new Error(`no object ${ref.key}`);
    const { chunkSize, delayMs } = this;
    const chunks: Buffer[] = [];
    for (let offset = 0; offset < content.length; offset += chunkSize) {
      chunks.push(content.subarray(offset, offset + chunkSize));
    }
    if (delayMs === 0) return Readable.from(chunks);
    return Readable.from(
      (async function* () {
        for (const chunk of chunks) {
          await sleep(delayMs);
          yield chunk;
        }
      })(),
    );
  }
}

let directory: string;

beforeEach(async () => {
  directory = await mkdtemp(join(tmpdir(), "artifact-cache-"));
});

afterEach(async () => {
  await rm(directory, { recursive: true, force: true });
});

function rejection(promise: Promise<unknown>): Promise<Error> {
  return promise.then(
    () => {
      throw new Error("the promise resolved");
    },
    (error: unknown) => error as Error,
  );
}

describe("ArtifactCache", () => {
  it("downloads an artifact once and serves it from disk afterwards", async () => {
    const content = bytesOf(1000, 1);
    const ref = artifact(content);
    const source = new InMemorySource().put(ref.key, content);
    const cache = new ArtifactCache({ source, directory, maxBytes: 10_000 });

    const first = await cache.path(ref);
    const second = await cache.path(ref);

    expect(first).toBe(join(directory, `${ref.sha256}.onnx`));
    expect(second).toBe(first);
    expect(await readFile(first)).toEqual(content);
    expect(source.openCount(ref.key)).toBe(1);
    expect(cache.bytes).toBe(1000);
  });

  it("shares one download between concurrent first requests", async () => {
    const content = bytesOf(1000, 2);
    const ref = artifact(content);
    const source = new InMemorySource().put(ref.key, content);
    source.delayMs = 1;
    const cache = new ArtifactCache({ source, directory, maxBytes: 10_000 });

    const paths = await Promise.all([cache.path(ref), cache.path(ref), cache.path(ref), cache.path(ref)]);

    expect(new Set(paths).size).toBe(1);
    expect(source.openCount(ref.key)).toBe(1);
    expect(cache.bytes).toBe(1000);
  });

  it("rejects bytes whose sha256 differs from the record and leaves no file behind", async () => {
    const content = bytesOf(1000, 3);
    const ref = { ...artifact(content), sha256: sha256(bytesOf(1000, 4)) };
    const source = new InMemorySource().put(ref.key, content);
    const cache = new ArtifactCache({ source, directory, maxBytes: 10_000 });

    const error = await rejection(cache.path(ref));

    expect(error).toBeInstanceOf(ArtifactIntegrityError);
    expect(error.message).toContain(`artifact ${ref.key} does not match its registry record`);
    expect(error.message).toContain(`sha256 ${sha256(content)}`);
    expect(await readdir(directory)).toEqual([]);
    expect(cache.bytes).toBe(0);
  });

  it("rejects an artifact shorter than registered and leaves no file behind", async () => {
    const content = bytesOf(1000, 5);
    const ref = { ...artifact(content), bytes: 1001 };
    const source = new InMemorySource().put(ref.key, content);
    const cache = new ArtifactCache({ source, directory, maxBytes: 10_000 });

    const error = await rejection(cache.path(ref));

    expect(error).toBeInstanceOf(ArtifactIntegrityError);
    expect(error.message).toContain("got 1000 bytes");
    expect(error.message).toContain("expected 1001 bytes");
    expect(await readdir(directory)).toEqual([]);
  });

  it("stops an artifact longer than registered as soon as it overflows and leaves no file behind", async () => {
    const content = bytesOf(1000, 6);
    const ref = { ...artifact(content), bytes: 500 };
    const source = new InMemorySource().put(ref.key, content);
    const cache = new ArtifactCache({ source, directory, maxBytes: 10_000 });

    const error = await rejection(cache.path(ref));

    expect(error).toBeInstanceOf(ArtifactIntegrityError);
    expect(error.message).toBe(`artifact ${ref.key} is larger than the 500 bytes registered`);
    expect(await readdir(directory)).toEqual([]);
  });

  it("leaves no partial file behind when an oversized download fails before its file is open", async () => {
    // The overflow can be detected before the write stream has created its file; one attempt
    // rarely hits that window, so this repeats it until a leftover would be all but certain.
    const content = bytesOf(1000, 9);
    const ref = { ...artifact(content), bytes: 500 };
    const source = new InMemorySource().put(ref.key, content);
    source.chunkSize = content.length;
    const attempts = Array.from({ length: 1000 }, (_, attempt) => join(directory, `attempt-${attempt}`));

    for (const attemptDirectory of attempts) {
      await rejection(new ArtifactCache({ source, directory: attemptDirectory, maxBytes: 10_000 }).path(ref));
    }
    await sleep(20);

    const leftovers = (await Promise.all(attempts.map((path) => readdir(path)))).flat();
    expect(leftovers).toEqual([]);
  });

  it("does not remember a failed download: the next request downloads again", async () => {
    const content = bytesOf(1000, 7);
    const ref = artifact(content);
    const source = new InMemorySource().put(ref.key, bytesOf(1000, 8));
    const cache = new ArtifactCache({ source, directory, maxBytes: 10_000 });
    await rejection(cache.path(ref));
    source.put(ref.key, content);

    const path = await cache.path(ref);

    expect(await readFile(path)).toEqual(content);
    expect(source.openCount(ref.key)).toBe(2);
  });

  it("evicts the least recently used artifact from disk to stay under the byte budget", async () => {
    const [a, b, c] = [bytesOf(1000, 10), bytesOf(1000, 11), bytesOf(1000, 12)];
    const [refA, refB, refC] = [artifact(a, "a"), artifact(b, "b"), artifact(c, "c")];
    const source = new InMemorySource().put("a", a).put("b", b).put("c", c);
    const cache = new ArtifactCache({ source, directory, maxBytes: 2500 });
    const pathA = await cache.path(refA);
    const pathB = await cache.path(refB);
    await cache.path(refA);

    const pathC = await cache.path(refC);

    expect((await readdir(directory)).sort()).toEqual([`${refA.sha256}.onnx`, `${refC.sha256}.onnx`].sort());
    expect(await readFile(pathA)).toEqual(a);
    expect(await readFile(pathC)).toEqual(c);
    expect(cache.bytes).toBe(2000);
    await cache.path(refB);
    expect(source.openCount("b")).toBe(2);
    expect(pathB).toBe(join(directory, `${refB.sha256}.onnx`));
  });

  it("refuses an artifact larger than the whole budget without downloading it", async () => {
    const content = bytesOf(3000, 13);
    const ref = artifact(content);
    const source = new InMemorySource().put(ref.key, content);
    const cache = new ArtifactCache({ source, directory, maxBytes: 2500 });

    const error = await rejection(cache.path(ref));

    expect(error).toBeInstanceOf(ModelNotReadyError);
    expect(error.message).toBe(
      "artifact of 3000 bytes exceeds this function's cache of 2500 bytes; " +
        "serve it from a larger /tmp or a SageMaker target",
    );
    expect(source.openCount(ref.key)).toBe(0);
  });

  it("adopts verified files a previous cache left in its directory, without downloading", async () => {
    const content = bytesOf(1000, 14);
    const ref = artifact(content);
    const source = new InMemorySource().put(ref.key, content);
    const path = await new ArtifactCache({ source, directory, maxBytes: 10_000 }).path(ref);

    const restarted = new ArtifactCache({ source, directory, maxBytes: 10_000 });
    const adopted = await restarted.path(ref);

    expect(adopted).toBe(path);
    expect(source.openCount(ref.key)).toBe(1);
    expect(restarted.bytes).toBe(1000);
  });

  it("deletes stale partial downloads when it starts on an existing directory", async () => {
    const content = bytesOf(1000, 15);
    const ref = artifact(content);
    const stale = `${ref.sha256}.0b6f1e2a-0000-4000-8000-000000000000.part`;
    await writeFile(join(directory, stale), content.subarray(0, 10));
    await writeFile(join(directory, "notes.txt"), "not ours");
    const source = new InMemorySource().put(ref.key, content);
    const cache = new ArtifactCache({ source, directory, maxBytes: 10_000 });

    await cache.path(ref);

    expect((await readdir(directory)).sort()).toEqual([`${ref.sha256}.onnx`, "notes.txt"].sort());
    expect(cache.bytes).toBe(1000);
  });

  it("downloads again an artifact whose file was deleted behind its back", async () => {
    const content = bytesOf(1000, 16);
    const ref = artifact(content);
    const source = new InMemorySource().put(ref.key, content);
    const cache = new ArtifactCache({ source, directory, maxBytes: 10_000 });
    const path = await cache.path(ref);
    await unlink(path);

    const again = await cache.path(ref);

    expect(again).toBe(path);
    expect(await readFile(again)).toEqual(content);
    expect(source.openCount(ref.key)).toBe(2);
    expect(cache.bytes).toBe(1000);
  });

  it("creates and scans its directory at construction, so a first download does not wait for it", async () => {
    const nested = join(directory, "scanned-early");
    const cache = new ArtifactCache({ source: new InMemorySource(), directory: nested, maxBytes: 10_000 });
    await new Promise((settled) => setTimeout(settled, 50));

    expect(await readdir(nested)).toEqual([]);
    expect(cache.bytes).toBe(0);
  });

  it("reports a directory it cannot create at each load, not as an unhandled rejection", async () => {
    const blocker = join(directory, "blocker");
    await writeFile(blocker, "a file where the directory should be");
    const content = bytesOf(100, 19);
    const ref = artifact(content);
    const cache = new ArtifactCache({
      source: new InMemorySource().put(ref.key, content),
      directory: join(blocker, "artifacts"),
      maxBytes: 10_000,
    });
    await new Promise((settled) => setTimeout(settled, 20));

    expect((await rejection(cache.load(ref))).message).toMatch(/ENOTDIR/);
    expect((await rejection(cache.path(ref))).message).toMatch(/ENOTDIR/);
  });

  it("creates its directory when it does not exist yet", async () => {
    const content = bytesOf(100, 17);
    const ref = artifact(content);
    const nested = join(directory, "a", "b");
    const cache = new ArtifactCache({
      source: new InMemorySource().put(ref.key, content),
      directory: nested,
      maxBytes: 10_000,
    });

    const path = await cache.path(ref);

    expect(path).toBe(join(nested, `${ref.sha256}.onnx`));
  });
});

describe("ArtifactCache.load: small artifacts through memory", () => {
  const memoryCache = (
    source: ArtifactSource,
    options: { maxBytes?: number; memoryMaxBytes?: number } = {},
  ) =>
    new ArtifactCache({
      source,
      directory,
      maxBytes: options.maxBytes ?? 10_000,
      memoryMaxBytes: options.memoryMaxBytes ?? 5_000,
    });

  it("hands back the verified bytes with their file in place: the next load is a path", async () => {
    const content = bytesOf(1000, 21);
    const ref = artifact(content);
    const source = new InMemorySource().put(ref.key, content);
    const cache = memoryCache(source);

    const first = await cache.load(ref);
    const second = await cache.load(ref);

    expect(first).toBeInstanceOf(Uint8Array);
    expect(Buffer.from(first as Uint8Array)).toEqual(content);
    expect(second).toBe(join(directory, `${ref.sha256}.onnx`));
    expect(await readFile(second as string)).toEqual(content);
    expect(await readdir(directory)).toEqual([`${ref.sha256}.onnx`]);
    expect(source.openCount(ref.key)).toBe(1);
    expect(cache.bytes).toBe(1000);
  });

  it("verifies a download of several hash blocks in odd-sized chunks, and rejects one byte changed inside a block", async () => {
    // Above the 1 MiB the in-memory path hashes at a time, in chunks that straddle block boundaries.
    const content = bytesOf(3 * 1024 * 1024 + 12_345, 22);
    const ref = artifact(content);
    const source = new InMemorySource().put(ref.key, content);
    source.chunkSize = 65_521;
    const options = { maxBytes: 16 << 20, memoryMaxBytes: 8 << 20 };

    const bytes = await memoryCache(source, options).load(ref);
    expect(Buffer.from(bytes as Uint8Array).equals(content)).toBe(true);

    // The first load left the verified file, which a new cache on this directory would serve.
    await rm(join(directory, `${ref.sha256}.onnx`));
    const tampered = Buffer.from(content);
    const flipped = 1024 * 1024 + 777;
    tampered.writeUInt8(tampered.readUInt8(flipped) ^ 1, flipped);
    const tamperedSource = new InMemorySource().put(ref.key, tampered);
    tamperedSource.chunkSize = 65_521;
    const error = await rejection(memoryCache(tamperedSource, options).load(ref));
    expect(error).toBeInstanceOf(ArtifactIntegrityError);
    expect(error.message).toContain(`expected ${content.length} bytes, sha256 ${ref.sha256}`);
  });

  it("hands its whileWaiting to the source for downloads into memory and to disk alike", async () => {
    const whileWaiting = () => {};
    const small = bytesOf(100, 23);
    const large = bytesOf(1000, 24);
    const source = new InMemorySource().put("small", small).put("large", large);
    const cache = new ArtifactCache({
      source,
      directory,
      maxBytes: 10_000,
      memoryMaxBytes: 500,
      whileWaiting,
    });

    expect(await cache.load(artifact(small, "small"))).toBeInstanceOf(Uint8Array);
    expect(typeof (await cache.load(artifact(large, "large")))).toBe("string");
    expect(source.onSents).toEqual([whileWaiting, whileWaiting]);
  });

  it("streams artifacts above its memory limit to disk, as path() does", async () => {
    const content = bytesOf(1000, 22);
    const ref = artifact(content);
    const cache = memoryCache(new InMemorySource().put(ref.key, content), { memoryMaxBytes: 999 });

    expect(await cache.load(ref)).toBe(join(directory, `${ref.sha256}.onnx`));
  });

  it("shares one download: its bytes go to the load that started it, the file to every other caller", async () => {
    const content = bytesOf(1000, 23);
    const ref = artifact(content);
    const source = new InMemorySource().put(ref.key, content);
    source.delayMs = 1;
    const cache = memoryCache(source);

    const [a, b, path] = await Promise.all([cache.load(ref), cache.load(ref), cache.path(ref)]);

    expect(Buffer.from(a as Uint8Array)).toEqual(content);
    // Its own memory, which the caller may move to another thread.
    expect((a as Uint8Array).byteLength).toBe((a as Uint8Array).buffer.byteLength);
    expect(b).toBe(path);
    expect(await readFile(path)).toEqual(content);
    expect(source.openCount(ref.key)).toBe(1);
  });

  it("writes the disk copy as the download arrives, a block at a time", async () => {
    // Several 1 MiB blocks: the file has grown before the last chunk is sent.
    const content = bytesOf(3 * 1024 * 1024 + 100, 29);
    const ref = artifact(content);
    const source = new InMemorySource().put(ref.key, content);
    source.chunkSize = 256 * 1024;
    source.delayMs = 5;
    const cache = memoryCache(source, { maxBytes: 16 << 20, memoryMaxBytes: 8 << 20 });
    let onDiskMidway = 0;
    const sampling = setInterval(() => {
      void bytesOnDisk(directory).then((bytes) => {
        onDiskMidway = Math.max(onDiskMidway, bytes);
      });
    }, 2);

    await cache.load(ref);
    clearInterval(sampling);

    expect(onDiskMidway).toBeGreaterThanOrEqual(1024 * 1024);
    expect(await readdir(directory)).toEqual([`${ref.sha256}.onnx`]);
  });

  it.each([
    [
      "a sha256 that differs from the record",
      (content: Buffer) => ({ ...artifact(content), sha256: sha256(bytesOf(1000, 99)) }),
      ArtifactIntegrityError,
      "does not match its registry record",
    ],
    [
      "fewer bytes than registered",
      (content: Buffer) => ({ ...artifact(content), bytes: 1001 }),
      ArtifactIntegrityError,
      "does not match its registry record",
    ],
    [
      "more bytes than registered",
      (content: Buffer) => ({ ...artifact(content), bytes: 999 }),
      ArtifactIntegrityError,
      "is larger than the 999 bytes registered",
    ],
  ])("rejects %s, keeps nothing and remembers nothing", async (_, makeRef, type, message) => {
    const content = bytesOf(1000, 24);
    const ref = makeRef(content);
    const source = new InMemorySource().put(ref.key, content);
    const cache = memoryCache(source);

    const error = await rejection(cache.load(ref));

    expect(error).toBeInstanceOf(type);
    expect(error.message).toContain(message);
    expect(await readdir(directory)).toEqual([]);
    expect(cache.bytes).toBe(0);
    await rejection(cache.load(ref));
    expect(source.openCount(ref.key)).toBe(2);
  });

  it("still serves the bytes when the disk copy cannot be written, and downloads again next time", async () => {
    const content = bytesOf(1000, 25);
    const ref = artifact(content);
    const source = new InMemorySource().put(ref.key, content);
    source.delayMs = 1;
    const cache = memoryCache(source);
    await cache.load(artifact(bytesOf(10, 26), "other")).catch(() => undefined); // scans the directory
    await rm(directory, { recursive: true, force: true }); // the write behind now fails

    // A path() caller sharing that download needs the file: it tries to write one itself, and fails.
    const [bytes, pathError] = await Promise.all([cache.load(ref), rejection(cache.path(ref))]);

    expect(Buffer.from(bytes as Uint8Array)).toEqual(content);
    expect(pathError.message).toContain("ENOENT");
    expect(cache.bytes).toBe(0);
    expect(await cache.load(ref)).toBeInstanceOf(Uint8Array);
    expect(source.openCount(ref.key)).toBe(2);
  });

  it("counts a copy being written against the budget, and evicts for it", async () => {
    const older = bytesOf(600, 27);
    const newer = bytesOf(600, 28);
    const source = new InMemorySource().put("older", older).put("newer", newer);
    const cache = memoryCache(source, { maxBytes: 1000 });

    await cache.load(artifact(older, "older"));
    await cache.load(artifact(newer, "newer"));

    expect(await readdir(directory)).toEqual([`${sha256(newer)}.onnx`]);
    expect(cache.bytes).toBe(600);
  });
});

/** Bytes of every file in the directory (part files included); files deleted while listed count 0. */
async function bytesOnDisk(dir: string): Promise<number> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const sizes = await Promise.all(
    names.map((name) =>
      stat(join(dir, name)).then(
        (file) => file.size,
        () => 0,
      ),
    ),
  );
  return sizes.reduce((sum, size) => sum + size, 0);
}

describe("ArtifactCache under eviction pressure", () => {
  it("serves every request and never holds more than its budget on disk, with sessions loading from its files", async () => {
    const sizes = [3000, 4500, 6000, 7000, 8500, 9000, 10_000];
    const models = sizes.map((size, i) => ({
      content: bytesOf(size, 100 + i),
      key: `models/p${i}/1/model.onnx`,
    }));
    const refs = models.map(({ content, key }) => artifact(content, key));
    const source = new InMemorySource();
    for (const { content, key } of models) source.put(key, content);
    source.chunkSize = 1024;
    source.delayMs = 1;
    const maxBytes = 18_000;
    const cache = new ArtifactCache({ source, directory, maxBytes, memoryMaxBytes: 5000 });
    // Creates a "session" the way onnxruntime does: reads the whole file at the path it is given.
    const sessions = new SessionPool({
      create: async (local: LocalArtifact) => {
        await sleep(5);
        const bytes = typeof local === "string" ? await readFile(local) : local;
        return { bytes: bytes.length, release: async () => {} };
      },
      hold: (local) => cache.hold(local),
      maxSessions: 1,
      maxBytes: Number.POSITIVE_INFINITY,
      retryAfterMs: 10_000,
    });
    const failures: string[] = [];
    let peak = 0;
    let done = false;
    const sampler = (async () => {
      while (!done) {
        peak = Math.max(peak, await bytesOnDisk(directory));
        await new Promise((resolve) => setImmediate(resolve));
      }
    })();

    const caller = async (id: number) => {
      for (let i = 0; i < 30; i++) {
        const ref = refs[(id * 3 + i * (id + 2)) % refs.length]!;
        try {
          const read = await sessions.use(
            ref.sha256,
            ref.bytes,
            () => cache.load(ref),
            async (session) => session.bytes,
          );
          if (read !== ref.bytes) failures.push(`${ref.key}: read ${read} bytes`);
        } catch (error) {
          failures.push(`${ref.key}: ${(error as Error).message}`);
        }
        peak = Math.max(peak, await bytesOnDisk(directory));
      }
    };
    await Promise.all([0, 1, 2, 3].map(caller));
    done = true;
    await sampler;
    await sessions.close();

    expect(failures).toEqual([]);
    expect(peak).toBeLessThanOrEqual(maxBytes);
    expect(await bytesOnDisk(directory)).toBeLessThanOrEqual(maxBytes);
  }, 20_000);
});
