import { createHash } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { GetObjectCommand, HeadObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { S3ArtifactWriter } from "#aws/s3/artifact-writer.ts";
import { artifactKey } from "#core/registry/manifest.ts";
import { type Emulators, startEmulators } from "../../local/emulators.ts";

const BUCKET = "maas-models";
let dataDir: string;
let emulators: Emulators;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "maas-artifact-writer-"));
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

async function modelFile(name: string, text: string) {
  const bytes = new TextEncoder().encode(text);
  const path = join(dataDir, name);
  await writeFile(path, bytes);
  return { path, sha256: createHash("sha256").update(bytes).digest("hex"), bytes: bytes.length };
}

describe("S3ArtifactWriter", () => {
  it("puts a rewritten model at its content-addressed key", async () => {
    const file = await modelFile("served.onnx", "rewritten model bytes");
    const key = artifactKey(file.sha256);

    await new S3ArtifactWriter(emulators.s3Client()).writeArtifact(BUCKET, key, file);

    const object = await emulators.s3Client().send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
    expect(await object.Body?.transformToString()).toBe("rewritten model bytes");
  });

  it("leaves an artifact that is already there untouched (content-addressed, idempotent)", async () => {
    const file = await modelFile("again.onnx", "first bytes");
    const key = artifactKey(file.sha256);
    const writer = new S3ArtifactWriter(emulators.s3Client());
    await writer.writeArtifact(BUCKET, key, file);
    const before = await emulators.s3Client().send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));

    await writeFile(file.path, "other bytes");
    await writer.writeArtifact(BUCKET, key, file);

    const after = await emulators.s3Client().send(new HeadObjectCommand({ Bucket: BUCKET, Key: key }));
    expect(after.ETag).toBe(before.ETag);
  });
});
