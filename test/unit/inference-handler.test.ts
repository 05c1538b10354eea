import { createHash, randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InvokeEndpointCommand, SageMakerRuntimeClient } from "@aws-sdk/client-sagemaker-runtime";
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from "aws-lambda";
import { mockClient } from "aws-sdk-client-mock";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ArtifactCache } from "#aws/onnx/artifact-cache.ts";
import { OnnxRunner, sessionOptions } from "#aws/onnx/runner.ts";
import { ServingArtifacts } from "#aws/onnx/serving-artifacts.ts";
import { SessionPool } from "#aws/onnx/session-pool.ts";
import { WorkerSession } from "#aws/onnx/worker-session.ts";
import { SageMakerRunner } from "#aws/sagemaker/runner.ts";
import type { InferenceMetric, MetricsSink } from "#core/metrics/inference-metric.ts";
import { InferenceStatistics } from "#core/metrics/statistics.ts";
import type { ArtifactRef, ModelVersion, Variant } from "#core/model.ts";
import { inspectModel } from "#core/onnx/inspect.ts";
import type { ModelEntries, ModelRegistry, ModelSummary } from "#core/registry/registry.ts";
import { InferenceService } from "#core/v2/inference-service.ts";
import { createInferenceHandler, type ProxyHandler } from "#lambdas/inference/handler.ts";
import { lambdaContext as localLambdaContext } from "../../local/gateway.ts";
import { buildIrisModel } from "../../models/iris.ts";
import { buildMlpModel } from "../../models/mlp.ts";
import { ElemType, encodeModel, floatTensor } from "../../models/onnx-builder.ts";
import { buildFixedShapeModel } from "../../models/zoo.ts";
import { proxyEvent as restProxyEvent } from "../infra/events.ts";
import { CapturingLogger, MemoryArtifactSource } from "../support/memory-parts.ts";

const BUCKET = "maas-models";
/** Distinctive enough that finding it in a log line means tensor data leaked into the logs. */
const SECRET_FEATURES = [5.123456, 3.654321, 1.471717, 0.282828];

/** The registry's read side in memory; `failure` makes every read throw, like an unreachable table. */
class MemoryRegistry implements ModelRegistry {
  readonly versions = new Map<string, ModelVersion[]>();
  readonly aliases = new Map<string, number>();
  failure: Error | undefined;

  add(record: ModelVersion): void {
    const versions = this.versions.get(record.name) ?? [];
    versions.push(record);
    versions.sort((a, b) => a.version - b.version);
    this.versions.set(record.name, versions);
  }

  async getVersion(name: string, version: number): Promise<ModelVersion | undefined> {
    this.#check();
    return this.versions.get(name)?.find((record) => record.version === version);
  }

  async getAlias(name: string, alias: string): Promise<number | undefined> {
    this.#check();
    return this.aliases.get(`${name}/${alias}`);
  }

  async listVersions(name: string): Promise<ModelVersion[]> {
    this.#check();
    return [...(this.versions.get(name) ?? [])];
  }

  async getModel(name: string): Promise<ModelEntries> {
    this.#check();
    const prefix = `${name}/`;
    const aliases = [...this.aliases].filter(([key]) => key.startsWith(prefix));
    return {
      versions: [...(this.versions.get(name) ?? [])],
      aliases: new Map(aliases.map(([key, version]) => [key.slice(prefix.length), version])),
    };
  }

  async listModels(): Promise<ModelSummary[]> {
    this.#check();
    return [...this.versions].map(([name, records]) => ({
      name,
      versions: records.map((record) => record.version),
    }));
  }

  #check(): void {
    if (this.failure) throw this.failure;
  }
}

/** A request through the deployed API's `/{proxy+}` resource, presenting the inference key. */
function proxyEvent(
  method: string,
  path: string,
  options: { body?: string | Uint8Array; base64?: boolean; headers?: Record<string, string> } = {},
): APIGatewayProxyEvent {
  return restProxyEvent({
    method,
    path,
    resource: "/{proxy+}",
    ...options,
    headers: { "x-api-key": "inference-key", ...options.headers },
    identity: { apiKeyId: "key-id" },
  });
}

const lambdaContext = () => localLambdaContext(randomUUID(), Date.now());

function irisBody(features: number[][] = [SECRET_FEATURES], extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    inputs: [{ name: "features", shape: [features.length, 4], datatype: "FP32", data: features.flat() }],
    ...extra,
  });
}

const registry = new MemoryRegistry();
const artifacts = new MemoryArtifactSource();
const logger = new CapturingLogger({ serviceName: "maas-inference", logLevel: "DEBUG" });
let cacheDir: string;
let sessions: SessionPool<WorkerSession>;
let handler: ProxyHandler;

/** Stores bytes as an artifact under `key`, as registration and the optimizer do. */
function storeArtifact(key: string, bytes: Uint8Array): ArtifactRef {
  artifacts.objects.set(key, bytes);
  return {
    bucket: BUCKET,
    key,
    sha256: createHash("sha256").update(bytes).digest("hex"),
    bytes: bytes.byteLength,
  };
}

function publish(
  name: string,
  version: number,
  bytes: Uint8Array,
  overrides: Partial<ModelVersion> = {},
  into: MemoryRegistry = registry,
) {
  const key = `models/${name}/${version}/model.onnx`;
  const inspection = inspectModel(bytes);
  into.add({
    name,
    version,
    status: "ready",
    target: "lambda",
    artifact: storeArtifact(key, bytes),
    signature: inspection.signature,
    variants: [],
    createdAt: "2026-04-09T12:00:00.000Z",
    updatedAt: "2026-04-09T12:00:00.000Z",
    ...overrides,
  });
}

interface Call {
  readonly result: APIGatewayProxyResult;
  readonly body: Record<string, unknown>;
  /** The "request" log entries this call wrote. */
  readonly requests: Record<string, unknown>[];
  readonly context: Context;
}

async function call(event: APIGatewayProxyEvent): Promise<Call> {
  logger.lines.length = 0;
  const context = lambdaContext();
  const result = await handler(event, context);
  // The access log line follows the response (see the handler).
  await new Promise((written) => setImmediate(written));
  return {
    result,
    // A binary response (base64) is read by the test that asked for it.
    body: (result.isBase64Encoded ? {} : JSON.parse(result.body)) as Record<string, unknown>,
    requests: logger.lines.filter((line) => line.message === "request"),
    context,
  };
}

beforeAll(async () => {
  cacheDir = await mkdtemp(join(tmpdir(), "maas-handler-"));
  const iris = buildIrisModel();
  publish("iris", 1, iris);
  publish("iris", 2, iris, { status: "registering" });
  publish("iris", 3, iris, { status: "failed", reason: "the model uses opset 99, newer than this runtime" });
  registry.aliases.set("iris/stable", 1);
  publish("fixed", 1, buildFixedShapeModel());
  publish("large", 1, buildFixedShapeModel(), { target: "sagemaker" });

  sessions = new SessionPool<WorkerSession>({
    create: (artifact) => WorkerSession.open(artifact, sessionOptions(1)),
    maxSessions: 4,
    maxBytes: 64 * 1024 * 1024,
    retryAfterMs: 1_000,
  });
  const runner = new OnnxRunner(
    new ServingArtifacts(
      new ArtifactCache({ source: artifacts, directory: cacheDir, maxBytes: 64 * 1024 * 1024 }),
    ),
    sessions,
  );
  service = new InferenceService({
    registry,
    runners: { lambda: runner },
    server: { name: "serverless-maas", version: "9.9.9" },
  });
  handler = createInferenceHandler(service, logger);
});

let service: InferenceService;

afterAll(async () => {
  await sessions?.close();
  if (cacheDir) await rm(cacheDir, { recursive: true, force: true });
});

beforeEach(() => {
  registry.failure = undefined;
});

describe("inference handler: health and metadata routes", () => {
  it("answers server metadata on GET /v2", async () => {
    const { result, body } = await call(proxyEvent("GET", "/v2"));

    expect(result.statusCode).toBe(200);
    expect(result.headers).toMatchObject({ "content-type": "application/json" });
    expect(body).toEqual({
      name: "serverless-maas",
      version: "9.9.9",
      extensions: ["model_repository", "binary_tensor_data"],
    });
  });

  it("answers live and ready", async () => {
    const live = await call(proxyEvent("GET", "/v2/health/live"));
    const ready = await call(proxyEvent("GET", "/v2/health/ready"));

    expect([live.result.statusCode, live.body]).toEqual([200, { live: true }]);
    expect([ready.result.statusCode, ready.body]).toEqual([200, { ready: true }]);
  });

  it("answers 503 on ready while the registry is unreachable", async () => {
    registry.failure = new Error("connect ECONNREFUSED 10.0.0.1:443");

    const { result, body } = await call(proxyEvent("GET", "/v2/health/ready"));

    expect(result.statusCode).toBe(503);
    expect(body).toEqual({ error: "the model registry is unreachable" });
  });

  it("lists every model with its versions", async () => {
    const { result, body } = await call(proxyEvent("GET", "/v2/models"));

    expect(result.statusCode).toBe(200);
    expect(body).toEqual({
      models: [
        { name: "iris", versions: ["1", "2", "3"] },
        { name: "fixed", versions: ["1"] },
        { name: "large", versions: ["1"] },
      ],
    });
  });

  it("describes a model unversioned with only its servable versions", async () => {
    const { result, body } = await call(proxyEvent("GET", "/v2/models/iris"));

    expect(result.statusCode).toBe(200);
    expect(body).toEqual({
      name: "iris",
      versions: ["1"],
      platform: "onnxruntime_onnx",
      inputs: [{ name: "features", datatype: "FP32", shape: [-1, 4] }],
      outputs: [
        { name: "probabilities", datatype: "FP32", shape: [-1, 3] },
        { name: "label", datatype: "BYTES", shape: [-1] },
      ],
      parameters: { variant: "original" },
    });
  });

  it("describes a version and an alias", async () => {
    const byNumber = await call(proxyEvent("GET", "/v2/models/fixed/versions/1"));
    const byAlias = await call(proxyEvent("GET", "/v2/models/iris/versions/stable"));

    expect(byNumber.result.statusCode).toBe(200);
    expect(byNumber.body).toMatchObject({
      name: "fixed",
      versions: ["1"],
      inputs: [{ name: "x", datatype: "FP32", shape: [2, 3] }],
    });
    expect(byAlias.result.statusCode).toBe(200);
    expect(byAlias.body).toMatchObject({ name: "iris", versions: ["1"] });
  });

  it("reports readiness of a model, a version and an alias", async () => {
    const unversioned = await call(proxyEvent("GET", "/v2/models/iris/ready"));
    const versioned = await call(proxyEvent("GET", "/v2/models/fixed/versions/1/ready"));
    const aliased = await call(proxyEvent("GET", "/v2/models/iris/versions/stable/ready"));

    expect([unversioned.result.statusCode, unversioned.body]).toEqual([
      200,
      { name: "iris", version: "1", ready: true },
    ]);
    expect([versioned.result.statusCode, versioned.body]).toEqual([
      200,
      { name: "fixed", version: "1", ready: true },
    ]);
    expect([aliased.result.statusCode, aliased.body]).toEqual([
      200,
      { name: "iris", version: "1", ready: true },
    ]);
  });

  it("answers HEAD like GET", async () => {
    const { result, body } = await call(proxyEvent("HEAD", "/v2/models/iris/ready"));

    expect(result.statusCode).toBe(200);
    expect(body).toEqual({ name: "iris", version: "1", ready: true });
  });
});

describe("inference handler: infer", () => {
  it("infers with the backend and version headers and echoes the id", async () => {
    const { result, body } = await call(
      proxyEvent("POST", "/v2/models/iris/versions/1/infer", { body: irisBody(undefined, { id: "abc" }) }),
    );

    expect(result.statusCode).toBe(200);
    expect(result.headers).toEqual({
      "content-type": "application/json",
      "x-maas-backend": "lambda",
      "x-maas-model-version": "1",
      "x-maas-variant": "original",
    });
    expect(body).toMatchObject({ model_name: "iris", model_version: "1", id: "abc" });
    expect(body.outputs).toEqual([
      {
        name: "probabilities",
        datatype: "FP32",
        shape: [1, 3],
        data: [expect.any(Number), expect.any(Number), expect.any(Number)],
      },
      {
        name: "label",
        datatype: "BYTES",
        shape: [1],
        data: [expect.stringMatching(/^(setosa|versicolor|virginica)$/)],
      },
    ]);
  });

  it("infers unversioned and through an alias", async () => {
    const unversioned = await call(proxyEvent("POST", "/v2/models/iris/infer", { body: irisBody() }));
    const aliased = await call(
      proxyEvent("POST", "/v2/models/iris/versions/stable/infer", { body: irisBody() }),
    );

    expect(unversioned.result.statusCode).toBe(200);
    expect(unversioned.result.headers?.["x-maas-model-version"]).toBe("1");
    expect(aliased.result.statusCode).toBe(200);
    expect(aliased.body.outputs).toEqual(unversioned.body.outputs);
  });

  it("decodes a base64-encoded body", async () => {
    const plain = await call(proxyEvent("POST", "/v2/models/fixed/infer", { body: fixedBody() }));
    const encoded = await call(
      proxyEvent("POST", "/v2/models/fixed/infer", { body: fixedBody(), base64: true }),
    );

    expect(encoded.result.statusCode).toBe(200);
    expect(encoded.body).toEqual(plain.body);
    expect(encoded.body.outputs).toEqual([
      { name: "y", datatype: "FP32", shape: [2, 3], data: [2, 4, 6, 8, 10, 12] },
    ]);
  });

  it("reads binary tensor data and answers in binary, whatever the header's case", async () => {
    const header = Buffer.from(
      JSON.stringify({
        inputs: [{ name: "x", shape: [2, 3], datatype: "FP32", parameters: { binary_data_size: 24 } }],
        parameters: { binary_data_output: true },
      }),
    );
    const body = Buffer.concat([header, Buffer.from(Float32Array.of(1, 2, 3, 4, 5, 6).buffer)]);
    for (const name of ["inference-header-content-length", "Inference-Header-Content-Length"]) {
      const { result } = await call(
        proxyEvent("POST", "/v2/models/fixed/infer", {
          body,
          base64: true,
          headers: { [name]: String(header.length) },
        }),
      );

      expect(result.statusCode, result.body).toBe(200);
      expect(result.isBase64Encoded).toBe(true);
      expect(result.headers?.["content-type"]).toBe("application/octet-stream");
      const bytes = Buffer.from(result.body, "base64");
      const headerLength = Number(result.headers?.["inference-header-content-length"]);
      expect(JSON.parse(bytes.toString("utf8", 0, headerLength))).toMatchObject({
        outputs: [{ name: "y", datatype: "FP32", shape: [2, 3], parameters: { binary_data_size: 24 } }],
      });
      const data = bytes.subarray(headerLength);
      expect(Array.from(new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + 24)))).toEqual([
        2, 4, 6, 8, 10, 12,
      ]);
    }
  });

  it("answers a caller's mistake with a 400 naming it", async () => {
    const { result, body } = await call(
      proxyEvent("POST", "/v2/models/fixed/infer", {
        body: JSON.stringify({ inputs: [{ name: "x", shape: [1, 3], datatype: "FP32", data: [1, 2, 3] }] }),
      }),
    );

    expect(result.statusCode).toBe(400);
    expect(body).toEqual({ error: "input 'x' has shape [1, 3] but the model expects [2, 3]" });
  });

  it("answers 400 for an empty body", async () => {
    const { result, body } = await call(proxyEvent("POST", "/v2/models/iris/infer"));

    expect(result.statusCode).toBe(400);
    expect(body).toEqual({ error: "request body is empty; send a V2 infer request as JSON" });
  });
});

function fixedBody(): string {
  return JSON.stringify({
    inputs: [{ name: "x", shape: [2, 3], datatype: "FP32", data: [1, 2, 3, 4, 5, 6] }],
  });
}

describe("inference handler: versions that cannot serve", () => {
  it("answers 503 for a version still registering", async () => {
    const infer = await call(proxyEvent("POST", "/v2/models/iris/versions/2/infer", { body: irisBody() }));
    const ready = await call(proxyEvent("GET", "/v2/models/iris/versions/2/ready"));

    expect(infer.result.statusCode).toBe(503);
    expect(infer.body).toEqual({ error: "model 'iris' version 2 is registering; retry shortly" });
    expect(ready.result.statusCode).toBe(503);
  });

  it("answers 503 with the recorded reason for a version that failed", async () => {
    const { result, body } = await call(
      proxyEvent("POST", "/v2/models/iris/versions/3/infer", { body: irisBody() }),
    );

    expect(result.statusCode).toBe(503);
    expect(body).toEqual({
      error: "model 'iris' version 3 failed to register: the model uses opset 99, newer than this runtime",
    });
  });

  it("answers 503 for a SageMaker version when no SageMaker runner is configured", async () => {
    const infer = await call(proxyEvent("POST", "/v2/models/large/infer", { body: fixedBody() }));
    const ready = await call(proxyEvent("GET", "/v2/models/large/ready"));

    expect(infer.result.statusCode).toBe(503);
    expect(infer.body).toEqual({
      error: "model 'large' version 1 is served by sagemaker, which this deployment has not configured",
    });
    expect(ready.result.statusCode).toBe(503);
  });
});

describe("inference handler: routing errors", () => {
  it.each([
    ["GET", "/v3", 404, "no route for GET /v3"],
    ["GET", "/v2/models/nope", 404, "model 'nope' not found"],
    ["GET", "/v2/models/iris/versions/9", 404, "model 'iris' has no version 9"],
    ["POST", "/v2/models/iris/versions/canary/infer", 404, "model 'iris' has no version or alias 'canary'"],
    [
      "GET",
      "/v2/models/Not_Valid",
      404,
      "model 'Not_Valid' not found: names are 1-64 lower-case letters, digits, '-', '_' or '.'",
    ],
  ])("answers %s %s with %i", async (method, path, status, message) => {
    const { result, body } = await call(
      proxyEvent(method, path, { body: method === "POST" ? irisBody() : undefined }),
    );

    expect(result.statusCode).toBe(status);
    expect(body).toEqual({ error: message });
  });

  it("answers a wrong method with 405 and an allow header", async () => {
    const post = await call(proxyEvent("POST", "/v2/health/live", { body: "{}" }));
    const head = await call(proxyEvent("HEAD", "/v2/models/iris/infer"));

    expect(post.result.statusCode).toBe(405);
    expect(post.result.headers).toMatchObject({ allow: "GET" });
    expect(post.body).toEqual({ error: "POST is not allowed on /v2/health/live; use GET" });
    expect(head.result.statusCode).toBe(405);
    expect(head.result.headers).toMatchObject({ allow: "POST" });
  });
});

describe("inference handler: unexpected failures and logs", () => {
  it("answers 500 'internal error' without a stack trace when the registry throws", async () => {
    registry.failure = new Error("ProvisionedThroughputExceededException: rate exceeded");

    const infer = await call(proxyEvent("POST", "/v2/models/iris/infer", { body: irisBody() }));
    const list = await call(proxyEvent("GET", "/v2/models"));

    expect(infer.result.statusCode).toBe(500);
    expect(infer.result.body).toBe('{"error":"internal error"}');
    expect(list.result.statusCode).toBe(500);
    expect(list.result.body).toBe('{"error":"internal error"}');
    const logged = logger.lines.find((line) => line.message === "unhandled error");
    expect(JSON.stringify(logged)).toContain("rate exceeded");
  });

  it("logs one request entry with model, version, status and latency, and no tensor data", async () => {
    const { requests, context } = await call(
      proxyEvent("POST", "/v2/models/iris/versions/1/infer", { body: irisBody([SECRET_FEATURES]) }),
    );

    expect(requests).toHaveLength(1);
    expect(requests[0]).toMatchObject({
      level: "INFO",
      message: "request",
      method: "POST",
      path: "/v2/models/iris/versions/1/infer",
      model: "iris",
      version: 1,
      backend: "lambda",
      variant: "original",
      status: 200,
      latencyMs: expect.any(Number),
      function_request_id: context.awsRequestId,
    });
    const text = JSON.stringify(logger.lines);
    for (const value of SECRET_FEATURES) expect(text).not.toContain(String(value));
    expect(text).not.toMatch(/setosa|versicolor|virginica|probabilities/);
  });

  it("writes the request line after the response is handed back, before the next event can arrive", async () => {
    logger.lines.length = 0;
    const context = lambdaContext();
    await handler(proxyEvent("GET", "/v2/health/live"), context);
    expect(logger.lines.filter((line) => line.message === "request")).toEqual([]);

    await new Promise((written) => setImmediate(written));
    expect(logger.lines.filter((line) => line.message === "request")).toMatchObject([
      { status: 200, function_request_id: context.awsRequestId },
    ]);
  });

  it("logs one request entry for every call, failures included", async () => {
    const events = [
      proxyEvent("GET", "/v2/health/live"),
      proxyEvent("GET", "/v3"),
      proxyEvent("POST", "/v2/models/iris/infer", { body: "{not json" }),
      proxyEvent("POST", "/v2/models/iris/versions/2/infer", { body: irisBody() }),
    ];

    const calls = [];
    for (const event of events) calls.push(await call(event));

    expect(calls.map((each) => each.requests.length)).toEqual([1, 1, 1, 1]);
    expect(calls.map((each) => each.requests[0]?.status)).toEqual([200, 404, 400, 503]);
    expect(calls.map((each) => typeof each.requests[0]?.latencyMs)).toEqual([
      "number",
      "number",
      "number",
      "number",
    ]);
    expect(calls[2]?.requests[0]).toMatchObject({ model: "iris", status: 400 });
    expect(calls[3]?.requests[0]).toMatchObject({ model: "iris", status: 503 });
  });
});

/** y = factor * x over a fixed [2, 3] input: the factor tells which artifact answered. */
function scaleModel(factor: number): Uint8Array {
  return encodeModel({
    graphName: `scale_${factor}`,
    inputs: [{ name: "x", elemType: ElemType.FLOAT, dims: [2, 3] }],
    outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: [2, 3] }],
    initializers: [floatTensor("factor", [], Float32Array.of(factor))],
    nodes: [{ opType: "Mul", inputs: ["x", "factor"], outputs: ["y"] }],
  });
}

describe("inference handler: the variant that answered", () => {
  const variants = new MemoryRegistry();
  let variantHandler: ProxyHandler;
  const answered = async (event: APIGatewayProxyEvent, on: ProxyHandler = variantHandler) => {
    logger.lines.length = 0;
    const result = await on(event, lambdaContext());
    await new Promise((written) => setImmediate(written));
    return {
      result,
      // A binary response (base64) is read by the test that asked for it.
      body: (result.isBase64Encoded ? {} : JSON.parse(result.body)) as Record<string, unknown>,
      log: logger.lines.find((line) => line.message === "request"),
    };
  };
  /** The optimizer's record of an original that doubles and a variant (tripling, to tell them apart). */
  const optimized = (name: string, selected: string, variant: Partial<Variant> = {}): Variant[] => {
    const original = scaleModel(2);
    return [
      {
        kind: "original",
        bytes: original.byteLength,
        selected: selected === "original",
        artifact: storeArtifact(`models/${name}/1/model.onnx`, original),
      },
      {
        kind: "int8-dynamic",
        bytes: 200,
        selected: selected === "int8-dynamic",
        artifact: storeArtifact(`artifacts/${name}-int8.onnx`, scaleModel(3)),
        ...variant,
      },
    ];
  };

  beforeAll(() => {
    publish("chosen", 1, scaleModel(2), { variants: optimized("chosen", "int8-dynamic") }, variants);
    publish("unchosen", 1, scaleModel(2), { variants: optimized("unchosen", "original") }, variants);
    const { artifact: _unbuilt, ...unbuilt } = optimized("unbuilt", "int8-dynamic")[1]!;
    publish("unbuilt", 1, scaleModel(2), { variants: [unbuilt] }, variants);
    const iris = inspectModel(buildIrisModel()).signature;
    const labels = ["setosa", "versicolor", "virginica"];
    const outputs = iris.outputs.map((output) =>
      output.name === "probabilities" ? { ...output, classLabels: labels } : output,
    );
    publish("labelled", 1, buildIrisModel(), { signature: { ...iris, outputs } }, variants);
    const runner = new OnnxRunner(
      new ServingArtifacts(
        new ArtifactCache({
          source: artifacts,
          directory: join(cacheDir, "variants"),
          maxBytes: 1024 * 1024,
        }),
      ),
      sessions,
    );
    variantHandler = createInferenceHandler(
      new InferenceService({
        registry: variants,
        runners: { lambda: runner },
        server: service.serverMetadata(),
      }),
      logger,
    );
  });

  it("names the selected variant in x-maas-variant and the access log, and it is the variant that ran", async () => {
    const chosen = await answered(proxyEvent("POST", "/v2/models/chosen/infer", { body: fixedBody() }));
    const unchosen = await answered(proxyEvent("POST", "/v2/models/unchosen/infer", { body: fixedBody() }));

    expect(chosen.result.statusCode).toBe(200);
    expect(chosen.result.headers).toMatchObject({
      "x-maas-backend": "lambda",
      "x-maas-variant": "int8-dynamic",
    });
    expect(chosen.body.outputs).toMatchObject([{ name: "y", data: [3, 6, 9, 12, 15, 18] }]);
    expect(chosen.log).toMatchObject({ model: "chosen", variant: "int8-dynamic" });
    expect(unchosen.result.headers).toMatchObject({ "x-maas-variant": "original" });
    expect(unchosen.body.outputs).toMatchObject([{ name: "y", data: [2, 4, 6, 8, 10, 12] }]);
  });

  it("names the original when the selected variant has no artifact, as the original then serves", async () => {
    const { result, body } = await answered(
      proxyEvent("POST", "/v2/models/unbuilt/infer", { body: fixedBody() }),
    );

    expect(result.headers).toMatchObject({ "x-maas-variant": "original" });
    expect(body.outputs).toMatchObject([{ name: "y", data: [2, 4, 6, 8, 10, 12] }]);
  });

  it("leaves x-maas-variant off error responses", async () => {
    const { result } = await answered(proxyEvent("POST", "/v2/models/chosen/infer", { body: "{}" }));

    expect(result.statusCode).toBe(400);
    expect(result.headers?.["x-maas-variant"]).toBeUndefined();
  });

  it("gives the serving variant in the metadata parameters, with the class labels of labelled outputs", async () => {
    const chosen = await answered(proxyEvent("GET", "/v2/models/chosen/versions/1"));
    const labelled = await answered(proxyEvent("GET", "/v2/models/labelled"));

    expect(chosen.body.parameters).toEqual({ variant: "int8-dynamic" });
    expect(labelled.body.outputs).toEqual([
      { name: "probabilities", datatype: "FP32", shape: [-1, 3] },
      { name: "label", datatype: "BYTES", shape: [-1] },
    ]);
    expect(labelled.body.parameters).toEqual({
      variant: "original",
      class_labels: { probabilities: ["setosa", "versicolor", "virginica"] },
    });
  });

  it("names the original on SageMaker, whose endpoint serves the upload's archive whatever the record selects", async () => {
    const sagemaker = mockClient(SageMakerRuntimeClient);
    sagemaker.on(InvokeEndpointCommand).resolves({
      Body: new TextEncoder().encode(
        JSON.stringify({
          outputs: [{ name: "y", datatype: "FP32", shape: [2, 3], data: [2, 4, 6, 8, 10, 12] }],
        }),
      ) as never,
    });
    const gpu = new MemoryRegistry();
    publish(
      "gpu",
      1,
      scaleModel(2),
      { target: "sagemaker", variants: optimized("gpu", "int8-dynamic") },
      gpu,
    );
    const onSageMaker = createInferenceHandler(
      new InferenceService({
        registry: gpu,
        runners: {
          sagemaker: new SageMakerRunner({
            client: new SageMakerRuntimeClient({ region: "us-east-1" }),
            endpointName: "maas-gpu",
          }),
        },
        server: service.serverMetadata(),
      }),
      logger,
    );

    try {
      const inferred = await answered(
        proxyEvent("POST", "/v2/models/gpu/infer", { body: fixedBody() }),
        onSageMaker,
      );
      const metadata = await answered(proxyEvent("GET", "/v2/models/gpu"), onSageMaker);

      expect(inferred.result.statusCode).toBe(200);
      expect(inferred.result.headers).toMatchObject({
        "x-maas-backend": "sagemaker",
        "x-maas-model-version": "1",
        "x-maas-variant": "original",
      });
      expect(metadata.body.parameters).toEqual({ variant: "original" });
    } finally {
      sagemaker.restore();
    }
  });
});

describe("inference handler: CORS", () => {
  it("allows a configured origin and names Origin in Vary", async () => {
    const cors = createInferenceHandler(service, logger, { corsOrigins: ["https://app.example.com"] });

    const allowed = await cors(
      proxyEvent("GET", "/v2/models/iris", { headers: { Origin: "https://app.example.com" } }),
      lambdaContext(),
    );
    const other = await cors(
      proxyEvent("GET", "/v2/models/iris", { headers: { Origin: "https://evil.example.com" } }),
      lambdaContext(),
    );

    expect(allowed.headers).toMatchObject({
      "access-control-allow-origin": "https://app.example.com",
      vary: "Origin",
    });
    expect(other.headers?.["access-control-allow-origin"]).toBeUndefined();
    expect(other.headers).toMatchObject({ vary: "Origin" });
  });

  it("adds no CORS headers when no origin is configured", async () => {
    const { result } = await call(
      proxyEvent("GET", "/v2/models/iris", { headers: { Origin: "https://a.example" } }),
    );

    expect(result.headers?.["access-control-allow-origin"]).toBeUndefined();
  });
});

describe("inference service: preload", () => {
  it("loads each named model's serving version and reports the ones that cannot load", async () => {
    const outcomes = await service.preload(["fixed", "missing"]);

    expect(outcomes[0]).toEqual({ name: "fixed", version: 1 });
    expect(outcomes[1]).toMatchObject({ name: "missing", error: expect.stringMatching(/not found/) });
  });
});

describe("inference handler: metrics", () => {
  class CapturingSink implements MetricsSink {
    readonly records: InferenceMetric[] = [];
    record(metric: Readonly<InferenceMetric>): void {
      this.records.push({ ...metric });
    }
  }

  const metered = buildMlpModel({ layers: [4, 3], seed: 11, name: "metered" });
  const meteredBody = JSON.stringify({
    inputs: [{ name: "input", shape: [2, 4], datatype: "FP32", data: [1, 2, 3, 4, 5, 6, 7, 8] }],
  });
  let sink: CapturingSink;
  let statistics: InferenceStatistics;
  let metering: ProxyHandler;

  beforeAll(() => {
    publish("metered", 1, metered);
    sink = new CapturingSink();
    statistics = new InferenceStatistics();
    metering = createInferenceHandler(service, logger, { metrics: sink, statistics });
  });

  /** Calls the metering handler; `recordedBeforeReturn` is what the sink had when the response came back. */
  async function meter(event: APIGatewayProxyEvent) {
    sink.records.length = 0;
    const result = await metering(event, lambdaContext());
    const recordedBeforeReturn = sink.records.length;
    await new Promise((recorded) => setImmediate(recorded));
    return { result, recordedBeforeReturn, records: [...sink.records] };
  }

  it("records a success once its response is returned, with its version, phases, rows and bytes", async () => {
    const first = await meter(proxyEvent("POST", "/v2/models/metered/infer", { body: meteredBody }));
    const second = await meter(proxyEvent("POST", "/v2/models/metered/infer", { body: meteredBody }));

    expect(first.result.statusCode).toBe(200);
    expect(first.recordedBeforeReturn).toBe(0);
    expect(first.records).toHaveLength(1);
    const [loaded] = first.records as [InferenceMetric];
    expect(loaded).toMatchObject({
      model: "metered",
      version: 1,
      backend: "lambda",
      outcome: "success",
      reason: undefined,
      batchSize: 2,
      coldStart: true,
      requestBytes: Buffer.byteLength(meteredBody),
      responseBytes: Buffer.byteLength(first.result.body),
    });
    for (const phase of ["registryUs", "inputDecodeUs", "inferUs", "outputEncodeUs"] as const)
      expect(loaded[phase], phase).toBeGreaterThan(0);
    // The first request loaded the model; the second found its session.
    expect(loaded.artifactFetchUs).toBeGreaterThan(0);
    expect(loaded.sessionCreateUs).toBeGreaterThan(0);
    expect(
      loaded.registryUs +
        loaded.inputDecodeUs +
        loaded.artifactFetchUs +
        loaded.sessionCreateUs +
        loaded.queueUs +
        loaded.inferUs +
        loaded.outputEncodeUs,
    ).toBeLessThanOrEqual(loaded.totalUs);
    expect(loaded.timestamp).toBeGreaterThan(0);
    const [warm] = second.records as [InferenceMetric];
    expect(second.recordedBeforeReturn).toBe(0);
    expect(warm).toMatchObject({ model: "metered", outcome: "success", coldStart: false });
    expect([warm.artifactFetchUs, warm.sessionCreateUs]).toEqual([0, 0]);
    expect(warm.queueUs).toBeGreaterThanOrEqual(0);
  });

  it("records a failure once its response is returned, with its reason and the version it resolved", async () => {
    const wrongShape = JSON.stringify({
      inputs: [{ name: "input", shape: [1, 3], datatype: "FP32", data: [1, 2, 3] }],
    });

    const { result, recordedBeforeReturn, records } = await meter(
      proxyEvent("POST", "/v2/models/metered/versions/1/infer", { body: wrongShape }),
    );

    expect(result.statusCode).toBe(400);
    expect(recordedBeforeReturn).toBe(0);
    expect(records).toEqual([
      expect.objectContaining({
        model: "metered",
        version: 1,
        backend: "lambda",
        outcome: "failure",
        reason: "caller_error",
        requestBytes: Buffer.byteLength(wrongShape),
        responseBytes: Buffer.byteLength(result.body),
      }),
    ]);
    expect(records[0]?.totalUs).toBeGreaterThan(0);
  });

  it("records a failed version's 503 against that version, and an unknown model's 404 without a model", async () => {
    const failed = await meter(proxyEvent("POST", "/v2/models/iris/versions/3/infer", { body: irisBody() }));
    const unknown = await meter(proxyEvent("POST", "/v2/models/nope/infer", { body: irisBody() }));

    expect(failed.result.statusCode).toBe(503);
    expect(failed.records).toEqual([
      expect.objectContaining({ model: "iris", version: 3, outcome: "failure", reason: "not_ready" }),
    ]);
    expect(unknown.result.statusCode).toBe(404);
    expect(unknown.records).toEqual([
      expect.objectContaining({ model: undefined, version: undefined, reason: "caller_error" }),
    ]);
  });

  it("records no metric for other routes", async () => {
    const metadata = await meter(proxyEvent("GET", "/v2/models/metered"));
    const ready = await meter(proxyEvent("GET", "/v2/models/metered/ready"));

    expect([metadata.result.statusCode, ready.result.statusCode]).toEqual([200, 200]);
    expect([...metadata.records, ...ready.records]).toEqual([]);
  });

  it("answers the statistics extension from what it recorded, and lists it in server metadata", async () => {
    const counted = createInferenceHandler(service, logger, { statistics: new InferenceStatistics() });
    const send = async (event: APIGatewayProxyEvent) => {
      const result = await counted(event, lambdaContext());
      await new Promise((recorded) => setImmediate(recorded));
      return result;
    };
    const wrongShape = JSON.stringify({
      inputs: [{ name: "input", shape: [1, 3], datatype: "FP32", data: [1, 2, 3] }],
    });
    await send(proxyEvent("POST", "/v2/models/metered/infer", { body: meteredBody }));
    await send(proxyEvent("POST", "/v2/models/metered/versions/1/infer", { body: meteredBody }));
    await send(proxyEvent("POST", "/v2/models/metered/infer", { body: wrongShape }));
    await send(proxyEvent("POST", "/v2/models/iris/versions/3/infer", { body: irisBody() }));

    const version = await send(proxyEvent("GET", "/v2/models/metered/versions/1/stats"));
    const model = await send(proxyEvent("GET", "/v2/models/iris/stats"));
    const unknown = await send(proxyEvent("GET", "/v2/models/nope/stats"));
    const server = await send(proxyEvent("GET", "/v2"));
    const without = await call(proxyEvent("GET", "/v2/models/metered/versions/1/stats"));

    expect(version.statusCode).toBe(200);
    const stats = JSON.parse(version.body) as { model_stats: Record<string, unknown>[] };
    expect(stats.model_stats).toHaveLength(1);
    expect(stats.model_stats[0]).toMatchObject({
      name: "metered",
      version: "1",
      inference_count: 4,
      execution_count: 2,
      inference_stats: { success: { count: 2 }, fail: { count: 1 }, cache_hit: { count: 0, ns: 0 } },
      batch_stats: [],
    });
    const modelStats = JSON.parse(model.body) as {
      model_stats: { version: string; inference_stats: unknown }[];
    };
    expect(modelStats.model_stats.map((stat) => stat.version)).toEqual(["1", "2", "3"]);
    expect(modelStats.model_stats[2]?.inference_stats).toMatchObject({ fail: { count: 1 } });
    expect(unknown.statusCode).toBe(404);
    expect((JSON.parse(server.body) as { extensions: string[] }).extensions).toContain("statistics");
    // A handler that keeps no statistics says so.
    expect(without.result.statusCode).toBe(501);
  });

  it("answers its request whatever a sink throws", async () => {
    const throwing = createInferenceHandler(service, logger, {
      metrics: {
        record: () => {
          throw new Error("sink down");
        },
      },
    });

    const result = await throwing(
      proxyEvent("POST", "/v2/models/metered/infer", { body: meteredBody }),
      lambdaContext(),
    );
    await new Promise((recorded) => setImmediate(recorded));

    expect(result.statusCode).toBe(200);
  });
});
