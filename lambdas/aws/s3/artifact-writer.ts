import { createReadStream } from "node:fs";
import type { S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import type { ArtifactWriter, ModelFile } from "#core/registry/registration.ts";
import { headObject } from "./upload-store.ts";

/**
 * Puts a local file at its content-addressed key unless the key exists (then it holds the same bytes),
 * streamed in multipart parts: the registration's rewritten models and the optimizer's variants.
 */
export async function putIfAbsent(
  s3: S3Client,
  bucket: string,
  key: string,
  path: string,
  sha256: string,
): Promise<void> {
  if ((await headObject(s3, bucket, key)) !== undefined) return;
  await new Upload({
    client: s3,
    params: { Bucket: bucket, Key: key, Body: createReadStream(path), Metadata: { sha256 } },
    partSize: 8 * 1024 * 1024,
  }).done();
}

/** Puts the models registration rewrote (ZipMap outputs replaced) at their content-addressed keys. */
export class S3ArtifactWriter implements ArtifactWriter {
  readonly #s3: S3Client;

  constructor(s3: S3Client) {
    this.#s3 = s3;
  }

  writeArtifact(bucket: string, key: string, file: ModelFile): Promise<void> {
    return putIfAbsent(this.#s3, bucket, key, file.path, file.sha256);
  }
}
