import { GetObjectCommand, ListObjectsV2Command } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isServable } from "#core/registry/registry.ts";
import type { LocalStack } from "../../local/stack.ts";
import { buildMlpModel } from "../../models/mlp.ts";
import { encodeBinaryRequest } from "../support/binary-v2.ts";
import { startTestStack, stopTestStack, TEST_ADMIN_KEY, TEST_API_KEY } from "../support/local-stack.ts";

/**
 * Issue 18 item 7: payload capture. A version that opts in through its manifest has about its sample
 * rate of exchanges captured to the local bucket as SageMaker Data Capture lines; one that did not has
 * none, until an operator switches it on, and off again.
 */
let stack: LocalStack;
let dataDir: string | undefined;

interface CaptureLine {
  captureData: {
    endpointInput?: { observedContentType: string; mode: string; data: string; encoding: string };
    endpointOutput?: { observedContentType: string; mode: string; data: string; encoding: string };
  };
  eventMetadata: {
    eventId: string;
    inferenceTime: string;
    model: string;
    version: number;
    backend: string;
    variant: string;
  };
  eventVersion: string;
}

const SAMPLE_PERCENT = 25;
const REQUESTS = 240;

function request(row: number): string {
  return JSON.stringify({
    id: `r${row}`,
    inputs: [{ name: "input", shape: [1, 4], datatype: "FP32", data: [row, row / 2, row / 3, row / 4] }],
  });
}

async function infer(model: string, body: string, headers: Record<string, string> = {}): Promise<Response> {
  const response = await fetch(`${stack.url}/v2/models/${model}/infer`, {
    method: "POST",
    headers: { "x-api-key": TEST_API_KEY, "content-type": "application/json", ...headers },
    body,
  });
  expect(response.status, await response.clone().text()).toBe(200);
  return response;
}

/** Sends `count` requests, 20 at a time, then waits for the capture writes. */
async function burst(model: string, count: number, first = 0): Promise<void> {
  for (let start = 0; start < count; start += 20) {
    await Promise.all(
      Array.from({ length: Math.min(20, count - start) }, async (_, i) => {
        await (await infer(model, request(first + start + i))).arrayBuffer();
      }),
    );
  }
  await stack.inference.capture?.drain();
}

async function captured(model: string): Promise<{ keys: string[]; lines: CaptureLine[] }> {
  const s3 = stack.emulators.s3Client();
  const keys: string[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(
      new ListObjectsV2Command({
        Bucket: stack.bucket,
        Prefix: `capture/${model}/`,
        ContinuationToken: token,
      }),
    );
    keys.push(...(page.Contents ?? []).map((object) => object.Key as string));
    token = page.NextContinuationToken;
  } while (token !== undefined);
  const lines: CaptureLine[] = [];
  for (const key of keys) {
    const object = await s3.send(new GetObjectCommand({ Bucket: stack.bucket, Key: key }));
    const text = (await object.Body?.transformToString()) ?? "";
    expect(text.endsWith("\n")).toBe(true);
    for (const line of text.split("\n").filter((line) => line.length > 0))
      lines.push(JSON.parse(line) as CaptureLine);
  }
  return { keys, lines };
}

async function admin(method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`${stack.url}/admin/models/${path}`, {
    method,
    headers: { "x-api-key": TEST_ADMIN_KEY, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

const sleep = (ms: number) => new Promise((wake) => setTimeout(wake, ms));

/**
 * Until inference sees an operator's change: past the local registry cache's TTL (1 s), a request
 * gets the stale record and starts its re-read (stale-while-revalidate), whose answer the next ones get.
 * Returns how many lines the model had captured by then.
 */
async function untilSeen(model: string): Promise<number> {
  await sleep(1_200);
  await (await infer(model, request(9_999))).arrayBuffer();
  await sleep(300);
  await stack.inference.capture?.drain();
  return (await captured(model)).lines.length;
}

beforeAll(async () => {
  ({ stack, dataDir } = await startTestStack("capture", { demo: false }));
  const sampled = await stack.publish("sampled", 1, buildMlpModel({ layers: [4, 8, 3], seed: 21 }), {
    manifest: { capture: { samplePercent: SAMPLE_PERCENT } },
  });
  const plain = await stack.publish("plain", 1, buildMlpModel({ layers: [4, 8, 3], seed: 22 }));
  if (!isServable(sampled) || !isServable(plain)) throw new Error("the models did not register");
  expect(sampled.capture).toEqual({ samplePercent: SAMPLE_PERCENT, requests: true, responses: true });
  await Promise.all([burst("sampled", REQUESTS), burst("plain", REQUESTS, 1_000)]);
}, 120_000);

afterAll(async () => {
  await stopTestStack(stack, dataDir);
});

describe("payload capture", () => {
  it("captures about the configured share of an opted-in version's exchanges, none of another's", async () => {
    const { keys, lines } = await captured("sampled");
    // Binomial(240, 0.25): mean 60, sd 6.7; five sd either side fails by chance about once in 3 million runs.
    expect(lines.length).toBeGreaterThanOrEqual(26);
    expect(lines.length).toBeLessThanOrEqual(94);
    const hour = new Date().toISOString();
    for (const key of keys)
      expect(key).toMatch(
        /^capture\/sampled\/1\/\d{4}\/\d{2}\/\d{2}\/\d{2}\/\d{8}T\d{9}Z-[0-9a-f]{12}\.jsonl$/,
      );
    expect(keys.some((key) => key.includes(`/${hour.slice(0, 4)}/${hour.slice(5, 7)}/`))).toBe(true);
    expect((await captured("plain")).lines).toEqual([]);
  });

  it("writes each exchange as a SageMaker data capture line: the request as sent, the response as answered", async () => {
    const { lines } = await captured("sampled");
    const ids = new Set<string>();
    for (const line of lines) {
      expect(line.eventVersion).toBe("0");
      expect(line.eventMetadata).toMatchObject({ model: "sampled", version: 1, backend: "lambda" });
      expect(Date.parse(line.eventMetadata.inferenceTime)).toBeGreaterThan(Date.now() - 10 * 60_000);
      ids.add(line.eventMetadata.eventId);
      const input = line.captureData.endpointInput;
      const output = line.captureData.endpointOutput;
      expect(input).toMatchObject({
        mode: "INPUT",
        encoding: "JSON",
        observedContentType: "application/json",
      });
      expect(output).toMatchObject({ mode: "OUTPUT", encoding: "JSON" });
      const sent = JSON.parse(input?.data ?? "") as { id: string };
      expect(input?.data).toBe(request(Number(sent.id.slice(1))));
      const answer = JSON.parse(output?.data ?? "") as { id: string; model_name: string; outputs: unknown[] };
      expect(answer).toMatchObject({ id: sent.id, model_name: "sampled", model_version: "1" });
      expect(answer.outputs.length).toBeGreaterThan(0);
    }
    expect(ids.size).toBe(lines.length);
  });

  it("follows an operator's switch per version: on at 100% for requests only, then off", async () => {
    const on = await admin("PUT", "plain/versions/1/capture", { samplePercent: 100, responses: false });
    expect(on.status, await on.clone().text()).toBe(200);
    expect(((await on.json()) as { capture: unknown }).capture).toEqual({
      samplePercent: 100,
      requests: true,
      responses: false,
    });
    const before = await untilSeen("plain");
    await burst("plain", 10, 2_000);
    const whileOn = (await captured("plain")).lines.filter((line) =>
      /"id":"r20\d\d"/.test(line.captureData.endpointInput?.data ?? ""),
    );
    expect(whileOn).toHaveLength(10);
    expect((await captured("plain")).lines.length - before).toBe(10);
    for (const line of whileOn) {
      expect(line.captureData.endpointInput?.encoding).toBe("JSON");
      expect(line.captureData.endpointOutput).toBeUndefined();
    }

    const off = await admin("DELETE", "plain/versions/1/capture");
    expect(off.status).toBe(200);
    expect(((await off.json()) as { capture: { samplePercent: number } }).capture.samplePercent).toBe(0);
    const afterOff = await untilSeen("plain");
    await burst("plain", 10, 3_000);
    expect((await captured("plain")).lines.length - afterOff).toBe(0);
  });

  it("captures a binary tensor exchange as base64, with its JSON header's length", async () => {
    await (await admin("PUT", "plain/versions/1/capture", { samplePercent: 100 })).arrayBuffer();
    const before = await untilSeen("plain");
    const { body, headerLength } = encodeBinaryRequest({
      inputs: [
        { name: "input", datatype: "FP32", shape: [1, 4], data: Float32Array.of(1, 2, 3, 4), binary: true },
      ],
      parameters: { binary_data_output: true },
    });
    const response = await infer("plain", body as unknown as string, {
      "content-type": "application/octet-stream",
      "inference-header-content-length": String(headerLength),
    });
    await response.arrayBuffer();
    await stack.inference.capture?.drain();
    const lines = (await captured("plain")).lines;
    expect(lines).toHaveLength(before + 1);
    const binary = lines.find((line) => line.captureData.endpointInput?.encoding === "BASE64");
    expect(binary?.captureData.endpointInput?.observedContentType).toBe(
      `application/vnd.sagemaker-triton.binary+json;json-header-size=${headerLength}`,
    );
    expect(Buffer.from(binary?.captureData.endpointInput?.data ?? "", "base64")).toEqual(Buffer.from(body));
    expect(binary?.captureData.endpointOutput?.encoding).toBe("BASE64");
    expect(binary?.captureData.endpointOutput?.observedContentType).toMatch(/json-header-size=\d+$/);
  });

  it("refuses a manifest whose sample rate is out of range, naming the field", async () => {
    const refused = await stack.publish("badcapture", 1, buildMlpModel({ layers: [4, 8, 3], seed: 23 }), {
      manifest: { capture: { samplePercent: 150 } },
    });
    expect(refused.status).toBe("failed");
    expect(refused.reason).toMatch(/capture\.samplePercent/);
    const badBody = await admin("PUT", "plain/versions/1/capture", { samplePercent: -1 });
    expect(badBody.status).toBe(400);
  });
});
