import type { S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { headObject } from "#aws/s3/upload-store.ts";
import type { EndpointModelStore } from "#core/registry/registration.ts";
import { normalizePrefix, targetModelFor } from "./layout.ts";
import { createModelArchive } from "./model-archive.ts";

/** Publishes model archives under the endpoint's model prefix in S3. */
export class S3EndpointModelStore implements EndpointModelStore {
  readonly #s3: S3Client;
  readonly #prefix: string;

  constructor(s3: S3Client, prefix: string) {
    this.#s3 = s3;
    this.#prefix = normalizePrefix(prefix);
  }

  keyFor(sha256: string): string {
    return `${this.#prefix}${targetModelFor(sha256)}`;
  }

  async publish(bucket: string, file: { path: string; sha256: string; bytes: number }): Promise<void> {
    const key = this.keyFor(file.sha256);
    // Content-addressed: already there means already right.
    if ((await headObject(this.#s3, bucket, key)) !== undefined) return;
    // Streamed: the archive is never whole in memory or on disk, whatever the model's size.
    await new Upload({
      client: this.#s3,
      params: {
        Bucket: bucket,
        Key: key,
        Body: createModelArchive(file.path, file.bytes),
        ContentType: "application/gzip",
        Metadata: { sha256: file.sha256 },
      },
      // 8 MiB parts (S3's minimum is 5): 10,000 parts hold 80 GB, and the local emulator takes them.
      partSize: 8 * 1024 * 1024,
      queueSize: 4,
    }).done();
  }
}
