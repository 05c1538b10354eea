import { createHash } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { GetObjectCommand, HeadObjectCommand } from "@aws-sdk/client-s3";
import { describe, expect, it } from "vitest";
import { S3ArtifactWriter } from "#aws/s3/artifact-writer.ts";
import { artifactKey } from "#core/registry/manifest.ts";
import { MODEL_BUCKET, useBucketEmulators } from "../support/bucket-emulators.ts";

const BUCKET = MODEL_BUCKET;
const local = useBucketEmulators("artifact-writer");

async function modelFile(name: string, text: string) {
  const bytes = new TextEncoder().encode(text);
  const path = join(local.dataDir, name);
  await writeFile(path, bytes);
  return { path, sha256: createHash("sha256").update(bytes).digest("hex"), bytes: bytes.length };
}

describe("S3ArtifactWriter", () => {
  it("puts a rewritten model at its content-addressed key", async () => {
    const file = await modelFile("served.onnx", "rewritten model bytes");
    const key = artifactKey(file.sha256);

    await new S3ArtifactWriter(local.emulators.s3Client()).writeArtifact(BUCKET, key, file);

    const object = await local.emulators.s3Client().send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
    expect(await object.Body?.transformToString()).toBe("rewritten model bytes");
  });

  it("leaves an artifact that is already there untouched (content-addressed, idempotent)", async () => {
    const file = await modelFile("again.onnx", "first bytes");
    const key = artifactKey(file.sha256);
    const writer = new S3ArtifactWriter(local.emulators.s3Client());
    await writer.writeArtifact(BUCKET, key, file);
    const before = await local.emulators.s3Client().send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));

    await writeFile(file.path, "other bytes");
    await writer.writeArtifact(BUCKET, key, file);

    const after = await local.emulators.s3Client().send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
    expect(after.ETag).toBe(before.ETag);
  });
});
