import { Readable } from "node:stream";
import { GetObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import type { ArtifactRef } from "#core/model.ts";
import type { ArtifactSource } from "./artifact-cache.ts";

/** Streams artifacts from S3 (or the local emulator, through the same client). */
export class S3ArtifactSource implements ArtifactSource {
  readonly #s3: S3Client;

  constructor(s3: S3Client) {
    this.#s3 = s3;
  }

  async open(ref: ArtifactRef): Promise<Readable> {
    const { Body } = await this.#s3.send(new GetObjectCommand({ Bucket: ref.bucket, Key: ref.key }));
    if (!(Body instanceof Readable))
      throw new Error(`S3 returned no readable body for ${ref.bucket}/${ref.key}`);
    return Body;
  }
}
