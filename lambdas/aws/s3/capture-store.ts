import type { AwsHttpClient } from "#aws/http/aws-http.ts";
import type { CaptureStore } from "#core/capture/payload-capture.ts";
import { s3ObjectUrl } from "./http-source.ts";

/**
 * Capture objects written with the inference function's signed S3 client (PutObject): the bucket's
 * default encryption (SSE-S3) encrypts them at rest, its lifecycle rule on `capture/` expires them.
 */
export class S3CaptureStore implements CaptureStore {
  readonly #s3: AwsHttpClient;
  readonly #bucket: string;

  constructor(s3: AwsHttpClient, bucket: string) {
    this.#s3 = s3;
    this.#bucket = bucket;
  }

  async put(key: string, body: string): Promise<void> {
    const url = s3ObjectUrl(this.#s3, this.#bucket, key);
    const { body: answer } = await this.#s3.stream({
      operation: "PutObject",
      method: "PUT",
      url,
      headers: { "content-type": "application/jsonl" },
      body,
    });
    answer.resume();
  }
}
