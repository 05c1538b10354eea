/**
 * `<data dir>/stack.json`: where `npm start` (local/start.ts) leaves the running stack's addresses and
 * keys, and where `maas` (bin/maas.ts) finds them without flags.
 */
import { readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import * as z from "zod";

/** The data directory when MAAS_DATA_DIR is unset. */
export const DEFAULT_DATA_DIR = ".maas";

const stackFileSchema = z.object({
  url: z.string(),
  s3Endpoint: z.string(),
  bucket: z.string(),
  apiKey: z.string(),
  adminKey: z.string(),
  /** What the S3 endpoint takes signatures from (this data directory's own). */
  s3Credentials: z.object({ accessKeyId: z.string(), secretAccessKey: z.string() }),
});
export type LocalStackInfo = z.infer<typeof stackFileSchema>;

function stackFilePath(dataDir: string): string {
  return join(resolve(dataDir), "stack.json");
}

/** Writes the stack file, readable by its owner only (it holds the keys). */
export async function writeStackFile(dataDir: string, info: LocalStackInfo): Promise<void> {
  // The schema keeps only its own keys, in its order.
  await writeFile(stackFilePath(dataDir), `${JSON.stringify(stackFileSchema.parse(info), null, 2)}\n`, {
    mode: 0o600,
  });
}

/** The stack file's contents, or undefined when there is none; a malformed file throws. */
export async function readStackFile(dataDir: string): Promise<LocalStackInfo | undefined> {
  const text = await readFile(stackFilePath(dataDir), "utf8").catch(() => undefined);
  return text === undefined ? undefined : stackFileSchema.parse(JSON.parse(text));
}
