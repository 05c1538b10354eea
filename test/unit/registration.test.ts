import { createHash, randomUUID } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Logger } from "@aws-lambda-powertools/logger";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createOrtSession } from "#aws/onnx/runner.ts";
import { DynamoModelRegistry } from "#aws/registry/dynamo-registry.ts";
import { inspectModel } from "#core/onnx/inspect.ts";
import { artifactKey, manifestKey, modelKey } from "#core/registry/manifest.ts";
import {
  type ArtifactWriter,
  type EndpointModelStore,
  type ModelFile,
  OPTIMIZE_SEND_LEASE_MS,
  type OptimizeQueue,
  type RegistrationDeps,
  RegistrationInProgressError,
  registerUpload,
  type UploadEvent,
  type UploadStore,
} from "#core/registry/registration.ts";
import { createRegisterHandler, uploadEvents } from "#lambdas/register/handler.ts";
import { type Emulators, startEmulators } from "../../local/emulators.ts";
import { IRIS_LABELS, buildIrisModel as trainIrisModel } from "../../models/iris.ts";
import { s3ObjectCreatedBody, s3TestEventBody, sqsEvent } from "../infra/events.ts";
import {
  expectedProbabilities,
  legacyOpsetModel,
  ZIPMAP_LABELS,
  zipMapClassifier,
} from "../support/classifier-models.ts";
import { craftedModels, unknownOperatorModel, validAddModel } from "../support/crafted-models.ts";

const BUCKET = "models";
const TABLE = "registry";

/** Training iris takes a few hundred milliseconds: do it once. */
let iris: Uint8Array | undefined;
const buildIrisModel = () => {
  iris ??= trainIrisModel();
  return iris;
};

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
const md5 = (bytes: Uint8Array) => createHash("md5").update(bytes).digest("hex");

/** The model bucket in memory, with S3's ETag guards and hooks to fail or race one call. */
class MemoryUploadStore implements UploadStore, ArtifactWriter {
  readonly objects = new Map<string, { bytes: Uint8Array; etag: string }>();
  readonly workDir: string;
  failNextCopy = 0;
  /** Fails the next artifact write after the bytes are stored, as a crash before the record would. */
  failAfterNextWrite = 0;
  /** Runs once between head() and download(), as another upload racing this one would. */
  beforeNextDownload: (() => void) | undefined;

  constructor(workDir: string) {
    this.workDir = workDir;
  }

  /** Uploads like S3 (ETag = MD5 of a single-part upload) and returns the event S3 would send. */
  put(key: string, body: Uint8Array | string): UploadEvent {
    const bytes = typeof body === "string" ? new TextEncoder().encode(body) : body;
    const etag = md5(bytes);
    this.objects.set(key, { bytes, etag });
    return { bucket: BUCKET, key, etag, bytes: bytes.length };
  }

  async head(_bucket: string, key: string) {
    const object = this.objects.get(key);
    return object && { bytes: object.bytes.length, etag: object.etag };
  }

  async download(_bucket: string, key: string, etag: string) {
    const race = this.beforeNextDownload;
    this.beforeNextDownload = undefined;
    race?.();
    const object = this.objects.get(key);
    if (object === undefined || object.etag !== etag) return "changed" as const;
    const path = join(this.workDir, `${randomUUID()}.onnx`);
    await writeFile(path, object.bytes);
    return { path, sha256: sha256(object.bytes), bytes: object.bytes.length };
  }

  async readText(_bucket: string, key: string) {
    const object = this.objects.get(key);
    return object && new TextDecoder().decode(object.bytes);
  }

  async copyToArtifact(_bucket: string, sourceKey: string, etag: string, targetKey: string) {
    if (this.failNextCopy > 0) {
      this.failNextCopy -= 1;
      throw new Error("simulated crash while copying the artifact");
    }
    if (this.objects.has(targetKey)) return;
    const source = this.objects.get(sourceKey);
    if (source?.etag !== etag) throw new Error("PreconditionFailed: the source changed");
    this.objects.set(targetKey, source);
  }

  async writeArtifact(_bucket: string, key: string, file: ModelFile) {
    if (!this.objects.has(key)) {
      const bytes = new Uint8Array(await readFile(file.path));
      if (sha256(bytes) !== file.sha256) throw new Error("BadDigest: the bytes do not match their sha256");
      this.objects.set(key, { bytes, etag: md5(bytes) });
    }
    if (this.failAfterNextWrite > 0) {
      this.failAfterNextWrite -= 1;
      throw new Error("simulated crash after writing the artifact");
    }
  }
}

class MemoryOptimizeQueue implements OptimizeQueue {
  readonly sent: { name: string; version: number }[] = [];
  failNextSend = 0;

  async send(message: { name: string; version: number }) {
    if (this.failNextSend > 0) {
      this.failNextSend -= 1;
      throw new Error("simulated SQS outage");
    }
    this.sent.push(message);
  }

  sentFor(name: string) {
    return this.sent.filter((message) => message.name === name);
  }
}

let dataDir: string;
let emulators: Emulators;
let registry: DynamoModelRegistry;
let store: MemoryUploadStore;
let queue: MemoryOptimizeQueue;
let tryLoads: string[];

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "maas-registration-"));
  emulators = await startEmulators({ dataDir, s3Port: 0, bucket: "unused", table: TABLE });
  registry = new DynamoModelRegistry(emulators.dynamoClient(), TABLE);
});

afterAll(async () => {
  await emulators?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

beforeEach(async () => {
  const workDir = await mkdtemp(join(dataDir, "work-"));
  store = new MemoryUploadStore(workDir);
  queue = new MemoryOptimizeQueue();
  tryLoads = [];
});

function deps(overrides: Partial<RegistrationDeps> = {}): RegistrationDeps {
  return {
    store,
    registry,
    optimizeQueue: queue,
    artifacts: store,
    tryLoad: async (path) => {
      tryLoads.push(path);
      const session = await createOrtSession(path, 1);
      await session.release();
    },
    readModel: (path) => readFile(path),
    writeModel: (path, bytes) => writeFile(path, bytes),
    removeFile: (path) => unlink(path).catch(() => undefined),
    now: () => new Date().toISOString(),
    limits: { maxModelBytes: 1024 ** 2, lambdaMaxModelBytes: 512 * 1024 },
    ...overrides,
  };
}

/** A model name no other test uses: every test shares one registry table. */
let counter = 0;
const uniqueName = (prefix: string) => `${prefix}-${++counter}`;

function upload(name: string, version: number, bytes: Uint8Array): UploadEvent {
  return store.put(modelKey(name, version), bytes);
}

async function record(name: string, version: number) {
  const found = await registry.getVersionConsistent(name, version);
  if (found === undefined) throw new Error(`no record for ${name} v${version}`);
  return found;
}

describe("registerUpload: a valid upload", () => {
  it("records a ready lambda version with its artifact, signature, labels and description", async () => {
    const name = uniqueName("iris");
    const bytes = buildIrisModel();
    const event = upload(name, 1, bytes);

    const result = await registerUpload(event, deps());

    const sha = sha256(bytes);
    expect(result.outcome).toBe("registered");
    expect(await record(name, 1)).toMatchObject({
      name,
      version: 1,
      status: "ready",
      target: "lambda",
      artifact: { bucket: BUCKET, key: `artifacts/sha256/${sha}.onnx`, sha256: sha, bytes: bytes.length },
      signature: inspectModel(bytes).signature,
      labels: [...IRIS_LABELS],
      description: expect.stringMatching(/^Iris species from sepal and petal/),
      source: { key: event.key, etag: event.etag },
      optimizeState: "queued",
      variants: [],
    });
    expect((await record(name, 1)).reason).toBeUndefined();
    expect(store.objects.get(artifactKey(sha))?.bytes).toEqual(bytes);
    expect(queue.sent).toEqual([{ name, version: 1 }]);
    expect(tryLoads).toHaveLength(1);
  });

  it("lists the version on the model's head, so it appears among the models", async () => {
    const name = uniqueName("listed");

    await registerUpload(upload(name, 3, validAddModel()), deps());

    expect(await registry.listModels()).toContainEqual({ name, versions: [3] });
  });

  it("removes its downloaded and rewritten files whatever the outcome", async () => {
    const good = uniqueName("cleanup");
    const bad = uniqueName("cleanup");
    const rewritten = uniqueName("cleanup");

    await registerUpload(upload(good, 1, validAddModel()), deps());
    await registerUpload(upload(bad, 1, unknownOperatorModel()), deps());
    await registerUpload(upload(rewritten, 1, zipMapClassifier()), deps());

    expect(await readdir(store.workDir)).toEqual([]);
  });

  it("targets sagemaker without a try-load when the model is above the lambda size limit", async () => {
    const name = uniqueName("big");
    const bytes = buildIrisModel();

    await registerUpload(
      upload(name, 1, bytes),
      deps({ limits: { maxModelBytes: 1024 ** 2, lambdaMaxModelBytes: bytes.length - 1 } }),
    );

    expect(await record(name, 1)).toMatchObject({ status: "ready", target: "sagemaker" });
    expect(tryLoads).toEqual([]);
  });

  it("keeps a model of exactly the lambda size limit on lambda", async () => {
    const name = uniqueName("edge");
    const bytes = validAddModel();

    await registerUpload(
      upload(name, 1, bytes),
      deps({ limits: { maxModelBytes: 1024 ** 2, lambdaMaxModelBytes: bytes.length } }),
    );

    expect((await record(name, 1)).target).toBe("lambda");
  });
});

describe("registerUpload: the manifest", () => {
  it("takes labels, description and tags from maas.json over the model's metadata", async () => {
    const name = uniqueName("manifest");
    store.put(
      manifestKey(name, 1),
      JSON.stringify({
        labels: ["a", "b", "c"],
        description: "From the manifest.",
        tags: { team: "vision" },
      }),
    );

    await registerUpload(upload(name, 1, buildIrisModel()), deps());

    expect(await record(name, 1)).toMatchObject({
      status: "ready",
      labels: ["a", "b", "c"],
      description: "From the manifest.",
      tags: { team: "vision" },
    });
  });

  it("registers a sagemaker target without a try-load, even for a model onnxruntime here cannot load", async () => {
    const name = uniqueName("gpu-only");
    store.put(manifestKey(name, 1), JSON.stringify({ target: "sagemaker" }));

    const result = await registerUpload(upload(name, 1, unknownOperatorModel()), deps());

    expect(result.outcome).toBe("registered");
    expect(await record(name, 1)).toMatchObject({ status: "ready", target: "sagemaker" });
    expect(tryLoads).toEqual([]);
  });

  it("forces a lambda target, with a try-load, for a model above the size limit", async () => {
    const name = uniqueName("forced");
    const bytes = validAddModel();
    store.put(manifestKey(name, 1), JSON.stringify({ target: "lambda" }));

    await registerUpload(
      upload(name, 1, bytes),
      deps({ limits: { maxModelBytes: 1024 ** 2, lambdaMaxModelBytes: 1 } }),
    );

    expect((await record(name, 1)).target).toBe("lambda");
    expect(tryLoads).toHaveLength(1);
  });

  it.each([
    ["not JSON", "{labels: [", /^maas\.json is not valid JSON: /],
    ["an unknown field", JSON.stringify({ lables: ["a"] }), /^maas\.json is invalid: .*lables/],
    ["an unknown target", JSON.stringify({ target: "gpu" }), /^maas\.json is invalid: .*target/],
    ["labels that are not strings", JSON.stringify({ labels: [1, 2] }), /^maas\.json is invalid: .*labels/],
  ])("fails the version when maas.json is %s, saying why", async (_case, manifest, reason) => {
    const name = uniqueName("bad-manifest");
    store.put(manifestKey(name, 1), manifest);

    const result = await registerUpload(upload(name, 1, validAddModel()), deps());

    expect(result).toEqual({ outcome: "failed", reason: expect.stringMatching(reason) });
    const failed = await record(name, 1);
    expect(failed.status).toBe("failed");
    expect(failed.reason).toMatch(reason);
    expect(queue.sent).toEqual([]);
  });
});

describe("registerUpload: models that must not be served", () => {
  it.each(craftedModels().map((model) => [model.name, model] as const))(
    "fails %s with its reason and sends no optimize message",
    async (_label, model) => {
      const name = uniqueName(model.name);

      const result = await registerUpload(upload(name, 1, model.bytes), deps());

      expect(result).toEqual({ outcome: "failed", reason: expect.stringMatching(model.reason) });
      const failed = await record(name, 1);
      expect(failed).toMatchObject({ status: "failed", reason: expect.stringMatching(model.reason) });
      expect(failed.artifact).toBeUndefined();
      expect(failed.signature).toBeUndefined();
      expect(queue.sent).toEqual([]);
      expect(tryLoads).toHaveLength(model.caughtBy === "try-load" ? 1 : 0);
    },
  );

  it("fails a model over the size cap from its HEAD, without downloading it", async () => {
    const name = uniqueName("oversize");
    const bytes = buildIrisModel();
    let downloads = 0;
    const download = store.download.bind(store);
    store.download = (...args) => {
      downloads += 1;
      return download(...args);
    };

    const result = await registerUpload(
      upload(name, 1, bytes),
      deps({ limits: { maxModelBytes: 100, lambdaMaxModelBytes: 100 } }),
    );

    const reason = `the model is ${bytes.length} bytes; the limit is 100 bytes (MAAS_MAX_MODEL_BYTES)`;
    expect(result).toEqual({ outcome: "failed", reason });
    expect(await record(name, 1)).toMatchObject({ status: "failed", reason });
    expect(downloads).toBe(0);
    expect(queue.sent).toEqual([]);
  });

  it("treats a replay of a failed upload as a duplicate, keeping the reason", async () => {
    const name = uniqueName("failed-replay");
    const event = upload(name, 1, unknownOperatorModel());
    await registerUpload(event, deps());

    const replay = await registerUpload(event, deps());

    expect(replay).toEqual({ outcome: "duplicate" });
    expect((await record(name, 1)).reason).toMatch(/NoSuchOperator/);
    expect(tryLoads).toHaveLength(1);
  });
});

describe("registerUpload: models older exporters wrote", () => {
  it.each([1, 2, 3, 4, 5, 6])(
    "registers an operator-set-%i model onnxruntime runs as ready, with a warning naming the opset",
    async (opset) => {
      const name = uniqueName(`opset-${opset}`);

      const result = await registerUpload(upload(name, 1, legacyOpsetModel(opset)), deps());

      expect(result.outcome).toBe("registered");
      const registered = await record(name, 1);
      expect(registered).toMatchObject({ status: "ready", target: "lambda", optimizeState: "queued" });
      expect(registered.reason).toBeUndefined();
      expect(registered.warnings).toEqual([
        `the model uses ONNX operator set ${opset}; onnxruntime keeps running operator sets below 7 but ` +
          "no longer guarantees them: re-export with opset >= 7 when you can",
      ]);
      expect(tryLoads).toHaveLength(1);
      expect(queue.sent).toEqual([{ name, version: 1 }]);
    },
  );

  it("leaves the initializers an older exporter lists among the graph inputs out of the signature", async () => {
    const name = uniqueName("initializer-inputs");

    await registerUpload(upload(name, 1, legacyOpsetModel(6)), deps());

    expect((await record(name, 1)).signature).toEqual({
      inputs: [{ name: "x", datatype: "FP32", shape: ["batch", 2] }],
      outputs: [{ name: "y", datatype: "FP32", shape: ["batch", 3] }],
    });
  });

  it("records no warnings for a model of a guaranteed operator set", async () => {
    const name = uniqueName("opset-17");

    await registerUpload(upload(name, 1, validAddModel()), deps());

    expect((await record(name, 1)).warnings).toBeUndefined();
  });

  it("leaves a graph without nodes to onnxruntime: a pass-through registers, one with an output nothing makes fails", async () => {
    const [passing, dangling] = [uniqueName("no-nodes"), uniqueName("no-nodes")];
    const passThrough = validAddModel({
      nodes: [],
      initializers: [],
      outputs: [{ name: "x", elemType: 1, dims: ["batch", 2] }],
    });

    await registerUpload(upload(passing, 1, passThrough), deps());
    const failed = await registerUpload(
      upload(dangling, 1, validAddModel({ nodes: [], initializers: [] })),
      deps(),
    );

    expect((await record(passing, 1)).status).toBe("ready");
    expect(failed).toEqual({
      outcome: "failed",
      reason: expect.stringMatching(
        /^onnxruntime cannot load the model: .*Graph output \(y\) does not exist/,
      ),
    });
    // onnxruntime names the file it loaded: the function's scratch path stays out of the reason.
    expect(failed.outcome === "failed" && failed.reason).not.toMatch(/Load model from|\/tmp\/|register-work/);
  });
});

describe("registerUpload: a classifier whose probabilities end in a ZipMap", () => {
  const FEATURES = [1, 2, 3, -1];

  async function servedProbabilities(bytes: Uint8Array): Promise<number[]> {
    const session = await ort.InferenceSession.create(bytes);
    try {
      const outputs = await session.run({
        x: new ort.Tensor("float32", Float32Array.from(FEATURES), [2, 2]),
      });
      expect(outputs.output_probability!.dims).toEqual([2, 3]);
      return Array.from(outputs.output_probability!.data as Float32Array);
    } finally {
      await session.release();
    }
  }

  it("serves it from the rewritten model, content-addressed by its own sha256, with the class labels", async () => {
    const name = uniqueName("zipmap");
    const bytes = zipMapClassifier();

    const result = await registerUpload(upload(name, 1, bytes), deps());

    expect(result.outcome).toBe("registered");
    const registered = await record(name, 1);
    const artifact = registered.artifact!;
    const stored = store.objects.get(artifact.key)!.bytes;
    expect(artifact).toEqual({
      bucket: BUCKET,
      key: artifactKey(sha256(stored)),
      sha256: sha256(stored),
      bytes: stored.length,
    });
    expect(artifact.sha256).not.toBe(sha256(bytes));
    expect(store.objects.has(artifactKey(sha256(bytes)))).toBe(false);
    expect(registered).toMatchObject({ status: "ready", target: "lambda", optimizeState: "queued" });
    expect(registered.signature!.outputs).toEqual([
      { name: "output_label", datatype: "INT64", shape: ["N"] },
      { name: "output_probability", datatype: "FP32", shape: [-1, 3], classLabels: [...ZIPMAP_LABELS] },
    ]);
    expect(registered.warnings).toEqual([expect.stringContaining("served as FP32 [N, 3]")]);
    expect(tryLoads).toEqual([expect.stringMatching(/\.served\.onnx$/)]);
    const probabilities = await servedProbabilities(stored);
    expectedProbabilities(FEATURES).forEach((expected, i) => {
      expect(probabilities[i]).toBeCloseTo(expected, 6);
    });
  });

  it("keeps one record and one artifact through replays and a crash between the artifact and the record", async () => {
    const name = uniqueName("zipmap-replay");
    const bytes = zipMapClassifier();
    const event = upload(name, 1, bytes);
    store.failAfterNextWrite = 1;

    await expect(registerUpload(event, deps())).rejects.toThrow(/simulated crash/);
    const artifactsAfterCrash = [...store.objects.keys()].filter((key) => key.startsWith("artifacts/"));
    const replay = await registerUpload(event, deps());
    const registered = await record(name, 1);
    const again = await registerUpload(event, deps());
    const sameBytes = await registerUpload(upload(name, 2, bytes), deps());

    expect(replay.outcome).toBe("registered");
    expect(again.outcome).toBe("duplicate");
    expect(sameBytes.outcome).toBe("registered");
    expect(artifactsAfterCrash).toContain(registered.artifact!.key);
    expect((await record(name, 1)).artifact).toEqual(registered.artifact);
    expect((await record(name, 2)).artifact).toEqual(registered.artifact);
    expect([...store.objects.keys()].filter((key) => key.startsWith("artifacts/"))).toEqual(
      artifactsAfterCrash,
    );
    expect(queue.sentFor(name)).toEqual([
      { name, version: 1 },
      { name, version: 2 },
    ]);
  });

  it("publishes the rewritten model, not the upload, for a sagemaker target", async () => {
    const name = uniqueName("zipmap-gpu");
    store.put(manifestKey(name, 1), JSON.stringify({ target: "sagemaker" }));
    const published: { file: ModelFile; digest: string }[] = [];
    const endpointModels: EndpointModelStore = {
      publish: async (_bucket, file) => {
        published.push({ file, digest: sha256(await readFile(file.path)) });
      },
    };

    await registerUpload(upload(name, 1, zipMapClassifier()), deps({ endpointModels }));

    const registered = await record(name, 1);
    expect(registered).toMatchObject({ status: "ready", target: "sagemaker" });
    const { sha256: digest, bytes } = registered.artifact!;
    expect(published).toEqual([
      { file: { path: expect.stringMatching(/\.served\.onnx$/), sha256: digest, bytes }, digest },
    ]);
    expect(tryLoads).toEqual([]);
  });

  it("fails a ZipMap whose maps another node reads, saying how to export without it", async () => {
    const name = uniqueName("zipmap-read");
    const bytes = zipMapClassifier({
      extraNodes: [{ opType: "SequenceLength", inputs: ["output_probability"], outputs: ["rows"] }],
    });

    const result = await registerUpload(upload(name, 1, bytes), deps());

    expect(result).toEqual({
      outcome: "failed",
      reason: expect.stringMatching(
        /^output 'output_probability' is not a tensor .*options=\{id\(model\): \{'zipmap': False\}\}\)$/,
      ),
    });
    expect((await record(name, 1)).artifact).toBeUndefined();
    expect(queue.sent).toEqual([]);
  });
});

describe("registerUpload: at-least-once delivery", () => {
  it("leaves one record and one optimize message after 1000 replays of one event", async () => {
    const name = uniqueName("replayed");
    const event = upload(name, 1, validAddModel());

    const outcomes: string[] = [];
    for (let i = 0; i < 1000; i++) outcomes.push((await registerUpload(event, deps())).outcome);

    expect(outcomes[0]).toBe("registered");
    expect(outcomes.slice(1).every((outcome) => outcome === "duplicate")).toBe(true);
    expect(await registry.listVersions(name)).toHaveLength(1);
    expect(queue.sent).toEqual([{ name, version: 1 }]);
    expect(tryLoads).toHaveLength(1);
  });

  it("registers once and sends one optimize message when ten deliveries of one event run at once", async () => {
    const name = uniqueName("concurrent");
    const event = upload(name, 1, validAddModel());

    const settled = await Promise.allSettled(Array.from({ length: 10 }, () => registerUpload(event, deps())));

    const outcomes = settled.flatMap((result) =>
      result.status === "fulfilled" ? [result.value.outcome] : [],
    );
    const retried = settled.flatMap((result) => (result.status === "rejected" ? [result.reason] : []));
    expect(outcomes.filter((outcome) => outcome === "registered")).toHaveLength(1);
    expect(outcomes.filter((outcome) => outcome !== "registered").every((o) => o === "duplicate")).toBe(true);
    // A delivery that finds the winner between "ready" and "queued" asks to be retried instead of sending.
    expect(retried.every((reason) => reason instanceof RegistrationInProgressError)).toBe(true);
    expect(await registry.listVersions(name)).toHaveLength(1);
    expect(await record(name, 1)).toMatchObject({ status: "ready", optimizeState: "queued" });
    expect(queue.sent).toEqual([{ name, version: 1 }]);
  });

  it("finishes the job of a worker that crashed between claiming the version and marking it ready", async () => {
    const name = uniqueName("crash-claim");
    const event = upload(name, 1, validAddModel());
    store.failNextCopy = 1;

    await expect(registerUpload(event, deps())).rejects.toThrow(/simulated crash/);
    const stranded = await record(name, 1);
    const replay = await registerUpload(event, deps());
    const again = await registerUpload(event, deps());

    expect(stranded).toMatchObject({ status: "registering", source: { etag: event.etag } });
    expect(replay.outcome).toBe("registered");
    expect(again.outcome).toBe("duplicate");
    expect(await record(name, 1)).toMatchObject({ status: "ready", optimizeState: "queued" });
    expect(queue.sent).toEqual([{ name, version: 1 }]);
  });

  it("sends the optimize message on a replay after the send lease when the worker crashed after marking the version ready", async () => {
    const name = uniqueName("crash-send");
    const event = upload(name, 1, validAddModel());
    queue.failNextSend = 1;

    await expect(registerUpload(event, deps())).rejects.toThrow(/simulated SQS outage/);
    const stranded = await record(name, 1);
    const early = registerUpload(event, deps());
    const later = () => new Date(Date.now() + OPTIMIZE_SEND_LEASE_MS + 1000).toISOString();
    await expect(early).rejects.toBeInstanceOf(RegistrationInProgressError);
    const replay = await registerUpload(event, deps({ now: later }));
    const again = await registerUpload(event, deps({ now: later }));

    expect(stranded).toMatchObject({ status: "ready", optimizeState: "pending" });
    expect(replay.outcome).toBe("duplicate");
    expect(again.outcome).toBe("duplicate");
    expect(await record(name, 1)).toMatchObject({ status: "ready", optimizeState: "queued" });
    expect(queue.sent).toEqual([{ name, version: 1 }]);
  });
});

describe("registerUpload: an upload replaced mid-registration", () => {
  it("fails its own stranded claim instead of leaving the version registering forever", async () => {
    const name = uniqueName("stranded");
    const first = upload(name, 1, validAddModel());
    store.failNextCopy = 1;
    await expect(registerUpload(first, deps())).rejects.toThrow(/simulated crash/);
    upload(name, 1, buildIrisModel());

    const replay = await registerUpload(first, deps());

    expect(replay.outcome).toBe("failed");
    expect(await record(name, 1)).toMatchObject({
      status: "failed",
      reason: expect.stringMatching(/replaced before its registration finished/),
    });
    expect(queue.sent).toEqual([]);
  });
});

describe("registerUpload: immutable versions", () => {
  it("keeps the first upload of a version and records the rejected second one", async () => {
    const name = uniqueName("immutable");
    const first = validAddModel();
    const second = buildIrisModel();
    const firstEvent = upload(name, 1, first);
    await registerUpload(firstEvent, deps());

    const secondEvent = upload(name, 1, second);
    const result = await registerUpload(secondEvent, deps());

    expect(result).toEqual({
      outcome: "rejected",
      reason: expect.stringMatching(
        new RegExp(
          `^model '${name}' version 1 already exists and versions are immutable: the upload with ETag ${secondEvent.etag} was not registered`,
        ),
      ),
    });
    const kept = await record(name, 1);
    expect(kept).toMatchObject({
      status: "ready",
      source: { etag: firstEvent.etag },
      artifact: { sha256: sha256(first) },
      signature: inspectModel(first).signature,
      rejectedUpload: { etag: secondEvent.etag, at: expect.any(String), reason: expect.any(String) },
    });
    expect(store.objects.get(kept.artifact!.key)?.bytes).toEqual(first);
    expect(queue.sent).toEqual([{ name, version: 1 }]);
  });

  it("keeps treating a replay of the first upload as a duplicate after the key was overwritten", async () => {
    const name = uniqueName("overwritten");
    const firstEvent = upload(name, 1, validAddModel());
    await registerUpload(firstEvent, deps());
    await registerUpload(upload(name, 1, buildIrisModel()), deps());

    const replay = await registerUpload(firstEvent, deps());

    expect(replay).toEqual({ outcome: "duplicate" });
    expect(queue.sent).toHaveLength(1);
  });

  it("rejects a second upload that arrives while the first is still registering", async () => {
    const name = uniqueName("racing");
    const firstEvent = upload(name, 1, validAddModel());
    store.failNextCopy = 1;
    await expect(registerUpload(firstEvent, deps())).rejects.toThrow();

    const secondEvent = upload(name, 1, buildIrisModel());
    const second = await registerUpload(secondEvent, deps());

    expect(second.outcome).toBe("rejected");
    expect(await record(name, 1)).toMatchObject({
      status: "registering",
      source: { etag: firstEvent.etag },
      rejectedUpload: { etag: secondEvent.etag },
    });
  });

  it("ignores the event of an upload that a newer one replaced before registration saw it", async () => {
    const name = uniqueName("superseded");
    const stale = upload(name, 1, validAddModel());
    const fresh = upload(name, 1, buildIrisModel());

    const staleResult = await registerUpload(stale, deps());
    const freshResult = await registerUpload(fresh, deps());

    expect(staleResult).toEqual({ outcome: "superseded" });
    expect(freshResult.outcome).toBe("registered");
    expect((await record(name, 1)).source?.etag).toBe(fresh.etag);
  });

  it("ignores an upload replaced between its HEAD and its download, claiming nothing", async () => {
    const name = uniqueName("replaced");
    const stale = upload(name, 1, validAddModel());
    store.beforeNextDownload = () => store.put(modelKey(name, 1), buildIrisModel());

    const result = await registerUpload(stale, deps());

    expect(result).toEqual({ outcome: "superseded" });
    expect(await registry.getVersionConsistent(name, 1)).toBeUndefined();
    expect(queue.sent).toEqual([]);
  });

  it("ignores the event of an upload deleted before registration", async () => {
    const name = uniqueName("deleted");
    const event = upload(name, 1, validAddModel());
    store.objects.delete(event.key);

    expect(await registerUpload(event, deps())).toEqual({ outcome: "superseded" });
    expect(await registry.getVersionConsistent(name, 1)).toBeUndefined();
  });
});

describe("registerUpload: keys and late manifests", () => {
  it.each([
    "models/iris/model.onnx",
    "models/Iris/1/model.onnx",
    "models/iris/0/model.onnx",
    "models/iris/01/model.onnx",
    "models/iris/v1/model.onnx",
    "models/iris/2147483648/model.onnx",
    "models/iris/1/weights.bin",
    "uploads/iris/1/model.onnx",
    "models/iris/1/nested/model.onnx",
  ])("ignores %s, which is not a model upload, without touching the registry", async (key) => {
    const event = store.put(key, validAddModel());
    const untouchable = new Proxy(registry, {
      get: () => {
        throw new Error("the registry was used");
      },
    });

    const result = await registerUpload(event, deps({ registry: untouchable }));

    expect(result).toEqual({ outcome: "ignored", reason: expect.any(String) });
  });

  it("updates labels, description and tags, but not the target, from a manifest uploaded after the model", async () => {
    const name = uniqueName("late");
    await registerUpload(upload(name, 1, buildIrisModel()), deps());
    const before = await record(name, 1);

    const result = await registerUpload(
      store.put(
        manifestKey(name, 1),
        JSON.stringify({
          labels: ["x", "y", "z"],
          description: "Late.",
          tags: { a: "b" },
          target: "sagemaker",
        }),
      ),
      deps(),
    );

    expect(result).toEqual({ outcome: "manifest-updated" });
    const after = await record(name, 1);
    expect(after).toMatchObject({ labels: ["x", "y", "z"], description: "Late.", tags: { a: "b" } });
    expect(after.target).toBe("lambda");
    expect(after.status).toBe("ready");
    expect(after.artifact).toEqual(before.artifact);
    expect(after.signature).toEqual(before.signature);
    expect(queue.sent).toHaveLength(1);
  });

  it("rejects an invalid late manifest and leaves the version as it was", async () => {
    const name = uniqueName("late-bad");
    await registerUpload(upload(name, 1, buildIrisModel()), deps());
    const before = await record(name, 1);

    const result = await registerUpload(store.put(manifestKey(name, 1), '{"labels": "abc"}'), deps());

    expect(result).toEqual({ outcome: "rejected", reason: expect.stringMatching(/^maas\.json is invalid/) });
    expect(await record(name, 1)).toEqual(before);
  });

  it("leaves a manifest uploaded before its model for registration to read", async () => {
    const name = uniqueName("early");

    const result = await registerUpload(store.put(manifestKey(name, 1), "{}"), deps());

    expect(result.outcome).toBe("ignored");
    expect(await registry.getVersionConsistent(name, 1)).toBeUndefined();
  });
});

describe("the register function (S3 notifications on SQS)", () => {
  const silent = new Logger({ logLevel: "SILENT" });
  const notification = (key: string, bytes: Uint8Array) => {
    const event = store.put(key, bytes);
    return s3ObjectCreatedBody({ bucket: BUCKET, key, size: event.bytes, eTag: event.etag });
  };

  it("registers each upload, acknowledges S3's TestEvent and fails only a message that is not an S3 notification", async () => {
    const name = uniqueName("batch");
    const event = sqsEvent("register", [
      s3TestEventBody(BUCKET),
      notification(modelKey(name, 1), buildIrisModel()),
      "not json",
      JSON.stringify({ Records: [{ eventName: "ObjectCreated:Put" }] }),
    ]);

    const response = await createRegisterHandler(deps(), silent)(event);

    expect(response.batchItemFailures).toEqual([
      { itemIdentifier: event.Records[2]?.messageId },
      { itemIdentifier: event.Records[3]?.messageId },
    ]);
    expect((await record(name, 1)).status).toBe("ready");
  });

  it("registers a batch's uploads one after another, in the order they came", async () => {
    const names = [uniqueName("batch-first"), uniqueName("batch-second")];
    const bodies = names.map((name) => notification(modelKey(name, 1), validAddModel()));
    const steps: string[] = [];
    const head = store.head.bind(store);
    store.head = async (bucket, key) => {
      steps.push(`head ${key}`);
      return head(bucket, key);
    };

    const response = await createRegisterHandler(
      deps({
        removeFile: async (path) => {
          steps.push("done");
          await unlink(path).catch(() => undefined);
        },
      }),
      silent,
    )(sqsEvent("register", bodies));

    expect(response.batchItemFailures).toEqual([]);
    expect(steps).toEqual([
      `head ${modelKey(names[0]!, 1)}`,
      "done",
      `head ${modelKey(names[1]!, 1)}`,
      "done",
    ]);
  });

  it("answers a batch that failed whole item by item instead of throwing", async () => {
    const event = sqsEvent("register", ["{}", "[]"]);

    const response = await createRegisterHandler(deps(), silent)(event);

    expect(response.batchItemFailures.map((failure) => failure.itemIdentifier)).toEqual(
      event.Records.map((message) => message.messageId),
    );
  });

  it("reads only ObjectCreated records, with keys URL-decoded ('+' a space), from any source address", () => {
    const created = JSON.parse(
      s3ObjectCreatedBody({ bucket: BUCKET, key: "models/a b+c/1/model.onnx", size: 7, eTag: '"abc"' }),
    ) as { Records: { eventName: string; requestParameters: { sourceIPAddress: string } }[] };
    const [record] = created.Records;
    if (record === undefined) throw new Error("no record");
    record.requestParameters.sourceIPAddress = "2001:db8::7";
    const removed = { ...record, eventName: "ObjectRemoved:Delete" };
    const [message] = sqsEvent("register", [JSON.stringify({ Records: [removed, record] })]).Records;
    if (message === undefined) throw new Error("no message");

    expect(uploadEvents(message)).toEqual([
      { bucket: BUCKET, key: "models/a b+c/1/model.onnx", etag: "abc", bytes: 7 },
    ]);
  });
});
