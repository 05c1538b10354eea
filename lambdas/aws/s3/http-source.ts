import type { Readable } from "node:stream";
import type { AwsHttpClient } from "#aws/http/aws-http.ts";
import type { ArtifactSource } from "#aws/onnx/artifact-cache.ts";
import type { ArtifactRef } from "#core/model.ts";

/**
 * encodeURIComponent leaves `!'()*` as they are; S3 wants everything but A-Z a-z 0-9 - . _ ~ encoded.
 * The SDK's escapeUri does the same, but lives in @smithy/core, which is no dependency of ours.
 */
export function encodeRfc3986(text: string): string {
  return encodeURIComponent(text).replace(
    /[!'()*]/g,
    (char) => `%${char.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/** A key as a URL path (and CopyObject's source) carries it: each segment encoded once, exactly as it is signed. */
export function encodeKey(key: string): string {
  const segments = key.split("/");
  // URL parsing would resolve them, fetching another object than the one named.
  if (segments.some((segment) => segment === "." || segment === "..")) {
    throw new Error(`S3 key '${key}' has '.' or '..' segments, which a URL cannot carry`);
  }
  return segments.map(encodeRfc3986).join("/");
}

/** Names that work as a DNS label under TLS; dotted names would break the wildcard certificate. */
const VIRTUAL_HOST_BUCKET = /^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/;

/**
 * The object's URL: `<bucket>.s3.<region>.amazonaws.com/<key>` on AWS, path style (`/<bucket>/<key>`)
 * on a configured endpoint or for bucket names that cannot be a host name.
 */
export function s3ObjectUrl(s3: AwsHttpClient, bucket: string, key: string): URL {
  const path = encodeKey(key);
  const { endpoint } = s3;
  if (!s3.customEndpoint && VIRTUAL_HOST_BUCKET.test(bucket)) {
    return new URL(`${endpoint.protocol}//${bucket}.${endpoint.host}/${path}`);
  }
  const base = endpoint.pathname.replace(/\/+$/, "");
  return new URL(`${endpoint.origin}${base}/${encodeRfc3986(bucket)}/${path}`);
}

/**
 * Streams artifacts with a signed GET, without the S3 client. A missing object rejects with an
 * AwsHttpError (status 404, code `NoSuchKey`): like the SDK's NoSuchKey before it, an unexpected
 * error that the inference function answers with a 500.
 */
export class S3HttpArtifactSource implements ArtifactSource {
  readonly #s3: AwsHttpClient;

  constructor(s3: AwsHttpClient) {
    if (s3.service !== "s3") throw new Error(`S3HttpArtifactSource needs an s3 client, not ${s3.service}`);
    this.#s3 = s3;
  }

  async open(ref: ArtifactRef, onSent?: () => void): Promise<Readable> {
    const url = s3ObjectUrl(this.#s3, ref.bucket, ref.key);
    const { body } = await this.#s3.stream({ operation: "GetObject", method: "GET", url, onSent });
    return body;
  }
}
