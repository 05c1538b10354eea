/**
 * Requests built to exhaust memory, through the local stack (which runs in this test's process, so its
 * memory is this process's): a ~100-byte request whose output would be hundreds of MB of JSON, and
 * bodies nested millions deep. Each must be refused with a 4xx while the process stays under 1.5 GB,
 * and no error body may show a file path or a source location.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LocalStack } from "../../local/stack.ts";
import { startTestStack, stopTestStack, TEST_API_KEY } from "../support/local-stack.ts";
import { constantOfShapeBombModel, expandBombModel, outputSizeBombModel } from "../support/runaway-models.ts";

const RSS_LIMIT_BYTES = 1_500_000_000;
/** MAAS_MAX_RESPONSE_BYTES's default: Lambda's 6 MB synchronous response. */
const RESPONSE_LIMIT_BYTES = 6 * 1024 * 1024;
const BOMB = "output-bomb";

let stack: LocalStack;
let dataDir: string;

beforeAll(async () => {
  ({ stack, dataDir } = await startTestStack("memory-bombs", { demo: false }));
  await stack.publish(BOMB, 1, outputSizeBombModel());
  await stack.publish("expand-bomb", 1, expandBombModel());
  await stack.publish("zeros-bomb", 1, constantOfShapeBombModel());
  // The optimizer benchmarks each model with inputs of its own: done before any memory is measured.
  const deadline = Date.now() + 60_000;
  for (const name of [BOMB, "expand-bomb", "zeros-bomb"]) {
    while ((await stack.registry.getVersionConsistent(name, 1))?.optimizedAt === undefined) {
      if (Date.now() > deadline) throw new Error(`${name} never left the optimizer`);
      await new Promise((wake) => setTimeout(wake, 50));
    }
  }
}, 120_000);

afterAll(() => stopTestStack(stack, dataDir));

/** Linux's peak resident set size since the last reset, or undefined where /proc does not have it. */
function peakRss(): number | undefined {
  try {
    const kib = /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1];
    return kib === undefined ? undefined : Number(kib) * 1024;
  } catch {
    return undefined;
  }
}

function resetPeakRss(): void {
  try {
    writeFileSync("/proc/self/clear_refs", "5");
  } catch {
    // Not Linux, or not allowed: the samples alone measure.
  }
}

/**
 * The largest RSS while `work` runs: sampled every 20 ms, and Linux's own peak (VmHWM, reset first),
 * which also covers stretches where a blocked event loop takes no samples.
 */
async function peakRssDuring<T>(work: () => Promise<T>): Promise<{ result: T; peakBytes: number }> {
  resetPeakRss();
  let peakBytes = process.memoryUsage().rss;
  const sampler = setInterval(() => {
    peakBytes = Math.max(peakBytes, process.memoryUsage().rss);
  }, 20);
  try {
    const result = await work();
    peakBytes = Math.max(peakBytes, process.memoryUsage().rss, peakRss() ?? 0);
    return { result, peakBytes };
  } finally {
    clearInterval(sampler);
  }
}

async function post(path: string, body: string): Promise<{ status: number; text: string }> {
  const response = await fetch(`${stack.url}${path}`, {
    method: "POST",
    headers: { "x-api-key": TEST_API_KEY, "content-type": "application/json" },
    body,
  });
  return { status: response.status, text: await response.text() };
}

/** The message of an error body: the function's {"error"} or the gateway's {"message"}. */
function errorMessage(text: string): string {
  const body = JSON.parse(text) as { error?: unknown; message?: unknown };
  const message = body.error ?? body.message;
  expect(message, text).toEqual(expect.any(String));
  return message as string;
}

/** Neither the body nor its message shows a path, a source location, a stack line or node_modules. */
function expectNoInternals(body: string): void {
  for (const text of [body, errorMessage(body)]) {
    expect(text).not.toMatch(/(?<![\w.~:/\\-])\/(?!(?:v2|models)(?:\/|\b))[\w.@+~-]+\/[\w.@+~-]/);
    expect(text).not.toMatch(/\b[\w-]+\.(?:ts|mts|cts|js|mjs|cjs|cc|cpp|h|hpp)\b/);
    expect(text).not.toMatch(/(?:^|\n)\s*at \S/);
    expect(text).not.toContain("node_modules");
    expect(text).not.toContain(dataDir);
  }
}

describe("requests built to exhaust memory", () => {
  // The nesting bodies first: what the output bomb leaves resident would count against their measure.
  it("refuses a 10 MB body nested 5 million deep with a 4xx, under 1.5 GB", async () => {
    const body = "[".repeat(5_000_000) + "]".repeat(5_000_000);

    const { result, peakBytes } = await peakRssDuring(() => post(`/v2/models/${BOMB}/infer`, body));

    expect(result.status, result.text.slice(0, 500)).toBeGreaterThanOrEqual(400);
    expect(result.status).toBeLessThan(500);
    expectNoInternals(result.text);
    expect(peakBytes).toBeLessThan(RSS_LIMIT_BYTES);
  }, 60_000);

  // 4.4 MB: its base64 in the Lambda event (binary media types */*) stays under Lambda's 6 MB.
  it("refuses a 4.4 MB body nested 2.2 million deep, which reaches the function, with a 400, under 1.5 GB", async () => {
    const body = "[".repeat(2_200_000) + "]".repeat(2_200_000);

    const { result, peakBytes } = await peakRssDuring(() => post(`/v2/models/${BOMB}/infer`, body));

    expect(result.status, result.text.slice(0, 500)).toBe(400);
    const message = errorMessage(result.text);
    expect(message).toContain("nests arrays and objects more than");
    expectNoInternals(result.text);
    expect(peakBytes).toBeLessThan(RSS_LIMIT_BYTES);
  }, 60_000);

  it("refuses an output of 50 million floats with a 413 naming the response limit, under 1.5 GB", async () => {
    const request = JSON.stringify({
      inputs: [{ name: "n", shape: [], datatype: "INT64", data: [50_000_000] }],
    });

    const { result, peakBytes } = await peakRssDuring(() => post(`/v2/models/${BOMB}/infer`, request));

    expect(result.status, result.text.slice(0, 500)).toBe(413);
    const message = errorMessage(result.text);
    expect(message).toContain(`response limit of ${RESPONSE_LIMIT_BYTES} bytes`);
    expectNoInternals(result.text);
    expect(peakBytes).toBeLessThan(RSS_LIMIT_BYTES);
  }, 120_000);

  it("answers 413 without onnxruntime's source frames to an Expand of 10^5 x 10^5 (40 GB)", async () => {
    const request = JSON.stringify({
      inputs: [
        { name: "x", shape: [1, 1], datatype: "FP32", data: [1] },
        { name: "shape", shape: [2], datatype: "INT64", data: [100_000, 100_000] },
      ],
    });

    const { result, peakBytes } = await peakRssDuring(() => post("/v2/models/expand-bomb/infer", request));

    expect(result.status, result.text).toBe(413);
    expect(errorMessage(result.text)).toMatch(/^the model rejected the inputs: /);
    expect(result.text).not.toContain("bfc_arena");
    expectNoInternals(result.text);
    expect(peakBytes).toBeLessThan(RSS_LIMIT_BYTES);
  });

  it("answers 4xx without internals to a ConstantOfShape of 40 GB and of a negative dimension", async () => {
    const ask = (dims: number[]) =>
      post(
        "/v2/models/zeros-bomb/infer",
        JSON.stringify({ inputs: [{ name: "shape", shape: [3], datatype: "INT64", data: dims }] }),
      );

    const huge = await ask([100_000, 100_000, 1]);
    const negative = await ask([-1, 5, 5]);

    expect(huge.status, huge.text).toBe(413);
    expect(negative.status, negative.text).toBeGreaterThanOrEqual(400);
    expect(negative.status).toBeLessThan(500);
    for (const answer of [huge, negative]) expectNoInternals(answer.text);
  });
});
