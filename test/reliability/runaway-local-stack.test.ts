/**
 * A runaway request against `npm start` itself, run as a user runs it (its own process, its own data
 * directory): a model whose Loop runs as many trips as the caller asks, asked for 10^12.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readStackFile } from "../../local/stack-file.ts";
import { callerLoopModel } from "../support/runaway-models.ts";

const API_KEY = "runaway-api-key";
const ADMIN_KEY = "runaway-admin-key";
const DEADLINE_MS = 3_000;

let dataDir: string;
let child: ChildProcess;
let api: string;

function loopRequest(trips: number): RequestInit {
  return {
    method: "POST",
    headers: { "x-api-key": API_KEY, "content-type": "application/json" },
    body: JSON.stringify({
      inputs: [
        { name: "M", shape: [], datatype: "INT64", data: [trips] },
        { name: "x", shape: [1], datatype: "FP32", data: [3] },
      ],
    }),
  };
}

const irisRequest: RequestInit = {
  method: "POST",
  headers: { "x-api-key": API_KEY, "content-type": "application/json" },
  body: JSON.stringify({
    inputs: [{ name: "features", shape: [1, 4], datatype: "FP32", data: [5.1, 3.5, 1.4, 0.2] }],
  }),
};

/** Status and milliseconds of one call. */
async function timed(path: string, init: RequestInit = { headers: { "x-api-key": API_KEY } }) {
  const started = performance.now();
  const response = await fetch(`${api}${path}`, { ...init, signal: AbortSignal.timeout(30_000) });
  const body = await response.text();
  return { status: response.status, body, ms: performance.now() - started };
}

async function until<T>(probe: () => Promise<T | undefined>, what: string, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((wake) => setTimeout(wake, 200));
  }
}

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "maas-runaway-stack-"));
  child = spawn(
    process.execPath,
    ["--disable-warning=ExperimentalWarning", "--import", "tsx", "local/start.ts"],
    {
      env: {
        ...process.env,
        PORT: "0",
        MAAS_S3_PORT: "0",
        MAAS_DATA_DIR: dataDir,
        MAAS_API_KEY: API_KEY,
        MAAS_ADMIN_KEY: ADMIN_KEY,
        MAAS_INFERENCE_DEADLINE_MS: String(DEADLINE_MS),
      },
      stdio: ["ignore", "ignore", "inherit"],
    },
  );
  const stack = await until(() => readStackFile(dataDir), "npm start to write stack.json");
  api = stack.url;
  const s3 = new S3Client({
    region: "us-east-1",
    endpoint: stack.s3Endpoint,
    forcePathStyle: true,
    credentials: stack.s3Credentials,
  });
  await s3.send(
    new PutObjectCommand({ Bucket: stack.bucket, Key: "models/loop/1/model.onnx", Body: callerLoopModel() }),
  );
  s3.destroy();
  await until(
    async () => ((await timed("/v2/models/loop/versions/1/ready")).status === 200 ? true : undefined),
    "the loop model to be ready",
  );
  // Both sessions exist before the runaway: what is measured is the run, not a load.
  expect((await timed("/v2/models/loop/infer", loopRequest(10))).status).toBe(200);
  expect((await timed("/v2/models/iris/infer", irisRequest)).status).toBe(200);
}, 120_000);

afterAll(async () => {
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe("npm start during a runaway request", () => {
  it("answers health checks and other models at once, and the runaway with 504 at its deadline", async () => {
    const runaway = timed("/v2/models/loop/infer", loopRequest(1e12));
    // Long enough for the run to have started in its worker.
    await new Promise((wake) => setTimeout(wake, 300));

    const live = await timed("/v2/health/live");
    const iris = await timed("/v2/models/iris/infer", irisRequest);
    const answer = await runaway;

    expect(live.status).toBe(200);
    expect(live.ms).toBeLessThan(1_000);
    expect(iris.status).toBe(200);
    expect(iris.ms).toBeLessThan(1_000);
    expect(answer.status).toBe(504);
    expect(JSON.parse(answer.body)).toEqual({
      error: expect.stringMatching(
        /^the model ran past the request's deadline \(\d+ ms\); the run was abandoned$/,
      ),
    });
    expect(answer.ms).toBeGreaterThanOrEqual(DEADLINE_MS - 500);
    expect(answer.ms).toBeLessThan(DEADLINE_MS + 2_000);
  }, 30_000);

  it("serves the runaway's model again on a fresh session", async () => {
    const again = await timed("/v2/models/loop/infer", loopRequest(10));

    expect(again.status).toBe(200);
    expect(JSON.parse(again.body).outputs[0].data).toEqual([3]);
  });

  it("stops on SIGTERM in under 10 s with runs stuck inside onnxruntime", async () => {
    const runaway = timed("/v2/models/loop/infer", loopRequest(1e12)).catch(() => undefined);
    await new Promise((wake) => setTimeout(wake, 300));

    const started = performance.now();
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    await exited;

    expect(performance.now() - started).toBeLessThan(10_000);
    await runaway;
  }, 30_000);
});
