/**
 * What was published keeps serving when its objects go: the content-addressed artifact deleted or
 * corrupted in the bucket (and no local copy), a selected variant deleted, and, when nothing
 * verifiable is left, a 503 that says why, from infer and from the version's ready route.
 */
import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ArtifactRef, ModelVersion } from "#core/model.ts";
import type { LocalStack } from "../../local/stack.ts";
import { buildMlpModel } from "../../models/mlp.ts";
import { startTestStack, stopTestStack, TEST_ADMIN_KEY, TEST_API_KEY } from "../support/local-stack.ts";

const WIDTH = 128;
/** Over the quantizer's 16 384 weights in its first layer, so the optimizer builds int8-dynamic. */
const model = (seed: number) => buildMlpModel({ layers: [WIDTH, 256, 8], seed });
const REQUEST = JSON.stringify({
  inputs: [
    {
      name: "input",
      shape: [1, WIDTH],
      datatype: "FP32",
      data: Array.from({ length: WIDTH }, (_, i) => Math.sin(i)),
    },
  ],
});

let stack: LocalStack;
let dataDir: string;
let s3: S3Client;

async function infer(name: string) {
  const response = await fetch(`${stack.url}/v2/models/${name}/versions/1/infer`, {
    method: "POST",
    headers: { "x-api-key": TEST_API_KEY, "content-type": "application/json" },
    body: REQUEST,
  });
  return {
    status: response.status,
    variant: response.headers.get("x-maas-variant"),
    body: await response.text(),
  };
}

async function ready(name: string) {
  const response = await fetch(`${stack.url}/v2/models/${name}/versions/1/ready`, {
    headers: { "x-api-key": TEST_API_KEY },
  });
  return { status: response.status, body: await response.text() };
}

async function objectBytes(key: string): Promise<Uint8Array | undefined> {
  try {
    const { Body } = await s3.send(new GetObjectCommand({ Bucket: stack.bucket, Key: key }));
    return await Body?.transformToByteArray();
  } catch {
    return undefined;
  }
}

/** Loses what this environment holds of a version: its sessions and its local copies, as a cold start has none. */
async function forgetLocally(): Promise<void> {
  await stack.inference.sessions.close();
  const cacheDir = join(dataDir, "artifact-cache");
  for (const name of await readdir(cacheDir)) await rm(join(cacheDir, name), { force: true });
}

/**
 * Published and through the optimizer. Pinned to its original unless `pinOriginal` is false: timing picks
 * between lossless variants, and a variant chosen under load would serve in place of the lost original.
 */
async function publishSettled(name: string, seed: number, pinOriginal = true): Promise<ModelVersion> {
  await stack.publish(name, 1, model(seed), pinOriginal ? { manifest: { pinOriginal: true } } : {});
  for (const deadline = Date.now() + 120_000; Date.now() < deadline; ) {
    const record = await stack.registry.getVersionConsistent(name, 1);
    if (record?.optimizedAt !== undefined || record?.status === "failed") return record;
    await new Promise((wake) => setTimeout(wake, 200));
  }
  throw new Error(`${name} did not settle`);
}

beforeAll(async () => {
  ({ stack, dataDir } = await startTestStack("recovery", {
    demo: false,
    // Cache misses reach the registry at once: what is measured is the artifacts, not a TTL.
    env: { ...process.env, MAAS_REGISTRY_TTL_MS: "1", MAAS_REGISTRY_MISS_TTL_MS: "1" },
  }));
  s3 = stack.emulators.s3Client();
}, 120_000);

afterAll(() => stopTestStack(stack, dataDir));

describe("a version whose objects are lost", () => {
  it("serves from its upload when its artifact is deleted, and puts the artifact back", async () => {
    const record = await publishSettled("deleted", 1);
    const artifact = record.artifact as ArtifactRef;
    expect((await infer("deleted")).status).toBe(200);
    await s3.send(new DeleteObjectCommand({ Bucket: stack.bucket, Key: artifact.key }));
    await forgetLocally();

    const answer = await infer("deleted");

    expect(answer.status, answer.body).toBe(200);
    expect(answer.variant).toBe("original");
    await expect
      .poll(() => objectBytes(artifact.key), { timeout: 10_000 })
      .toEqual(await objectBytes(`models/deleted/1/model.onnx`));
  });

  it("serves from its upload when its artifact's bytes no longer match their digest, and repairs them", async () => {
    const record = await publishSettled("corrupt", 2);
    const artifact = record.artifact as ArtifactRef;
    await s3.send(new PutObjectCommand({ Bucket: stack.bucket, Key: artifact.key, Body: "not the model" }));
    await forgetLocally();

    const answer = await infer("corrupt");

    expect(answer.status, answer.body).toBe(200);
    await expect
      .poll(() => objectBytes(artifact.key), { timeout: 10_000 })
      .toEqual(await objectBytes("models/corrupt/1/model.onnx"));
  });

  it("falls back to the original when its selected variant is deleted, and says so in x-maas-variant", async () => {
    const record = await publishSettled("variant", 3, false);
    const int8 = record.variants.find((variant) => variant.kind === "int8-dynamic");
    expect(int8?.artifact, JSON.stringify(record.variants)).toBeDefined();
    const chosen = await fetch(`${stack.url}/admin/models/variant/versions/1/variant`, {
      method: "PUT",
      headers: { "x-api-key": TEST_ADMIN_KEY, "content-type": "application/json" },
      body: JSON.stringify({ kind: "int8-dynamic" }),
    });
    expect(chosen.status).toBe(200);
    expect((await infer("variant")).variant).toBe("int8-dynamic");
    await s3.send(new DeleteObjectCommand({ Bucket: stack.bucket, Key: int8?.artifact?.key }));
    await forgetLocally();

    const answer = await infer("variant");

    expect(answer.status, answer.body).toBe(200);
    expect(answer.variant).toBe("original");
    expect((await ready("variant")).status).toBe(200);
  });

  it("answers 503 with the reason, on infer and on ready, once neither the artifact nor a matching upload is left", async () => {
    const record = await publishSettled("gone", 4);
    const artifact = record.artifact as ArtifactRef;
    await s3.send(new DeleteObjectCommand({ Bucket: stack.bucket, Key: artifact.key }));
    // The upload is still there, but with other bytes than the version was registered from.
    await s3.send(
      new PutObjectCommand({ Bucket: stack.bucket, Key: "models/gone/1/model.onnx", Body: model(5) }),
    );
    await forgetLocally();

    const answer = await infer("gone");
    const probe = await ready("gone");

    expect(answer.status).toBe(503);
    expect(JSON.parse(answer.body)).toEqual({
      error: expect.stringMatching(
        /^model 'gone' version 1 cannot be served: its artifact \(sha256 [0-9a-f]{64}\) is missing or corrupt and its upload models\/gone\/1\/model\.onnx is gone or no longer has the same bytes; publish it again/,
      ),
    });
    expect(probe.status).toBe(503);
    expect(await objectBytes(artifact.key)).toBeUndefined();
  });
});
