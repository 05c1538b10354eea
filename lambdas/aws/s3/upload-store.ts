import { randomUUID } from "node:crypto";
import { mkdir, open, unlink } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import {
  CopyObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  NoSuchKey,
  NotFound,
  type S3Client,
  S3ServiceException,
} from "@aws-sdk/client-s3";
import type { UploadStore } from "#core/registry/registration.ts";
import { writeHashed } from "./hashed-file.ts";

/** S3 reports ETags quoted in headers and bare in event notifications: compare them bare. */
export const bareEtag = (etag: string | undefined) => (etag ?? "").replaceAll('"', "");

export const isMissing = (error: unknown) =>
  error instanceof NoSuchKey ||
  error instanceof NotFound ||
  (error instanceof S3ServiceException && error.$metadata.httpStatusCode === 404);

/** An object's size and bare ETag, or undefined when there is no such object. */
export async function headObject(
  s3: S3Client,
  bucket: string,
  key: string,
): Promise<{ bytes: number; etag: string } | undefined> {
  try {
    const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return { bytes: head.ContentLength ?? 0, etag: bareEtag(head.ETag) };
  } catch (error) {
    if (isMissing(error)) return undefined;
    throw error;
  }
}

const isPreconditionFailed = (error: unknown) =>
  error instanceof S3ServiceException && error.$metadata.httpStatusCode === 412;

/** An object's text (a manifest), or undefined when there is no such object. */
export async function readObjectText(s3: S3Client, bucket: string, key: string): Promise<string | undefined> {
  try {
    const { Body } = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return await Body?.transformToString("utf8");
  } catch (error) {
    if (isMissing(error)) return undefined;
    throw error;
  }
}

/** The model bucket for the register function: reads uploads, writes content-addressed artifacts. */
export class S3UploadStore implements UploadStore {
  readonly #s3: S3Client;
  readonly #workDir: string;

  constructor(s3: S3Client, workDir: string) {
    this.#s3 = s3;
    this.#workDir = workDir;
  }

  head(bucket: string, key: string) {
    return headObject(this.#s3, bucket, key);
  }

  async download(bucket: string, key: string, etag: string) {
    await mkdir(this.#workDir, { recursive: true });
    const path = join(this.#workDir, `${randomUUID()}.onnx`);
    const file = await open(path, "wx");
    try {
      const { Body } = await this.#s3.send(
        new GetObjectCommand({ Bucket: bucket, Key: key, IfMatch: `"${etag}"` }),
      );
      if (!(Body instanceof Readable)) throw new Error(`S3 returned no readable body for ${bucket}/${key}`);
      const { sha256, bytes } = await writeHashed(Body, file);
      return { path, sha256, bytes };
    } catch (error) {
      await file.close().catch(() => undefined);
      await unlink(path).catch(() => undefined);
      if (isMissing(error) || isPreconditionFailed(error)) return "changed" as const;
      throw error;
    }
  }

  readText(bucket: string, key: string): Promise<string | undefined> {
    return readObjectText(this.#s3, bucket, key);
  }

  async copyToArtifact(bucket: string, sourceKey: string, etag: string, targetKey: string): Promise<void> {
    const existing = await this.head(bucket, targetKey);
    if (existing !== undefined) return; // content-addressed: same key, same bytes
    await this.#s3.send(
      new CopyObjectCommand({
        Bucket: bucket,
        Key: targetKey,
        CopySource: `${bucket}/${sourceKey.split("/").map(encodeURIComponent).join("/")}`,
        CopySourceIfMatch: `"${etag}"`,
      }),
    );
  }
}
