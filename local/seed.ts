import { createHash } from "node:crypto";
import { HeadObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import type { DynamoModelRegistry } from "../lambdas/aws/dynamo-registry.ts";
import type { ServableVersion } from "../lambdas/core/model.ts";
import { inspectModel } from "../lambdas/core/onnx-inspect.ts";
import { isServable } from "../lambdas/core/registry.ts";

export interface SeedOptions {
  readonly s3: S3Client;
  readonly registry: DynamoModelRegistry;
  readonly bucket: string;
  readonly name: string;
  readonly version: number;
  readonly bytes: Uint8Array;
}

export function modelKey(name: string, version: number): string {
  return `models/${name}/${version}/model.onnx`;
}

/**
 * Uploads a model and writes its ready version record directly, skipping the register queue.
 * Used for the demo model at start-up and by tests; idempotent, so a restart finds it in place.
 */
export async function seedModel(options: SeedOptions): Promise<ServableVersion> {
  const { s3, registry, bucket, name, version, bytes } = options;
  const existing = await registry.getVersion(name, version);
  if (existing !== undefined) {
    if (!isServable(existing)) throw new Error(`${name} version ${version} exists but is ${existing.status}`);
    return existing;
  }

  const key = modelKey(name, version);
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  const present = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })).then(
    () => true,
    () => false,
  );
  // Multipart above 8 MiB, as S3 clients do; the emulator also refuses single PUTs over 11 MiB.
  if (!present) {
    await new Upload({
      client: s3,
      params: { Bucket: bucket, Key: key, Body: bytes },
      partSize: 8 * 1024 * 1024,
    }).done();
  }

  const inspection = inspectModel(bytes);
  const now = new Date().toISOString();
  const record: ServableVersion = {
    name,
    version,
    status: "ready",
    target: "lambda",
    artifact: { bucket, key, sha256, bytes: bytes.byteLength },
    signature: inspection.signature,
    variants: [],
    ...(inspection.labels ? { labels: inspection.labels } : {}),
    ...(inspection.description ? { description: inspection.description } : {}),
    createdAt: now,
    updatedAt: now,
  };
  await registry.createVersion(record);
  return record;
}
