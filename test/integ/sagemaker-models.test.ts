import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { GetObjectCommand, HeadObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { S3EndpointModelStore } from "#aws/sagemaker/endpoint-models.ts";
import { extractModelArchive } from "#aws/sagemaker/model-archive.ts";
import { type Emulators, startEmulators } from "../../local/emulators.ts";

const BUCKET = "maas-models";
let dataDir: string;
let emulators: Emulators;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "maas-sagemaker-models-"));
  emulators = await startEmulators({
    dataDir,
    s3Port: 0,
    bucket: BUCKET,
    table: "maas-registry",
    queues: [],
  });
});

afterAll(async () => {
  await emulators?.stop();
  await rm(dataDir, { recursive: true, force: true });
});

describe("S3EndpointModelStore", () => {
  it("puts <prefix><sha256>.tar.gz holding model.onnx, streamed in multipart parts for a large model", async () => {
    const bytes = Buffer.alloc(20 * 1024 * 1024 + 123);
    for (let i = 0; i < bytes.length; i += 4096) bytes.writeUInt32LE(i, i);
    const path = join(dataDir, "upload.onnx");
    await writeFile(path, bytes);
    const store = new S3EndpointModelStore(emulators.s3Client(), "/sagemaker/models");

    await store.publish(BUCKET, { path, sha256: "f00d", bytes: bytes.length });

    expect(store.keyFor("f00d")).toBe("sagemaker/models/f00d.tar.gz");
    const object = await emulators
      .s3Client()
      .send(new GetObjectCommand({ Bucket: BUCKET, Key: store.keyFor("f00d") }));
    const [file] = await extractModelArchive(object.Body as Readable, join(dataDir, "extracted"));
    expect(file).toBe(join(dataDir, "extracted", "model.onnx"));
    expect(Buffer.compare(await readFile(file!), bytes)).toBe(0);
  });

  it("leaves an archive that is already there untouched (content-addressed, idempotent)", async () => {
    const path = join(dataDir, "small.onnx");
    await writeFile(path, "first bytes");
    const store = new S3EndpointModelStore(emulators.s3Client(), "sagemaker/models/");
    await store.publish(BUCKET, { path, sha256: "beef", bytes: 11 });
    const before = await emulators
      .s3Client()
      .send(new HeadObjectCommand({ Bucket: BUCKET, Key: store.keyFor("beef") }));

    await writeFile(path, "other bytes");
    await store.publish(BUCKET, { path, sha256: "beef", bytes: 11 });

    const after = await emulators
      .s3Client()
      .send(new HeadObjectCommand({ Bucket: BUCKET, Key: store.keyFor("beef") }));
    expect(after.ETag).toBe(before.ETag);
  });
});
