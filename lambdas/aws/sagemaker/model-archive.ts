/**
 * The `.tar.gz` model archives SageMaker loads: tar through tar-stream, gzip through zlib. Written by
 * registration (streamed, never whole in memory) and read by the GPU container and the local
 * SageMaker stand-in where SageMaker would extract them.
 */
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir } from "node:fs/promises";
import { dirname, join, normalize, sep } from "node:path";
import { pipeline, Readable } from "node:stream";
import { pipeline as pipelineAsync } from "node:stream/promises";
import { createGunzip, createGzip } from "node:zlib";
import { extract, pack } from "tar-stream";

export class InvalidArchiveError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidArchiveError";
  }
}

/**
 * Streams `<name>` (default `model.onnx`) with the contents of `path` as a `.tar.gz`; mtime 0 so the
 * same bytes always make the same archive. Gzip level 0 (stored blocks): float weights shrink by
 * under 10% at level 1 for a tenth of the speed (250 MB/s vs 23 MB/s measured), and multi-GB models
 * must fit a Lambda timeout. A file that is not `bytes` long fails the stream (tar-stream's
 * "Size mismatch").
 */
export function createModelArchive(path: string, bytes: number, name = "model.onnx"): Readable {
  const archive = pack();
  const entry = archive.entry({ name, size: bytes, mode: 0o644, mtime: new Date(0) }, (error) => {
    if (!error) archive.finalize();
  });
  // Either side failing destroys the other: a read error reaches whoever reads the archive.
  pipeline(createReadStream(path, { highWaterMark: 1024 * 1024 }), entry, () => {});
  return pipeline(archive, createGzip({ level: 0 }), () => {});
}

/** A member path that stays inside the destination: no absolute paths, no `..`; `./` is the root itself. */
function safeJoin(root: string, name: string, isDirectory = false): string {
  const relative = normalize(name)
    .replace(/^(\.\/)+/, "")
    .replace(/\/+$/, "");
  if (isDirectory && (relative === "" || relative === ".")) return root;
  if (relative.startsWith("/") || relative === ".." || relative.startsWith(`..${sep}`) || relative === "") {
    throw new InvalidArchiveError(
      `refusing archive member '${name}': it would land outside the model directory`,
    );
  }
  return join(root, relative);
}

/** tar-stream's errors (matched on its messages), said as what is wrong with the archive. */
const TAR_STREAM_ERRORS = new Map([
  ["Unexpected end of data", "the archive ends in the middle of a file"],
  ["Invalid tar header: unknown format.", "not a tar archive (no ustar magic)"],
  [
    "Invalid tar header. Maybe the tar is corrupted or it needs to be gunzipped?",
    "not a tar archive (a header checksum does not match)",
  ],
  ["Invalid header", "a tar header has no valid size"],
  ["Header exceeds max size", "a pax or long-name header is over 4 MiB"],
  ["Invalid tar header: pax path contains a null byte.", "a pax path holds a NUL byte"],
]);

function asArchiveError(error: unknown): unknown {
  if (!(error instanceof Error) || error instanceof InvalidArchiveError) return error;
  const message = TAR_STREAM_ERRORS.get(error.message);
  if (message !== undefined) return new InvalidArchiveError(message);
  if ("code" in error && typeof error.code === "string" && error.code.startsWith("Z_")) {
    return new InvalidArchiveError(`not a gzip stream (${error.message})`);
  }
  return error;
}

/**
 * Extracts a `.tar.gz` into `destination`, as SageMaker does with model data: regular files and
 * directories only (links and devices are refused), each file named once, pax and GNU long names
 * understood. Returns the files written.
 */
export async function extractModelArchive(source: Readable, destination: string): Promise<string[]> {
  await mkdir(destination, { recursive: true });
  const members = extract();
  // Errors surface through the iteration below; leaving it early destroys the whole chain.
  pipeline(source, createGunzip(), members, () => {});
  const written: string[] = [];
  try {
    for await (const member of members) {
      const { name, type } = member.header;
      if (type === "directory") {
        await mkdir(safeJoin(destination, name, true), { recursive: true });
        continue;
      }
      if (type !== "file") {
        throw new InvalidArchiveError(
          `refusing archive member '${name}': links and special files are not model data`,
        );
      }
      const path = safeJoin(destination, name);
      if (written.includes(path)) {
        throw new InvalidArchiveError(`refusing archive member '${name}': the archive holds it twice`);
      }
      // Listened to from here on, so an error that ends the archive while the directory is made is not lost.
      const bytes = Readable.from(member);
      await mkdir(dirname(path), { recursive: true });
      await pipelineAsync(bytes, createWriteStream(path));
      written.push(path);
    }
  } catch (error) {
    throw asArchiveError(error);
  }
  return written;
}
