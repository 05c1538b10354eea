import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Logger } from "@aws-lambda-powertools/logger";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { OnnxRunner } from "#aws/onnx/runner.ts";
import type { SessionPool } from "#aws/onnx/session-pool.ts";
import type { WorkerSession } from "#aws/onnx/worker-session.ts";
import type { ModelVersion, ServableVersion } from "#core/model.ts";
import type { ModelEntries, ModelRegistry, ModelSummary } from "#core/registry/registry.ts";
import type { ModelRunner } from "#core/runner.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import { InferenceService } from "#core/v2/inference-service.ts";
import { inferResponseJson } from "#core/v2/tensor-codec.ts";
import { loadInferenceConfig } from "#lambdas/inference/config.ts";
import { createInferenceHandler, type ProxyHandler } from "#lambdas/inference/handler.ts";
import { lambdaContext } from "../../local/gateway.ts";
import { ElemType, encodeModel, floatTensor, int64Tensor } from "../../models/onnx-builder.ts";
import { proxyEvent } from "../infra/events.ts";
import { validAddModel } from "../support/crafted-models.ts";
import { MemoryArtifactSource, storedVersion, workerRunner } from "../support/memory-parts.ts";

const LIMIT = 10_000;
const LIMIT_TEXT = `the response limit of ${LIMIT} bytes (MAAS_MAX_RESPONSE_BYTES)`;

/** y = ConstantOfShape(shape) filled with 0.123456: the caller's values choose the output's size. */
function constantOfShapeModel(): Uint8Array {
  return encodeModel({
    graphName: "fill",
    inputs: [{ name: "shape", elemType: ElemType.INT64, dims: [2] }],
    outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: ["rows", "cols"] }],
    nodes: [
      {
        opType: "ConstantOfShape",
        inputs: ["shape"],
        outputs: ["y"],
        attributes: { value: { tensor: floatTensor("value", [1], Float32Array.of(0.123456)) } },
      },
    ],
  });
}

/** y = Expand(x, [100, 100]): a static [100, 100] output, 20 000 bytes of JSON at the least. */
function staticExpandModel(): Uint8Array {
  return encodeModel({
    graphName: "expand",
    inputs: [{ name: "x", elemType: ElemType.FLOAT, dims: [1] }],
    outputs: [{ name: "y", elemType: ElemType.FLOAT, dims: [100, 100] }],
    initializers: [int64Tensor("target", [2], [100n, 100n])],
    nodes: [{ opType: "Expand", inputs: ["x", "target"], outputs: ["y"] }],
  });
}

class MemoryRegistry implements ModelRegistry {
  readonly records = new Map<string, ModelVersion>();

  async getVersion(name: string, version: number) {
    const record = this.records.get(name);
    return record?.version === version ? record : undefined;
  }
  async getAlias(): Promise<number | undefined> {
    return undefined;
  }
  async listVersions(name: string): Promise<ModelVersion[]> {
    const record = this.records.get(name);
    return record === undefined ? [] : [record];
  }
  async getModel(name: string): Promise<ModelEntries> {
    return { versions: await this.listVersions(name), aliases: new Map() };
  }
  async listModels(): Promise<ModelSummary[]> {
    return [...this.records.values()].map((record) => ({ name: record.name, versions: [record.version] }));
  }
}

/** onnxruntime's runner, counting the runs that reached it. */
class CountingRunner implements ModelRunner {
  readonly backend = "lambda" as const;
  runs = 0;

  constructor(readonly inner: OnnxRunner) {}

  run(version: ServableVersion, inputs: readonly NamedTensor[], outputs: readonly string[]) {
    this.runs++;
    return this.inner.run(version, inputs, outputs);
  }
}

const registry = new MemoryRegistry();
const artifacts = new MemoryArtifactSource();
let cacheDir: string;
let sessions: SessionPool<WorkerSession>;
let runner: CountingRunner;
let handler: ProxyHandler;

function publish(name: string, bytes: Uint8Array): void {
  registry.records.set(name, storedVersion(artifacts, name, bytes));
}

async function infer(model: string, inputs: unknown[]) {
  const result = await handler(
    proxyEvent({
      method: "POST",
      path: `/v2/models/${model}/infer`,
      resource: "/{proxy+}",
      body: JSON.stringify({ inputs }),
      headers: { "x-api-key": "inference-key" },
      identity: { apiKeyId: "key-id" },
    }),
    lambdaContext(randomUUID(), Date.now()),
  );
  return { status: result.statusCode, body: JSON.parse(result.body) as Record<string, unknown> };
}

beforeAll(async () => {
  cacheDir = await mkdtemp(join(tmpdir(), "maas-response-limit-"));
  publish("fill", constantOfShapeModel());
  publish("expand", staticExpandModel());
  publish("add", validAddModel());
  const parts = workerRunner(artifacts, cacheDir);
  sessions = parts.sessions;
  runner = new CountingRunner(parts.runner);
  const service = new InferenceService({
    registry,
    runners: { lambda: runner },
    server: { name: "serverless-maas", version: "9.9.9" },
    maxResponseBytes: LIMIT,
  });
  handler = createInferenceHandler(
    service,
    new Logger({ serviceName: "maas-inference", logLevel: "SILENT" }),
  );
});

afterAll(async () => {
  await sessions?.close();
  if (cacheDir) await rm(cacheDir, { recursive: true, force: true });
});

beforeEach(() => {
  runner.runs = 0;
});

describe("response limit: outputs sized by the caller's values", () => {
  it("refuses with 413 an output whose element count alone passes the limit, before writing it", async () => {
    const { status, body } = await infer("fill", [
      { name: "shape", datatype: "INT64", shape: [2], data: [100, 100] },
    ]);

    expect(status).toBe(413);
    expect(body).toEqual({
      error: `output 'y' has 10000 elements; its JSON would exceed ${LIMIT_TEXT}: request fewer rows, ask for other outputs or for binary outputs (binary_data_output), or submit the request asynchronously (Prefer: respond-async)`,
    });
    expect(runner.runs).toBe(1);
  });

  it("refuses with 413 a response whose written JSON passes the limit", async () => {
    // 2 000 elements take 4 000 bytes at the least, but "0.123456," is 9 each: 18 000 bytes.
    const { status, body } = await infer("fill", [
      { name: "shape", datatype: "INT64", shape: [2], data: [40, 50] },
    ]);

    expect(status).toBe(413);
    expect(String(body.error)).toMatch(
      /^the response's JSON takes at least \d+ bytes by output 'y'; it would exceed/,
    );
    expect(String(body.error)).toContain(LIMIT_TEXT);
  });

  it("answers an output under the limit as before", async () => {
    const { status, body } = await infer("fill", [
      { name: "shape", datatype: "INT64", shape: [2], data: [2, 3] },
    ]);

    expect(status).toBe(200);
    expect(body.outputs).toEqual([
      { name: "y", datatype: "FP32", shape: [2, 3], data: Array.from({ length: 6 }, () => 0.123456) },
    ]);
  });
});

describe("response limit: outputs sized by the signature", () => {
  it("refuses a static-shape output past the limit before the model runs", async () => {
    const { status, body } = await infer("expand", [{ name: "x", datatype: "FP32", shape: [1], data: [1] }]);

    expect(status).toBe(413);
    expect(body.error).toBe(
      `output 'y' has 10000 elements; its JSON would exceed ${LIMIT_TEXT}: request fewer rows, ask for other outputs or for binary outputs (binary_data_output), or submit the request asynchronously (Prefer: respond-async)`,
    );
    expect(runner.runs).toBe(0);
  });

  it("binds a symbolic output dim from the input that shares it, and refuses before running", async () => {
    const rows = 3_000;
    const data = new Array<number>(rows * 2).fill(0);

    const { status, body } = await infer("add", [{ name: "x", datatype: "FP32", shape: [rows, 2], data }]);

    expect(status).toBe(413);
    expect(body.error).toContain(`output 'y' has ${rows * 2} elements`);
    expect(runner.runs).toBe(0);
  });

  it("runs and answers a request whose bound output fits", async () => {
    const { status, body } = await infer("add", [
      { name: "x", datatype: "FP32", shape: [2, 2], data: [0, 0, 1, 1] },
    ]);

    expect(status).toBe(200);
    expect(body.outputs).toEqual([{ name: "y", datatype: "FP32", shape: [2, 2], data: [1, 2, 2, 3] }]);
    expect(runner.runs).toBe(1);
  });
});

describe("response limit: writing and configuration", () => {
  const response = (maxBytes?: number) => ({
    model_name: "m",
    outputs: [{ name: "y", type: "float32" as const, dims: [3], data: Float32Array.of(1, 2, 3) }],
    ...(maxBytes === undefined ? {} : { maxBytes }),
  });

  it("writes the same JSON with or without a limit it stays under", () => {
    expect(inferResponseJson(response(1_000))).toBe(inferResponseJson(response()));
    expect(JSON.parse(inferResponseJson(response(1_000)))).toEqual({
      model_name: "m",
      outputs: [{ name: "y", datatype: "FP32", shape: [3], data: [1, 2, 3] }],
    });
  });

  it("counts UTF-8 bytes, not UTF-16 units, against the limit", () => {
    const wide = { model_name: "模".repeat(20), outputs: [] };
    const units = inferResponseJson(wide).length;

    expect(() => inferResponseJson({ ...wide, maxBytes: units })).toThrow(/the response's JSON is \d+ bytes/);
  });

  it("defaults the limit to Lambda's 6 MB and reads MAAS_MAX_RESPONSE_BYTES", () => {
    const env = { MAAS_REGISTRY_TABLE: "models" };

    expect(loadInferenceConfig(env).MAAS_MAX_RESPONSE_BYTES).toBe(6_291_456);
    expect(loadInferenceConfig({ ...env, MAAS_MAX_RESPONSE_BYTES: "1024" }).MAAS_MAX_RESPONSE_BYTES).toBe(
      1024,
    );
    expect(() => loadInferenceConfig({ ...env, MAAS_MAX_RESPONSE_BYTES: "0" })).toThrow(
      /MAAS_MAX_RESPONSE_BYTES/,
    );
  });
});
