import { createHash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

/**
 * Streams `source` into an open file while hashing it, in one pass. `onChunk` sees the running byte
 * count and may throw to stop early (a size cap). The caller owns opening, closing and removing.
 */
export async function writeHashed(
  source: Readable,
  file: FileHandle,
  onChunk?: (received: number) => void,
): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash("sha256");
  let bytes = 0;
  await pipeline(
    source,
    async function* (chunks: AsyncIterable<Buffer>) {
      for await (const chunk of chunks) {
        bytes += chunk.length;
        onChunk?.(bytes);
        hash.update(chunk);
        yield chunk;
      }
    },
    file.createWriteStream(),
  );
  return { sha256: hash.digest("hex"), bytes };
}
