import { readFile } from "node:fs/promises";
import { PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import type { ArtifactWriter, ModelFile } from "#core/registry/registration.ts";
import { headObject } from "./upload-store.ts";

/** Puts the models registration rewrote (ZipMap outputs replaced) at their content-addressed keys. */
export class S3ArtifactWriter implements ArtifactWriter {
  readonly #s3: S3Client;

  constructor(s3: S3Client) {
    this.#s3 = s3;
  }

  async writeArtifact(bucket: string, key: string, file: ModelFile): Promise<void> {
    // Content-addressed: already there means already right.
    if ((await headObject(this.#s3, bucket, key)) !== undefined) return;
    await this.#s3.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: key,
        // Rewritten models were whole in memory to be inspected already; S3 checks the bytes against the digest.
        Body: await readFile(file.path),
        ChecksumSHA256: Buffer.from(file.sha256, "hex").toString("base64"),
        ContentType: "application/octet-stream",
      }),
    );
  }
}
