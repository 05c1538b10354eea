import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { errorResponse } from "#aws/lambda/api-gateway.ts";
import type { OnnxRunner } from "#aws/onnx/runner.ts";
import type { SessionPool } from "#aws/onnx/session-pool.ts";
import { stuckRuns, type WorkerSession } from "#aws/onnx/worker-session.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import { buildIrisModel } from "../../models/iris.ts";
import {
  CapturingLogger,
  MemoryArtifactSource,
  storedVersion,
  workerRunner,
} from "../support/memory-parts.ts";
import { callerLoopModel } from "../support/runaway-models.ts";

/** About 90 ms per 100 000 trips here: 3 million is seconds, ended by the deadline long before. */
const RUNAWAY_TRIPS = 3_000_000n;
const DEADLINE_MS = 1_000;

const artifacts = new MemoryArtifactSource();
const logger = new CapturingLogger({ serviceName: "maas-inference", logLevel: "DEBUG" });
let cacheDir: string;
let sessions: SessionPool<WorkerSession>;
let runner: OnnxRunner;

const loop = storedVersion(artifacts, "loop", callerLoopModel());
const iris = storedVersion(artifacts, "iris", buildIrisModel());

function loopInputs(trips: bigint): NamedTensor[] {
  return [
    { name: "M", type: "int64", dims: [], data: BigInt64Array.from([trips]) },
    { name: "x", type: "float32", dims: [1], data: Float32Array.from([3]) },
  ];
}
const irisInputs: NamedTensor[] = [
  { name: "features", type: "float32", dims: [1, 4], data: Float32Array.from([5.1, 3.5, 1.4, 0.2]) },
];

/** The longest gap between timer ticks that were asked for every 10 ms, while `work` runs. */
async function longestStall<T>(
  work: Promise<T>,
): Promise<{ result: PromiseSettledResult<T>; stallMs: number }> {
  let last = performance.now();
  let stallMs = 0;
  const ticker = setInterval(() => {
    const now = performance.now();
    stallMs = Math.max(stallMs, now - last);
    last = now;
  }, 10);
  const [result] = await Promise.allSettled([work]);
  clearInterval(ticker);
  return { result, stallMs };
}

beforeAll(async () => {
  cacheDir = await mkdtemp(join(tmpdir(), "maas-runaway-"));
  ({ runner, sessions } = workerRunner(artifacts, cacheDir, DEADLINE_MS));
  // Both sessions exist before the runaway, so that what is measured is the run, not a load.
  await runner.run(loop, loopInputs(10n), ["y"]);
  await runner.run(iris, irisInputs, ["label", "probabilities"]);
});

afterAll(async () => {
  await sessions?.close();
  if (cacheDir) await rm(cacheDir, { recursive: true, force: true });
});

describe("a run that passes its deadline", () => {
  it("answers 504 with a message naming the deadline, while the event loop keeps turning", async () => {
    const { result, stallMs } = await longestStall(runner.run(loop, loopInputs(RUNAWAY_TRIPS), ["y"]));

    expect(result.status).toBe("rejected");
    const response = errorResponse((result as PromiseRejectedResult).reason, logger);
    expect(response.statusCode).toBe(504);
    const { error } = JSON.parse(response.body) as { error: string };
    // The run gets what is left of the deadline when it starts: a clock tick may have taken 1 ms of it.
    const budget = Number(/deadline \((\d+) ms\)/.exec(error)?.[1]);
    expect(error).toBe(`the model ran past the request's deadline (${budget} ms); the run was abandoned`);
    expect(budget).toBeGreaterThan(DEADLINE_MS - 50);
    expect(budget).toBeLessThanOrEqual(DEADLINE_MS);
    // Before, the run held the thread for its whole length (seconds): no tick could come.
    expect(stallMs).toBeLessThan(DEADLINE_MS / 2);
    expect(stuckRuns()).toBeGreaterThanOrEqual(1);
  });

  it("leaves other models serving while it runs", async () => {
    const runaway = runner.run(loop, loopInputs(RUNAWAY_TRIPS), ["y"]).catch((error: unknown) => error);
    const [label] = await runner.run(iris, irisInputs, ["label"]);

    expect(label?.data).toEqual(["setosa"]);
    expect(await runaway).toMatchObject({ status: 504 });
  });

  it("gives the same model a fresh session for the next request", async () => {
    await runner.run(loop, loopInputs(RUNAWAY_TRIPS), ["y"]).catch(() => undefined);

    const [y] = await runner.run(loop, loopInputs(1_000n), ["y"]);

    expect(Array.from(y?.data as Float32Array)).toEqual([3]);
  });

  it("fails requests queued behind it with 504 when their own deadline passes, not with the runaway's", async () => {
    const deadline = Date.now() + DEADLINE_MS;
    const runaway = runner.run(loop, loopInputs(RUNAWAY_TRIPS), ["y"], { deadline }).catch((e: unknown) => e);
    const queued = runner
      .run(loop, loopInputs(10n), ["y"], { deadline: Date.now() + 200 })
      .catch((e: unknown) => e);

    expect(await queued).toMatchObject({
      status: 504,
      message: expect.stringMatching(/^the request waited \d+ ms for the model/),
    });
    expect(await runaway).toMatchObject({ status: 504 });
  });

  it("retries a request queued behind the runaway on a new session once the runaway is abandoned", async () => {
    const runaway = runner.run(loop, loopInputs(RUNAWAY_TRIPS), ["y"], { deadline: Date.now() + 300 });
    const queued = runner.run(loop, loopInputs(10n), ["y"], { deadline: Date.now() + 20_000 });

    await expect(runaway).rejects.toMatchObject({ status: 504 });
    const [y] = await queued;
    expect(Array.from(y?.data as Float32Array)).toEqual([3]);
  });

  it("counts an abandoned run as stuck until onnxruntime lets its thread go", async () => {
    await runner.run(loop, loopInputs(RUNAWAY_TRIPS), ["y"]).catch(() => undefined);
    expect(stuckRuns()).toBeGreaterThanOrEqual(1);

    // The process can only exit once every such thread has ended: this file waits for them.
    await expect.poll(() => stuckRuns(), { timeout: 90_000, interval: 200 }).toBe(0);
  }, 120_000);
});
