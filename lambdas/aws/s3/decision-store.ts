import { PutObjectCommand, type S3Client, S3ServiceException } from "@aws-sdk/client-s3";
import type { DecisionStore } from "#core/optimize/decision.ts";
import { readObjectText } from "./upload-store.ts";

/** S3 answers a conditional write whose condition failed with 412: the object was there first. */
const isPreconditionFailed = (error: unknown) =>
  error instanceof S3ServiceException && error.$metadata.httpStatusCode === 412;

/**
 * The optimizer's decisions in the model bucket, written once with S3's conditional write
 * (`If-None-Match: *`): of two optimizations of the same bytes racing, the first to write decides.
 */
export class S3DecisionStore implements DecisionStore {
  readonly #s3: S3Client;

  constructor(s3: S3Client) {
    this.#s3 = s3;
  }

  read(bucket: string, key: string): Promise<string | undefined> {
    return readObjectText(this.#s3, bucket, key);
  }

  async putOnce(bucket: string, key: string, text: string): Promise<boolean> {
    try {
      await this.#s3.send(
        new PutObjectCommand({
          Bucket: bucket,
          Key: key,
          Body: text,
          ContentType: "application/json",
          IfNoneMatch: "*",
        }),
      );
      return true;
    } catch (error) {
      if (isPreconditionFailed(error)) return false;
      throw error;
    }
  }
}
