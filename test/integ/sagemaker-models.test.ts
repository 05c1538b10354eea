import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { GetObjectCommand, HeadObjectCommand } from "@aws-sdk/client-s3";
import { describe, expect, it } from "vitest";
import { S3EndpointModelStore } from "#aws/sagemaker/endpoint-models.ts";
import { extractModelArchive } from "#aws/sagemaker/model-archive.ts";
import { MODEL_BUCKET, useBucketEmulators } from "../support/bucket-emulators.ts";

const BUCKET = MODEL_BUCKET;
const local = useBucketEmulators("sagemaker-models");

describe("S3EndpointModelStore", () => {
  it("puts <prefix><sha256>.tar.gz holding model.onnx, streamed in multipart parts for a large model", async () => {
    const bytes = Buffer.alloc(20 * 1024 * 1024 + 123);
    for (let i = 0; i < bytes.length; i += 4096) bytes.writeUInt32LE(i, i);
    const path = join(local.dataDir, "upload.onnx");
    await writeFile(path, bytes);
    const store = new S3EndpointModelStore(local.emulators.s3Client(), "/sagemaker/models");

    await store.publish(BUCKET, { path, sha256: "f00d", bytes: bytes.length });

    expect(store.keyFor("f00d")).toBe("sagemaker/models/f00d.tar.gz");
    const object = await local.emulators
      .s3Client()
      .send(new GetObjectCommand({ Bucket: BUCKET, Key: store.keyFor("f00d") }));
    const [file] = await extractModelArchive(object.Body as Readable, join(local.dataDir, "extracted"));
    expect(file).toBe(join(local.dataDir, "extracted", "model.onnx"));
    expect(Buffer.compare(await readFile(file!), bytes)).toBe(0);
  });

  it("leaves an archive that is already there untouched (content-addressed, idempotent)", async () => {
    const path = join(local.dataDir, "small.onnx");
    await writeFile(path, "first bytes");
    const store = new S3EndpointModelStore(local.emulators.s3Client(), "sagemaker/models/");
    await store.publish(BUCKET, { path, sha256: "beef", bytes: 11 });
    const before = await local.emulators
      .s3Client()
      .send(new HeadObjectCommand({ Bucket: BUCKET, Key: store.keyFor("beef") }));

    await writeFile(path, "other bytes");
    await store.publish(BUCKET, { path, sha256: "beef", bytes: 11 });

    const after = await local.emulators
      .s3Client()
      .send(new HeadObjectCommand({ Bucket: BUCKET, Key: store.keyFor("beef") }));
    expect(after.ETag).toBe(before.ETag);
  });
});
