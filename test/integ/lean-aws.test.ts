import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { buffer } from "node:stream/consumers";
import { Logger } from "@aws-lambda-powertools/logger";
import { GetObjectCommand, PutObjectCommand } from "@aws-sdk/client-s3";
import { DynamoDBDocumentClient } from "@aws-sdk/lib-dynamodb";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AwsHttpClient, AwsHttpError } from "#aws/http/aws-http.ts";
import { DynamoHttpTable } from "#aws/registry/dynamo-http-table.ts";
import { DocumentClientTable, DynamoModelRegistry } from "#aws/registry/dynamo-registry.ts";
import { RegistryReader } from "#aws/registry/reader.ts";
import { S3HttpArtifactSource } from "#aws/s3/http-source.ts";
import type { ArtifactRef, ModelVersion } from "#core/model.ts";
import { loadInferenceConfig } from "#lambdas/inference/config.ts";
import { createInferenceHandler } from "#lambdas/inference/handler.ts";
import { createInferenceParts, defaultClients } from "#lambdas/inference/service.ts";
import { type Emulators, startEmulators } from "../../local/emulators.ts";
import { lambdaContext } from "../../local/gateway.ts";
import { proxyEvent } from "../infra/events.ts";
import { rejectionOf } from "../support/rejection.ts";

/**
 * The inference function's signed-HTTP clients against the emulators the local stack runs on,
 * with the SDK as the reference: same bytes from S3, same records from the registry.
 */
const BUCKET = "maas-models";
const TABLE = "maas-registry";
const SHA = "5e".repeat(32);

let dataDir: string;
let emulators: Emulators;
let lean: { s3: AwsHttpClient; dynamo: AwsHttpClient };
let registry: DynamoModelRegistry;

function record(name: string, version: number, overrides: Partial<ModelVersion> = {}): ModelVersion {
  return {
    name,
    version,
    status: "ready",
    target: "lambda",
    artifact: { bucket: BUCKET, key: `artifacts/sha256/${SHA}.onnx`, sha256: SHA, bytes: 1234 },
    signature: {
      inputs: [{ name: "input", datatype: "FP32", shape: ["batch", 4] }],
      outputs: [{ name: "label", datatype: "BYTES", shape: [-1] }],
    },
    variants: [],
    createdAt: "2026-01-01T00:00:00.000Z",
    updatedAt: "2026-01-02T00:00:00.000Z",
    ...overrides,
  };
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "maas-lean-aws-"));
  emulators = await startEmulators({ dataDir, s3Port: 0, bucket: BUCKET, table: TABLE });
  const { region, credentials } = emulators;
  lean = {
    s3: new AwsHttpClient("s3", { region, credentials, endpoint: emulators.s3Endpoint }),
    dynamo: new AwsHttpClient("dynamodb", { region, credentials, endpoint: emulators.dynamoEndpoint }),
  };
  registry = new DynamoModelRegistry(emulators.dynamoClient(), TABLE);

  await registry.createVersion(
    record("mlp", 1, {
      labels: ["setosa", "versicolor", "virginica"],
      description: "an MLP with ünïcödé",
      tags: { team: "vision", "cost-center": "42" },
      source: { key: "models/mlp/1/model.onnx", etag: "e".repeat(32) },
      variants: [
        { kind: "original", bytes: 1234, selected: false, p50Ms: 0.125, benchmarkRuns: 200, loadMs: 3.5 },
        {
          kind: "int8-dynamic",
          bytes: 400,
          selected: true,
          artifact: {
            bucket: BUCKET,
            key: `artifacts/sha256/${"ab".repeat(32)}.onnx`,
            sha256: "ab".repeat(32),
            bytes: 400,
          },
          detail: "per-channel",
          p50Ms: 0.0625,
          benchmarkRuns: 200,
          winRate: 0.97,
          parity: {
            passed: true,
            maxAbsDiff: 1e-7,
            maxRelativeDiff: 0.000123,
            cosine: 0.9999987654321,
            top1Agreement: 1,
            top1Rows: 64,
            inputs: "generated",
          },
        },
        { kind: "fp16", bytes: 0, selected: false, error: "no fp16 kernel" },
      ],
      optimizedAt: "2026-01-03T00:00:00.000Z",
    }),
  );
  await registry.createVersion(record("mlp", 2, { status: "failed", reason: "cannot load" }));
  await registry.createVersion(record("mlp", 3, { status: "registering" }));
  await registry.createVersion(record("mlp", 4));
  await registry.deleteVersion("mlp", 4);
  // Enough aliases for several pages at a page size of 2; "default" moved twice keeps a rollback target.
  for (let index = 0; index < 7; index++) await registry.setAlias("mlp", `alias-${index}`, 1 + (index % 3));
  await registry.setAlias("mlp", "default", 2, "2026-02-01T00:00:00.000Z");
  await registry.setAlias("mlp", "default", 1, "2026-02-02T00:00:00.000Z");
  for (let index = 0; index < 5; index++) await registry.createVersion(record(`model-${index}`, 1));
  await registry.createVersion(record("gone", 1));
  await registry.deleteVersion("gone", 1);
}, 60_000);

afterAll(async () => {
  await emulators?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe("the signed-HTTP S3 source against the S3 emulator", () => {
  it("returns the exact bytes of an object whose key needs encoding", async () => {
    const key = "artifacts/x y+z=(1)~/ünï/model.onnx";
    const bytes = randomBytes(3 * 1024 * 1024 + 17);
    await emulators.s3Client().send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: bytes }));

    const body = await new S3HttpArtifactSource(lean.s3).open({
      bucket: BUCKET,
      key,
      sha256: SHA,
      bytes: bytes.length,
    });

    expect(body).toBeInstanceOf(Readable);
    expect((await buffer(body)).equals(bytes)).toBe(true);
  });

  it("fails a missing key with the status and code the SDK reports for it", async () => {
    const key = "artifacts/sha256/missing.onnx";
    const sdkError = await emulators
      .s3Client()
      .send(new GetObjectCommand({ Bucket: BUCKET, Key: key }))
      .then(
        () => undefined,
        (error: { name: string; $metadata: { httpStatusCode?: number } }) => error,
      );

    const error = await rejectionOf(
      new S3HttpArtifactSource(lean.s3).open({ bucket: BUCKET, key, sha256: SHA, bytes: 1 }),
      AwsHttpError,
    );

    expect(error).toMatchObject({ status: 404, code: "NoSuchKey", retryable: false });
    expect(sdkError).toMatchObject({ name: "NoSuchKey", $metadata: { httpStatusCode: 404 } });
  });

  it("answers an infer request whose artifact is missing, with no upload recorded to rebuild it from, 503 with the reason", async () => {
    const { region, credentials } = emulators;
    const parts = createInferenceParts(
      loadInferenceConfig({ MAAS_REGISTRY_TABLE: TABLE, MAAS_ARTIFACT_DIR: join(dataDir, "artifacts") }),
      defaultClients(
        {
          s3: { region, credentials, endpoint: emulators.s3Endpoint },
          dynamo: { region, credentials, endpoint: emulators.dynamoEndpoint },
        },
        {},
      ),
    );
    const handler = createInferenceHandler(parts.service, new Logger({ logLevel: "SILENT" }));

    const result = await handler(
      proxyEvent({
        method: "POST",
        path: "/v2/models/model-0/infer",
        resource: "/v2/{proxy+}",
        body: JSON.stringify({
          inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data: [1, 2, 3, 4] }],
        }),
      }),
      lambdaContext("missing-artifact", Date.now()),
    );
    const download = parts.artifacts.path(record("model-0", 1).artifact as ArtifactRef);
    await parts.sessions.close();

    expect(result.statusCode).toBe(503);
    expect(JSON.parse(result.body)).toEqual({
      error: `model 'model-0' version 1 cannot be served: its artifact (sha256 ${SHA}) is missing or corrupt and the version records no upload to rebuild it from; publish it again`,
    });
    await expect(download).rejects.toMatchObject({ status: 404, code: "NoSuchKey" });
  });
});

describe("the registry reader over signed HTTP against the DynamoDB emulator", () => {
  /** The SDK-backed registry first: every other reader must answer exactly as it does. */
  const readers = () => [
    registry,
    new RegistryReader(new DynamoHttpTable(lean.dynamo, TABLE)),
    new RegistryReader(new DynamoHttpTable(lean.dynamo, TABLE), { pageSize: 2 }),
    new RegistryReader(
      new DocumentClientTable(DynamoDBDocumentClient.from(emulators.dynamoClient()), TABLE),
      { pageSize: 2 },
    ),
  ];

  async function sameFromEvery<T>(read: (reader: RegistryReader) => Promise<T>): Promise<T> {
    const [reference, ...others] = await Promise.all(readers().map(read));
    for (const other of others) expect(other).toStrictEqual(reference);
    return reference as T;
  }

  it("reads a version with variants, labels and tags as the SDK does, eventually and strongly consistent", async () => {
    const version = await sameFromEvery((reader) => reader.getVersion("mlp", 1));
    await sameFromEvery((reader) => reader.getVersionConsistent("mlp", 1));

    expect(version).toMatchObject({ name: "mlp", version: 1, tags: { team: "vision" } });
    expect(version?.variants.map((variant) => variant.kind)).toEqual(["original", "int8-dynamic", "fp16"]);
    expect(version?.variants[1]?.parity?.cosine).toBe(0.9999987654321);
  });

  it("reads a missing version and a missing alias as undefined", async () => {
    expect(await sameFromEvery((reader) => reader.getVersion("mlp", 4))).toBeUndefined();
    expect(await sameFromEvery((reader) => reader.getAlias("mlp", "nope"))).toBeUndefined();
  });

  it("reads an alias and its rollback target", async () => {
    expect(await sameFromEvery((reader) => reader.getAlias("mlp", "default"))).toBe(1);
    expect(await sameFromEvery((reader) => reader.getAliasRecord("mlp", "default"))).toEqual({
      alias: "default",
      version: 1,
      previous: 2,
      updatedAt: "2026-02-02T00:00:00.000Z",
    });
  });

  it("lists versions and aliases across pages", async () => {
    const firstPage = await new DynamoHttpTable(lean.dynamo, TABLE).query({
      keyCondition: "pk = :name AND begins_with(sk, :prefix)",
      values: { ":name": "mlp", ":prefix": "a#" },
      limit: 2,
    });
    const versions = await sameFromEvery((reader) => reader.listVersions("mlp"));
    const aliases = await sameFromEvery((reader) => reader.listAliases("mlp"));

    expect(versions.map((version) => [version.version, version.status])).toEqual([
      [1, "ready"],
      [2, "failed"],
      [3, "registering"],
    ]);
    expect(firstPage.items).toHaveLength(2);
    expect(firstPage.next).toBeDefined();
    expect(aliases.map((alias) => alias.alias)).toEqual([
      ...Array.from({ length: 7 }, (_, index) => `alias-${index}`),
      "default",
    ]);
  });

  it("reads a model's versions and aliases in one query across pages, leaving out its head item", async () => {
    const model = await sameFromEvery((reader) => reader.getModel("mlp"));
    const listed = await sameFromEvery((reader) => reader.listVersions("mlp"));

    expect(model.versions).toStrictEqual(listed);
    expect([...model.aliases]).toEqual([
      ...Array.from({ length: 7 }, (_, index) => [`alias-${index}`, expect.any(Number)]),
      ["default", 1],
    ]);
    expect((await sameFromEvery((reader) => reader.getModel("no-such-model"))).versions).toEqual([]);
  });

  it("lists models from the index across pages, leaving out a model whose versions are all deleted", async () => {
    const models = await sameFromEvery((reader) => reader.listModels());

    expect(models).toEqual([
      { name: "mlp", versions: [1, 2, 3] },
      ...Array.from({ length: 5 }, (_, index) => ({ name: `model-${index}`, versions: [1] })),
    ]);
  });

  it("returns the raw head item, version set included, exactly as the DocumentClient does", async () => {
    const key = { pk: "mlp", sk: "m" };

    const ours = await new DynamoHttpTable(lean.dynamo, TABLE).get(key, true);
    const theirs = await new DocumentClientTable(
      DynamoDBDocumentClient.from(emulators.dynamoClient()),
      TABLE,
    ).get(key, true);

    expect(ours).toStrictEqual(theirs);
    expect(ours?.versions).toEqual(new Set([1, 2, 3]));
  });
});
