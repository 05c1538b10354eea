import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { errorResponse } from "#aws/lambda/api-gateway.ts";
import type { OnnxRunner } from "#aws/onnx/runner.ts";
import type { SessionPool } from "#aws/onnx/session-pool.ts";
import type { WorkerSession } from "#aws/onnx/worker-session.ts";
import { ModelNotReadyError, RouteNotFoundError } from "#core/errors.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import {
  CapturingLogger,
  MemoryArtifactSource,
  storedVersion,
  workerRunner,
} from "../support/memory-parts.ts";
import { callerReshapeModel, constantOfShapeBombModel, expandBombModel } from "../support/runaway-models.ts";

/** Models whose failing sizes come from a caller's input, as the probe of the local stack found them. */
const shapeFromCaller = {
  reshape: callerReshapeModel(),
  expand: expandBombModel(),
  constantOfShape: constantOfShapeBombModel(),
};

const artifacts = new MemoryArtifactSource();
const logger = new CapturingLogger({ serviceName: "maas-inference", logLevel: "DEBUG" });
let cacheDir: string;
let sessions: SessionPool<WorkerSession>;
let runner: OnnxRunner;

const version = (name: string, bytes: Uint8Array) => storedVersion(artifacts, name, bytes);

const floats = (dims: number[]): NamedTensor => ({
  name: "x",
  type: "float32",
  dims,
  data: new Float32Array(dims.reduce((a, b) => a * b, 1)),
});
const shape = (...values: bigint[]): NamedTensor => ({
  name: "shape",
  type: "int64",
  dims: [values.length],
  data: BigInt64Array.from(values),
});

/** The response the inference API gives for what the real runner threw, and the log lines it wrote. */
async function answerTo(model: keyof typeof shapeFromCaller, inputs: NamedTensor[]) {
  logger.lines.length = 0;
  const error = await runner.run(version(model, shapeFromCaller[model]), inputs, ["y"]).then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeDefined();
  const response = errorResponse(error, logger);
  return { status: response.statusCode, message: (JSON.parse(response.body) as { error: string }).error };
}

function expectNoInternals(message: string): void {
  expect(message).not.toContain("/");
  expect(message).not.toContain(".cc:");
  expect(message).not.toContain(".h:");
  expect(message).not.toContain("onnxruntime::");
  expect(message).not.toContain("\n");
}

beforeAll(async () => {
  cacheDir = await mkdtemp(join(tmpdir(), "maas-ort-errors-"));
  ({ runner, sessions } = workerRunner(artifacts, cacheDir));
});

afterAll(async () => {
  await sessions?.close();
  if (cacheDir) await rm(cacheDir, { recursive: true, force: true });
});

describe("onnxruntime failures caused by the caller's inputs", () => {
  it("answers 400 without source paths for a Reshape to a shape the data cannot fill", async () => {
    const { status, message } = await answerTo("reshape", [floats([2, 3]), shape(-1n, 5n)]);

    expect(status).toBe(400);
    expect(message).toMatch(/^the model rejected the inputs: .*cannot be reshaped.*requested shape:\{-1,5\}/);
    expectNoInternals(message);
  });

  it("answers 400 for a dimension below -1 in a caller's shape", async () => {
    const { status, message } = await answerTo("reshape", [floats([2, 3]), shape(-2n, 3n)]);

    expect(status).toBe(400);
    expect(message).toContain("A dimension cannot be less than -1, got -2");
    expectNoInternals(message);
  });

  it("answers 413 without bfc_arena frames for an Expand to 100000 x 100000", async () => {
    const { status, message } = await answerTo("expand", [floats([1, 1]), shape(100_000n, 100_000n)]);

    expect(status).toBe(413);
    expect(message).toContain("Failed to allocate memory for requested buffer of size 40000000000");
    expect(message).not.toContain("bfc_arena");
    expectNoInternals(message);
  });

  it("answers 413 for a ConstantOfShape of 40 GB", async () => {
    const { status, message } = await answerTo("constantOfShape", [shape(10_000n, 10_000n, 100n)]);

    expect(status).toBe(413);
    expectNoInternals(message);
  });

  it("answers 413 for a ConstantOfShape whose size overflows", async () => {
    const { status, message } = await answerTo("constantOfShape", [shape(1n << 62n, 4n, 1n)]);

    expect(status).toBe(413);
    expect(message).toContain("Integer overflow");
    expectNoInternals(message);
  });

  it("answers 400 for a negative dimension in a ConstantOfShape", async () => {
    const { status, message } = await answerTo("constantOfShape", [shape(-1n, 2n, 2n)]);

    expect(status).toBe(400);
    expect(message).toContain("must be >= 0");
    expectNoInternals(message);
  });

  it("logs onnxruntime's full message, source frames included, for a refused input", async () => {
    await answerTo("expand", [floats([1, 1]), shape(100_000n, 100_000n)]);

    const logged = JSON.stringify(logger.lines);
    expect(logged).toContain("bfc_arena.cc");
    expect(logged).toContain("onnxruntime::BFCArena");
  });
});

describe("error bodies as the API writes them", () => {
  it("redacts paths, source locations and stack lines from every MaasError's message", () => {
    logger.lines.length = 0;
    const error = new ModelNotReadyError(
      "model 'iris' failed to load: /tmp/maas-artifacts/ab12/model.onnx: session.cc:1203 bad graph\n    at load (/var/task/index.mjs:10:3)",
      { cause: new Error("loader") },
    );

    const response = errorResponse(error, logger);
    const body = JSON.parse(response.body) as { error: string };

    expect(response.statusCode).toBe(503);
    expect(body.error).toBe("model 'iris' failed to load: [path]: [source] bad graph");
    expect(JSON.stringify(logger.lines)).toContain("/tmp/maas-artifacts/ab12/model.onnx");
  });

  it("keeps a route path a caller can act on", () => {
    const response = errorResponse(new RouteNotFoundError("GET", "/v2/models/iris/versions/1/nope"), logger);

    expect(JSON.parse(response.body)).toEqual({ error: "no route for GET /v2/models/iris/versions/1/nope" });
  });
});
