import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Logger } from "@aws-lambda-powertools/logger";
import { GetObjectCommand, PutObjectCommand, type S3Client } from "@aws-sdk/client-s3";
import type { SQSEvent } from "aws-lambda";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OrtCandidateRuntime } from "#aws/onnx/candidate-runtime.ts";
import { DynamoModelRegistry } from "#aws/registry/dynamo-registry.ts";
import { S3VariantStore } from "#aws/s3/variant-store.ts";
import { type ModelVersion, type ServableVersion, servingArtifact } from "#core/model.ts";
import { inspectModel } from "#core/onnx/inspect.ts";
import {
  DEFAULT_OPTIMIZER_SETTINGS,
  type OptimizerDeps,
  type OptimizerSettings,
  optimizeVersion,
  selectVariant,
  type VariantStore,
} from "#core/optimize/optimization.ts";
import { artifactKey, type Manifest, manifestKey } from "#core/registry/manifest.ts";
import { isServable } from "#core/registry/registry.ts";
import { createOptimizeHandler, loadOptimizeConfig, optimizerSettings } from "#lambdas/optimize/handler.ts";
import { type Emulators, startEmulators } from "../../local/emulators.ts";
import { buildCnnModel } from "../../models/cnn.ts";
import { buildTransformerMlpModel } from "../../models/transformer-mlp.ts";
import { buildDatatypeZooModel } from "../../models/zoo.ts";

const BUCKET = "models";
const TABLE = "registry";

let dataDir: string;
let emulators: Emulators;
let registry: DynamoModelRegistry;
let s3: S3Client;
let store: S3VariantStore;
const runtime = new OrtCandidateRuntime(1);
/** Two blocks of 256/1024: 4 MB, four weights worth quantizing, and fast to benchmark. */
const mlp = buildTransformerMlpModel({ blocks: 2, width: 256, hidden: 1024 });

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "maas-optimization-"));
  emulators = await startEmulators({ dataDir, s3Port: 0, bucket: BUCKET, table: TABLE });
  registry = new DynamoModelRegistry(emulators.dynamoClient(), TABLE);
  s3 = emulators.s3Client();
  store = new S3VariantStore(s3);
});

afterAll(async () => {
  await emulators?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

let counter = 0;
const uniqueName = (prefix: string) => `${prefix}-${++counter}`;
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** A version as registration leaves it: ready, its upload at its content-addressed key. */
async function seedVersion(
  name: string,
  bytes: Uint8Array,
  options: { target?: ModelVersion["target"]; manifest?: Manifest } = {},
): Promise<ServableVersion> {
  const sha = sha256(bytes);
  await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: artifactKey(sha), Body: bytes }));
  if (options.manifest) {
    await s3.send(
      new PutObjectCommand({
        Bucket: BUCKET,
        Key: manifestKey(name, 1),
        Body: JSON.stringify(options.manifest),
      }),
    );
  }
  const now = new Date().toISOString();
  const record = {
    name,
    version: 1,
    status: "ready" as const,
    target: options.target ?? "lambda",
    artifact: { bucket: BUCKET, key: artifactKey(sha), sha256: sha, bytes: bytes.byteLength },
    signature: inspectModel(bytes).signature,
    variants: [],
    optimizeState: "queued" as const,
    createdAt: now,
    updatedAt: now,
  };
  await registry.createVersion(record);
  return record;
}

function deps(
  settings: Partial<OptimizerSettings> = {},
  overrides: Partial<OptimizerDeps> = {},
): OptimizerDeps {
  return {
    registry,
    store,
    runtime,
    now: () => new Date().toISOString(),
    settings: {
      ...DEFAULT_OPTIMIZER_SETTINGS,
      workDir: join(dataDir, "work"),
      benchmarkRuns: 5,
      warmupRuns: 1,
      ...settings,
    },
    ...overrides,
  };
}

async function record(name: string): Promise<ModelVersion> {
  const found = await registry.getVersionConsistent(name, 1);
  if (found === undefined) throw new Error(`no record for ${name}`);
  return found;
}

async function objectSha256(key: string): Promise<string> {
  const { Body } = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
  return sha256(await Body!.transformToByteArray());
}

describe("selectVariant", () => {
  const original = 10;

  it("picks the fastest variant that passed the gate", () => {
    const candidates = [
      { kind: "graph-extended", passed: true, p50Ms: 9 },
      { kind: "int8-dynamic", passed: true, p50Ms: 4 },
    ];

    expect(selectVariant("lambda", candidates, original, { minSpeedup: 0.05 })).toBe("int8-dynamic");
  });

  it("never picks a variant that failed the gate, however fast", () => {
    const candidates = [
      { kind: "graph-extended", passed: true, p50Ms: 9 },
      { kind: "int8-dynamic", passed: false, p50Ms: 1 },
    ];

    expect(selectVariant("lambda", candidates, original, { minSpeedup: 0.05 })).toBe("graph-extended");
  });

  it("keeps the original when no variant beats it by the minimum speed-up", () => {
    const candidates = [
      { kind: "graph-extended", passed: true, p50Ms: 9.6 },
      { kind: "int8-dynamic", passed: true, p50Ms: 12 },
    ];

    expect(selectVariant("lambda", candidates, original, { minSpeedup: 0.05 })).toBeUndefined();
  });

  it("keeps the original when a better p50 won too few interleaved rounds to be more than noise", () => {
    const candidates = [{ kind: "graph-extended", passed: true, p50Ms: 7, winRate: 0.55 }];

    expect(
      selectVariant("lambda", candidates, original, { minSpeedup: 0.05, minWinRate: 0.75 }),
    ).toBeUndefined();
    expect(
      selectVariant("lambda", [{ ...candidates[0]!, winRate: 0.9 }], original, {
        minSpeedup: 0.05,
        minWinRate: 0.75,
      }),
    ).toBe("graph-extended");
  });

  it("keeps the original when the manifest pins it", () => {
    const candidates = [{ kind: "int8-dynamic", passed: true, p50Ms: 1 }];

    expect(
      selectVariant("lambda", candidates, original, { minSpeedup: 0.05, pinOriginal: true }),
    ).toBeUndefined();
  });

  it("selects nothing for a GPU target, whose endpoint serves the original upload", () => {
    const candidates = [
      { kind: "graph-basic", passed: true, p50Ms: 5 },
      { kind: "fp16", passed: true, p50Ms: 30 },
    ];

    expect(selectVariant("sagemaker", candidates, original, { minSpeedup: 0.05 })).toBeUndefined();
  });
});

describe("optimizeVersion", () => {
  it("records every variant with its figures, uploads it, and serves the one selected", async () => {
    const name = uniqueName("mlp");
    const seeded = await seedVersion(name, mlp);

    const result = await optimizeVersion({ name, version: 1 }, "message-1", deps());

    expect(result.outcome).toBe("optimized");
    const optimized = await record(name);
    expect(optimized).toMatchObject({ status: "ready", optimizedAt: expect.any(String) });
    expect(optimized.variants.map((variant) => variant.kind)).toEqual([
      "original",
      "graph-extended",
      "int8-dynamic",
    ]);
    for (const variant of optimized.variants) {
      expect(variant.bytes).toBeGreaterThan(0);
      expect(variant.p50Ms).toBeGreaterThan(0);
      expect(variant.benchmarkRuns).toBe(5);
      if (variant.kind !== "original") expect(variant.winRate).toBeGreaterThanOrEqual(0);
      expect(variant.artifact?.key).toBe(artifactKey(variant.artifact!.sha256));
      expect(await objectSha256(variant.artifact!.key)).toBe(variant.artifact!.sha256);
    }
    const [originalVariant, graph, int8] = optimized.variants;
    expect(originalVariant?.artifact).toEqual(seeded.artifact);
    expect(graph?.parity).toMatchObject({ passed: true, inputs: "generated" });
    expect(int8?.parity).toMatchObject({ passed: true, inputs: "generated" });
    expect(int8!.parity!.cosine).toBeGreaterThan(0.99);
    expect(int8!.bytes / mlp.byteLength).toBeLessThan(0.3);
    const selected = optimized.variants.filter((variant) => variant.selected);
    expect(selected).toHaveLength(1);
    expect(result.outcome === "optimized" && result.selected).toBe(selected[0]?.kind);
    if (!isServable(optimized)) throw new Error("not servable");
    expect(servingArtifact(optimized)).toEqual(selected[0]?.artifact);
  });

  it("records a variant that fails the gate with its figures and never selects it", async () => {
    const name = uniqueName("mlp-strict");
    await seedVersion(name, mlp);
    const strict = { ...DEFAULT_OPTIMIZER_SETTINGS.thresholds, maxAbsDiff: 1e-3 };

    await optimizeVersion({ name, version: 1 }, "message-1", deps({ thresholds: strict }));

    const int8 = (await record(name)).variants.find((variant) => variant.kind === "int8-dynamic");
    expect(int8).toMatchObject({
      selected: false,
      parity: { passed: false, reason: expect.stringMatching(/^max abs diff .* > 0.001$/) },
      artifact: expect.any(Object),
    });
    expect(int8?.p50Ms).toBeUndefined();
  });

  it("keeps the original when the manifest pins it, still recording the variants", async () => {
    const name = uniqueName("mlp-pinned");
    await seedVersion(name, mlp, { manifest: { pinOriginal: true } });

    const result = await optimizeVersion({ name, version: 1 }, "message-1", deps());

    const variants = (await record(name)).variants;
    expect(result).toMatchObject({ outcome: "optimized", selected: "original" });
    expect(variants.map((variant) => [variant.kind, variant.selected])).toEqual([
      ["original", true],
      ["graph-extended", false],
      ["int8-dynamic", false],
    ]);
    expect(variants[0]?.detail).toMatch(/pinOriginal/);
  });

  it("runs the gate on the manifest's samples when it has them", async () => {
    const name = uniqueName("mlp-samples");
    const sample = (seed: number) => ({
      inputs: [
        {
          name: "input",
          shape: [1, 256],
          datatype: "FP32",
          data: Array.from({ length: 256 }, (_, i) => Math.sin(i * seed)),
        },
      ],
    });
    await seedVersion(name, mlp, { manifest: { samples: [sample(1), sample(2)] } });

    await optimizeVersion({ name, version: 1 }, "message-1", deps());

    const int8 = (await record(name)).variants.find((variant) => variant.kind === "int8-dynamic");
    expect(int8?.parity).toMatchObject({ inputs: "samples", top1Rows: 2 });
  });

  it("does nothing for a replayed message once the version is optimized", async () => {
    const name = uniqueName("mlp-replay");
    await seedVersion(name, mlp);
    await optimizeVersion({ name, version: 1 }, "message-1", deps());
    const first = await record(name);

    const replay = await optimizeVersion({ name, version: 1 }, "message-2", deps());
    const redelivery = await optimizeVersion({ name, version: 1 }, "message-1", deps());

    expect(replay.outcome).toBe("duplicate");
    expect(redelivery.outcome).toBe("duplicate");
    expect(await record(name)).toEqual(first);
  });

  it("lets a redelivery of the same message take over the claim its crashed attempt left", async () => {
    const name = uniqueName("mlp-crashed");
    await seedVersion(name, mlp);
    const crashed = { id: "message-1", startedAt: new Date().toISOString() };
    await registry.updateVersion(name, 1, "ready", { status: "optimizing", optimizeAttempt: crashed });

    const duplicate = await optimizeVersion({ name, version: 1 }, "message-2", deps());
    const stillOptimizing = await record(name);
    const retry = await optimizeVersion({ name, version: 1 }, "message-1", deps());

    expect(duplicate.outcome).toBe("in-progress");
    expect(stillOptimizing).toMatchObject({ status: "optimizing", optimizeAttempt: crashed });
    expect(retry.outcome).toBe("optimized");
    expect(await record(name)).toMatchObject({ status: "ready", optimizedAt: expect.any(String) });
  });

  it("takes over a claim older than the lease, whichever message finds it", async () => {
    const name = uniqueName("mlp-stale");
    await seedVersion(name, mlp);
    const longAgo = new Date(Date.now() - 60 * 60 * 1000).toISOString();
    await registry.updateVersion(name, 1, "ready", {
      status: "optimizing",
      optimizeAttempt: { id: "message-1", startedAt: longAgo },
    });

    const result = await optimizeVersion(
      { name, version: 1 },
      "message-9",
      deps({ leaseMs: 15 * 60 * 1000 }),
    );

    expect(result.outcome).toBe("optimized");
    expect((await record(name)).optimizeAttempt?.id).toBe("message-9");
  });

  it("leaves a model it cannot optimize ready on its original, with the reason recorded", async () => {
    const name = uniqueName("zoo");
    const seeded = await seedVersion(name, buildDatatypeZooModel());

    const result = await optimizeVersion({ name, version: 1 }, "message-1", deps());
    const replay = await optimizeVersion({ name, version: 1 }, "message-2", deps());

    expect(result).toMatchObject({ outcome: "failed", reason: expect.stringMatching(/BYTES/) });
    expect(replay.outcome).toBe("duplicate");
    const failed = await record(name);
    expect(failed).toMatchObject({
      status: "ready",
      optimizeError: expect.stringMatching(/maas.json/),
      variants: [],
    });
    if (!isServable(failed)) throw new Error("not servable");
    expect(servingArtifact(failed)).toEqual(seeded.artifact);
  });

  it("returns the version to ready on an infrastructure error and throws, so that the retry completes it", async () => {
    const name = uniqueName("mlp-outage");
    await seedVersion(name, mlp);
    let failures = 1;
    const flaky: VariantStore = {
      download: (ref, path) => store.download(ref, path),
      readText: (bucket, key) => store.readText(bucket, key),
      putArtifact: async (bucket, path) => {
        if (failures-- > 0) throw new Error("simulated S3 outage");
        return store.putArtifact(bucket, path);
      },
    };

    await expect(
      optimizeVersion({ name, version: 1 }, "message-1", deps({}, { store: flaky })),
    ).rejects.toThrow("simulated S3 outage");
    const afterFailure = await record(name);
    const retry = await optimizeVersion({ name, version: 1 }, "message-1", deps({}, { store: flaky }));

    expect(afterFailure).toMatchObject({
      status: "ready",
      optimizeAttempt: { error: "simulated S3 outage" },
      variants: [],
    });
    expect(afterFailure.optimizedAt).toBeUndefined();
    expect(retry.outcome).toBe("optimized");
  });

  it("makes and records an FP16 variant for a GPU target without selecting it", async () => {
    const name = uniqueName("cnn-gpu");
    await seedVersion(name, buildCnnModel(), { target: "sagemaker" });

    const result = await optimizeVersion({ name, version: 1 }, "message-1", deps());

    const variants = (await record(name)).variants;
    expect(result).toMatchObject({ outcome: "optimized" });
    expect(variants.map((variant) => variant.kind)).toEqual(["original", "graph-basic", "fp16"]);
    expect(variants.filter((variant) => variant.selected).map((variant) => variant.kind)).toEqual([
      "original",
    ]);
    const fp16 = variants[2]!;
    expect(fp16.parity?.passed).toBe(true);
    expect(fp16.bytes / variants[0]!.bytes).toBeLessThan(0.55);
  });

  it("ignores a version that is still registering", async () => {
    const name = uniqueName("registering");
    const seeded = await seedVersion(name, mlp);
    await registry.updateVersion(name, 1, "ready", { status: "registering" });

    const result = await optimizeVersion({ name, version: 1 }, "message-1", deps());

    expect(result).toMatchObject({ outcome: "ignored", reason: "the version is registering" });
    expect((await record(name)).variants).toEqual(seeded.variants);
  });
});

describe("the optimize function", () => {
  const sqsEvent = (...bodies: string[]): SQSEvent =>
    ({
      Records: bodies.map((body, index) => ({ messageId: `message-${index}`, body, attributes: {} })),
    }) as unknown as SQSEvent;

  it("optimizes each message and reports a malformed one as a batch item failure", async () => {
    const name = uniqueName("mlp-handler");
    await seedVersion(name, mlp);
    const handler = createOptimizeHandler(deps(), new Logger({ logLevel: "SILENT" }));

    const response = await handler(
      sqsEvent("not json", JSON.stringify({ name, version: 1 }), '{"name":"x"}'),
    );

    expect(response.batchItemFailures).toEqual([
      { itemIdentifier: "message-0" },
      { itemIdentifier: "message-2" },
    ]);
    expect((await record(name)).optimizedAt).toEqual(expect.any(String));
  });

  it("reads its configuration with defaults, and names every variable that is wrong", () => {
    const settings = optimizerSettings(
      loadOptimizeConfig({ MAAS_REGISTRY_TABLE: "registry", MAAS_PARITY_MIN_COSINE: "0.995" }),
    );

    expect(settings).toMatchObject({
      workDir: "/tmp/maas-optimize",
      benchmarkRuns: 20,
      minSpeedup: 0.05,
      thresholds: { minCosine: 0.995, minTop1Agreement: 0.95, maxRelativeDiff: 0.1 },
      quantize: { minElements: 16_384, reduceRange: process.arch !== "arm64" },
    });
    expect(() => loadOptimizeConfig({ MAAS_PARITY_MIN_COSINE: "2" })).toThrow(
      /invalid optimize function configuration: MAAS_REGISTRY_TABLE: .*; MAAS_PARITY_MIN_COSINE: /,
    );
  });
});
