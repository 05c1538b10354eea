import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open, stat, unlink } from "node:fs/promises";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { GetObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { ArtifactIntegrityError } from "#core/errors.ts";
import type { ArtifactRef } from "#core/model.ts";
import type { VariantStore } from "#core/optimize/optimization.ts";
import { artifactKey } from "#core/registry/manifest.ts";
import { putIfAbsent } from "./artifact-writer.ts";
import { writeHashed } from "./hashed-file.ts";
import { readObjectText } from "./upload-store.ts";

/** The model bucket for the optimize function: reads originals, writes variants under content-addressed keys. */
export class S3VariantStore implements VariantStore {
  readonly #s3: S3Client;

  constructor(s3: S3Client) {
    this.#s3 = s3;
  }

  async download(ref: ArtifactRef, path: string): Promise<void> {
    const file = await open(path, "wx");
    try {
      const { Body } = await this.#s3.send(new GetObjectCommand({ Bucket: ref.bucket, Key: ref.key }));
      if (!(Body instanceof Readable))
        throw new Error(`S3 returned no readable body for ${ref.bucket}/${ref.key}`);
      const { sha256, bytes } = await writeHashed(Body, file);
      if (sha256 !== ref.sha256 || bytes !== ref.bytes) {
        throw new ArtifactIntegrityError(
          `artifact ${ref.key} does not match its registry record (got ${bytes} bytes, sha256 ${sha256})`,
        );
      }
    } catch (error) {
      await file.close().catch(() => undefined);
      await unlink(path).catch(() => undefined);
      throw error;
    }
  }

  readText(bucket: string, key: string): Promise<string | undefined> {
    return readObjectText(this.#s3, bucket, key);
  }

  async putArtifact(bucket: string, path: string): Promise<ArtifactRef> {
    const hash = createHash("sha256");
    await pipeline(createReadStream(path), hash);
    const sha256 = hash.digest("hex");
    const { size: bytes } = await stat(path);
    const key = artifactKey(sha256);
    await putIfAbsent(this.#s3, bucket, key, path, sha256);
    return { bucket, key, sha256, bytes };
  }
}
