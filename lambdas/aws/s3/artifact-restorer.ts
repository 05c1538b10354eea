import type { AwsHttpClient } from "#aws/http/aws-http.ts";
import type { ArtifactRestorer } from "#aws/onnx/serving-artifacts.ts";
import type { ArtifactRef } from "#core/model.ts";
import { encodeKey, encodeRfc3986, s3ObjectUrl } from "./http-source.ts";

const MAX_COPY_ANSWER = 64 * 1024;

/**
 * Restores a content-addressed artifact by a server-side copy (CopyObject) of the upload it was made
 * from, no bytes through the function. Only once the upload was read and verified against the
 * artifact's sha256; `x-amz-copy-source-if-match` keeps the copy to the upload registration recorded.
 */
export class S3CopyRestorer implements ArtifactRestorer {
  readonly #s3: AwsHttpClient;

  constructor(s3: AwsHttpClient) {
    this.#s3 = s3;
  }

  async restore(
    upload: { readonly bucket: string; readonly key: string; readonly etag: string },
    to: ArtifactRef,
  ): Promise<void> {
    const source = `/${encodeRfc3986(upload.bucket)}/${encodeKey(upload.key)}`;
    const { body } = await this.#s3.stream({
      operation: "CopyObject",
      method: "PUT",
      url: s3ObjectUrl(this.#s3, to.bucket, to.key),
      headers: { "x-amz-copy-source": source, "x-amz-copy-source-if-match": quoted(upload.etag) },
    });
    // A copy that fails once under way still answers 200, with the error in its body.
    let answer = "";
    for await (const chunk of body as AsyncIterable<Buffer>) {
      if (answer.length < MAX_COPY_ANSWER) answer += chunk.toString("utf8");
    }
    if (answer.includes("<Error>")) {
      const code = /<Code>([^<]*)<\/Code>/.exec(answer)?.[1] ?? "unknown";
      throw new Error(`CopyObject to ${to.key} failed under way: ${code}`);
    }
  }
}

/** An entity tag as If-Match wants it: S3 events carry it bare, HEAD and GET quoted. */
function quoted(etag: string): string {
  return etag.startsWith('"') ? etag : `"${etag}"`;
}
