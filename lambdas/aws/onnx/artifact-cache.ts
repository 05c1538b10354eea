import { createHash, randomUUID } from "node:crypto";
import { createWriteStream, type WriteStream } from "node:fs";
import { mkdir, open, readdir, rename, stat, unlink } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Readable } from "node:stream";
import { finished } from "node:stream/promises";
import { writeHashed } from "#aws/s3/hashed-file.ts";
import { ArtifactIntegrityError, ModelNotReadyError } from "#core/errors.ts";
import type { ArtifactRef } from "#core/model.ts";

/** Where artifact bytes come from: S3 in AWS and locally. */
export interface ArtifactSource {
  /** `onSent`, where the source can tell, once the request is sent and only the first byte is awaited. */
  open(ref: ArtifactRef, onSent?: () => void): Promise<Readable>;
}

export interface ArtifactCacheOptions {
  readonly source: ArtifactSource;
  /** Local directory for verified artifacts (in Lambda, under /tmp). */
  readonly directory: string;
  /**
   * Byte budget on disk, part files included, never exceeded: a download reserves its bytes before it
   * writes, deleting idle artifacts (least recently used first) for room, or waits until some are idle.
   */
  readonly maxBytes: number;
  /**
   * Artifacts up to this size are downloaded into memory by `load`, which hands the verified bytes
   * to the caller, the disk copy written as they arrive. Larger ones stream to disk. @default 0
   */
  readonly memoryMaxBytes?: number;
  /**
   * Called when a download's request is on its way and the cache waits for the first byte (S3 takes
   * tens of milliseconds to start an object): CPU work that the caller needs next fits there.
   */
  readonly whileWaiting?: () => void;
}

/**
 * A verified artifact on this machine: the file's path, or, straight after a download into memory,
 * the bytes themselves (onnxruntime creates a session from either). Bytes are handed to one caller,
 * whose own they are: nothing else reads them, so they may be moved to another thread.
 */
export type LocalArtifact = string | Uint8Array;

interface CachedFile {
  readonly path: string;
  readonly bytes: number;
  /** Callers using the file (a session being created from it): never deleted while above zero. */
  holds: number;
}

interface RoomWanted {
  readonly bytes: number;
  readonly admit: () => void;
}

const CACHED_NAME = /^([0-9a-f]{64})\.onnx$/;
const HASH_BLOCK_BYTES = 1 << 20;

/**
 * Artifacts on local disk, named by their sha256. A download is hashed while it streams, verified
 * against the registry's digest and size, and only then renamed into place, so a file under its
 * final name is always complete and correct. Concurrent requests for one artifact share one download.
 */
export class ArtifactCache {
  readonly #options: ArtifactCacheOptions;
  /** Insertion order is recency order: a hit re-inserts its entry. */
  readonly #files = new Map<string, CachedFile>();
  readonly #downloads = new Map<string, Promise<LocalArtifact>>();
  /** Bytes of files under their final names, including those being deleted until they are gone. */
  #bytes = 0;
  /** Bytes of downloads and disk copies in flight, counted against the budget before they write. */
  #reserved = 0;
  /** Bytes of files being deleted: room already on its way. */
  #freeing = 0;
  /** Downloads waiting for room, first come first served. */
  readonly #waiting: RoomWanted[] = [];
  /** The directory's scan, started at once: a cold start's first download no longer waits for it. */
  readonly #scanned: Promise<void>;

  constructor(options: ArtifactCacheOptions) {
    this.#options = options;
    this.#scanned = this.#adoptExisting();
    // Its failure (an unwritable directory, say) is each load's to report.
    this.#scanned.catch(() => undefined);
  }

  get bytes(): number {
    return this.#bytes;
  }

  /**
   * Keeps the file `load` or `path` just returned from being deleted until the returned function is
   * called; undefined if it is already gone (load it again). Bytes need no hold. The file is held
   * for the caller until the next macrotask, so a hold taken as soon as the load resolves has no gap.
   */
  hold(artifact: LocalArtifact): (() => void) | undefined {
    if (typeof artifact !== "string") return () => undefined;
    const sha256 = CACHED_NAME.exec(basename(artifact))?.[1];
    const file = sha256 === undefined ? undefined : this.#files.get(sha256);
    if (file === undefined || file.path !== artifact) return undefined;
    file.holds += 1;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.#unhold(file);
    };
  }

  /** Path of a verified local copy of the artifact, downloading it first if needed. */
  async path(ref: ArtifactRef): Promise<string> {
    const local = await this.#local(ref, false);
    if (typeof local !== "string") throw new Error("a download to disk returned bytes");
    return local;
  }

  /**
   * A verified copy of the artifact: its cached file, or, when this call had to download an artifact
   * of at most `memoryMaxBytes`, its bytes, this caller's own (their file is in place too, unless it
   * could not be written).
   */
  load(ref: ArtifactRef): Promise<LocalArtifact> {
    return this.#local(ref, true);
  }

  async #local(ref: ArtifactRef, intoMemory: boolean): Promise<LocalArtifact> {
    await this.#scanned;
    const cached = this.#files.get(ref.sha256);
    if (cached !== undefined) {
      const present = await stat(cached.path).then(
        () => true,
        () => false,
      );
      // Deleted meanwhile only if it was idle: then it is downloaded again below.
      if (present && this.#files.get(ref.sha256) === cached) {
        this.#files.delete(ref.sha256);
        this.#files.set(ref.sha256, cached);
        return this.#handOut(cached);
      }
      if (this.#files.get(ref.sha256) === cached) this.#forget(ref.sha256);
    }
    const shared = this.#downloads.get(ref.sha256);
    if (shared !== undefined) {
      // Bytes belong to the caller that started the download: the others take the file it left.
      await shared;
      return this.#local(ref, intoMemory);
    }
    const download = this.#download(ref, intoMemory).finally(() => this.#downloads.delete(ref.sha256));
    this.#downloads.set(ref.sha256, download);
    return download;
  }

  /** A warm container that restarted its process keeps /tmp: reuse what is already verified there. */
  async #adoptExisting(): Promise<void> {
    await mkdir(this.#options.directory, { recursive: true });
    for (const name of await readdir(this.#options.directory)) {
      const path = join(this.#options.directory, name);
      const sha256 = CACHED_NAME.exec(name)?.[1];
      if (sha256 === undefined) {
        if (name.endsWith(".part")) await unlink(path).catch(() => undefined);
        continue;
      }
      const { size } = await stat(path);
      this.#files.set(sha256, { path, bytes: size, holds: 0 });
      this.#bytes += size;
    }
  }

  async #download(ref: ArtifactRef, intoMemory: boolean): Promise<LocalArtifact> {
    if (ref.bytes > this.#options.maxBytes) {
      throw new ModelNotReadyError(
        `artifact of ${ref.bytes} bytes exceeds this function's cache of ${this.#options.maxBytes} bytes; ` +
          "serve it from a larger /tmp or a SageMaker target",
      );
    }
    const finalPath = join(this.#options.directory, `${ref.sha256}.onnx`);
    await this.#reserve(ref.bytes);
    try {
      if (intoMemory && ref.bytes <= (this.#options.memoryMaxBytes ?? 0))
        return await this.#fetchIntoMemory(ref, finalPath);
      await this.#fetchVerified(ref, finalPath);
      // Landed: counted as a file before its reservation is released, so its room is never handed on.
      const file: CachedFile = { path: finalPath, bytes: ref.bytes, holds: 0 };
      this.#files.set(ref.sha256, file);
      this.#bytes += ref.bytes;
      return this.#handOut(file);
    } finally {
      this.#unreserve(ref.bytes);
    }
  }

  /** Holds a file for the caller it is returned to until the next macrotask: `hold` takes over from it. */
  #handOut(file: CachedFile): string {
    file.holds += 1;
    setImmediate(() => this.#unhold(file));
    return file.path;
  }

  #unhold(file: CachedFile): void {
    file.holds -= 1;
    if (file.holds === 0) this.#admit();
  }

  /**
   * Reads the object into one buffer of the registered size, hashing each block as it arrives and
   * writing it to a part file behind that, renamed into place once verified: no disk round trip
   * before the session can be created, and once this returns nothing reads the buffer any more, so a
   * session's worker can take it without a copy. A failed disk write costs only the cache entry.
   */
  async #fetchIntoMemory(ref: ArtifactRef, finalPath: string): Promise<Uint8Array> {
    const partPath = this.#partPath(ref);
    const copy = new DiskCopy(partPath);
    const bytes = Buffer.allocUnsafeSlow(ref.bytes);
    try {
      const body = await this.#options.source.open(ref, this.#options.whileWaiting);
      const hash = createHash("sha256");
      let received = 0;
      let hashed = 0;
      // Flowing mode ('data' events) rather than an async iterator: no promise or tick per chunk.
      body.on("data", (chunk: Buffer) => {
        if (received + chunk.length > ref.bytes) {
          body.destroy(tooLarge(ref));
          return;
        }
        bytes.set(chunk, received);
        received += chunk.length;
        // Hashed from the buffer a block at a time, while the block is still in cache: one update per
        // socket chunk (64 KB) cost more in calls than in hashing.
        if (received - hashed >= HASH_BLOCK_BYTES) {
          hash.update(bytes.subarray(hashed, received));
          copy.write(bytes, hashed, received);
          hashed = received;
        }
      });
      await finished(body);
      hash.update(bytes.subarray(hashed, received));
      verifyAgainstRecord(ref, received, hash.digest("hex"));
      copy.write(bytes, hashed, received);
    } catch (error) {
      await copy.discard();
      throw error;
    }
    if (await copy.landAt(finalPath)) {
      this.#files.set(ref.sha256, { path: finalPath, bytes: ref.bytes, holds: 0 });
      this.#bytes += ref.bytes;
    }
    return bytes;
  }

  /** A fresh name beside the final one: concurrent writers never share a part file. */
  #partPath(ref: ArtifactRef): string {
    return join(this.#options.directory, `${ref.sha256}.${randomUUID()}.part`);
  }

  async #fetchVerified(ref: ArtifactRef, finalPath: string): Promise<void> {
    const partPath = this.#partPath(ref);
    // The file exists before any byte flows, so the cleanup below always finds what it must remove.
    const file = await open(partPath, "wx");
    try {
      const body = await this.#options.source.open(ref, this.#options.whileWaiting);
      const { sha256, bytes } = await writeHashed(body, file, (received) => {
        if (received > ref.bytes) throw tooLarge(ref);
      });
      verifyAgainstRecord(ref, bytes, sha256);
      await rename(partPath, finalPath);
    } catch (error) {
      await file.close().catch(() => undefined);
      await unlink(partPath).catch(() => undefined);
      throw error;
    }
  }

  /** Resolves once `bytes` are reserved: at once if they fit, else after idle files are deleted or freed. */
  #reserve(bytes: number): Promise<void> {
    return new Promise((admit) => {
      this.#waiting.push({ bytes, admit });
      this.#admit();
    });
  }

  #unreserve(bytes: number): void {
    this.#reserved -= bytes;
    this.#admit();
  }

  /**
   * Admits waiting downloads in order while they fit, counting their bytes as reserved in the same
   * synchronous step; for the first that does not, deletes idle files (least recently used first)
   * and is called again when they are gone, when a hold ends or when a reservation is released.
   */
  #admit(): void {
    const max = this.#options.maxBytes;
    for (let next = this.#waiting[0]; next !== undefined; next = this.#waiting[0]) {
      const over = this.#bytes + this.#reserved + next.bytes - max;
      if (over > 0) {
        this.#evictIdle(over - this.#freeing);
        return;
      }
      this.#waiting.shift();
      this.#reserved += next.bytes;
      next.admit();
    }
  }

  /** Starts deleting idle files, least recently used first, until `needed` bytes are on their way out. */
  #evictIdle(needed: number): void {
    let freed = 0;
    for (const [sha256, file] of this.#files) {
      if (freed >= needed) break;
      if (file.holds > 0) continue;
      this.#files.delete(sha256);
      this.#freeing += file.bytes;
      freed += file.bytes;
      // Counted in the budget until the file is gone, so no download writes into room not yet free.
      void unlink(file.path)
        .catch(() => undefined)
        .then(() => {
          this.#freeing -= file.bytes;
          this.#bytes -= file.bytes;
          this.#admit();
        });
    }
  }

  /** Drops a file that is already gone from disk. */
  #forget(sha256: string): void {
    const file = this.#files.get(sha256);
    if (file === undefined) return;
    this.#files.delete(sha256);
    this.#bytes -= file.bytes;
    this.#admit();
  }
}

/**
 * A part file written from a buffer's blocks in order, through an fs.WriteStream (views of the buffer,
 * not copies); the first failure stops it, and the copy then never lands. The buffer must not change
 * until the copy lands or is discarded.
 */
class DiskCopy {
  readonly #path: string;
  readonly #stream: WriteStream;
  #failed = false;

  /** A copy at `path`, a new file; one that cannot be created is a copy that never lands. */
  constructor(path: string) {
    this.#path = path;
    this.#stream = createWriteStream(path, { flags: "wx" });
    this.#stream.on("error", () => {
      this.#failed = true;
    });
  }

  /** Queues bytes [start, end) of `buffer`, after those queued before. */
  write(buffer: Uint8Array, start: number, end: number): void {
    if (!this.#failed && end > start) this.#stream.write(buffer.subarray(start, end));
  }

  /** Waits for the writes and renames the file to `finalPath`; false (and no file) if any step failed. */
  async landAt(finalPath: string): Promise<boolean> {
    this.#stream.end();
    const written = await finished(this.#stream).then(
      () => !this.#failed,
      () => false,
    );
    const renamed =
      written &&
      (await rename(this.#path, finalPath).then(
        () => true,
        () => false,
      ));
    if (!renamed) await unlink(this.#path).catch(() => undefined);
    return renamed;
  }

  /** Stops the copy once the write in flight (it reads the buffer) is done, and removes the file. */
  async discard(): Promise<void> {
    this.#stream.destroy();
    await finished(this.#stream).catch(() => undefined);
    await unlink(this.#path).catch(() => undefined);
  }
}

function tooLarge(ref: ArtifactRef): ArtifactIntegrityError {
  return new ArtifactIntegrityError(`artifact ${ref.key} is larger than the ${ref.bytes} bytes registered`);
}

/** Throws unless the downloaded size and digest are the ones the registry recorded. */
function verifyAgainstRecord(ref: ArtifactRef, bytes: number, sha256: string): void {
  if (bytes !== ref.bytes || sha256 !== ref.sha256) {
    throw new ArtifactIntegrityError(
      `artifact ${ref.key} does not match its registry record ` +
        `(got ${bytes} bytes, sha256 ${sha256}; expected ${ref.bytes} bytes, sha256 ${ref.sha256})`,
    );
  }
}
