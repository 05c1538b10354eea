import { HeadObjectCommand } from "@aws-sdk/client-s3";
import { SendMessageCommand } from "@aws-sdk/client-sqs";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ModelVersion, servingArtifact } from "#core/model.ts";
import { inspectModel } from "#core/onnx/inspect.ts";
import { LOSSLESS_TOLERANCE } from "#core/optimize/parity.ts";
import { isServable } from "#core/registry/registry.ts";
import { type LocalStack, OPTIMIZE_DEAD_LETTER_QUEUE } from "../../local/stack.ts";
import { buildTransformerMlpModel } from "../../models/transformer-mlp.ts";
import { TEST_API_KEY as API_KEY, startTestStack, stopTestStack } from "../support/local-stack.ts";

/** The largest |a - b| / max(1, |a|): the lossless criterion's measure (see parity.ts). */
function worstError(expected: ArrayLike<number>, actual: ArrayLike<number>): number {
  let worst = 0;
  for (let i = 0; i < expected.length; i++) {
    worst = Math.max(worst, Math.abs(expected[i]! - actual[i]!) / Math.max(1, Math.abs(expected[i]!)));
  }
  return worst;
}

async function infer(name: string, version: number, width: number, rows = 2) {
  const input = Array.from({ length: rows * width }, (_, i) => Math.sin(i / 7));
  const response = await fetch(`${stack.url}/v2/models/${name}/versions/${version}/infer`, {
    method: "POST",
    headers: { "x-api-key": API_KEY, "content-type": "application/json" },
    body: JSON.stringify({
      inputs: [{ name: "input", shape: [rows, width], datatype: "FP32", data: input }],
    }),
  });
  const body = (await response.json()) as { outputs: { name: string; shape: number[]; data: number[] }[] };
  return { input, response, body };
}

const WIDTH = 768;
/** Two blocks of 768/3072 (38 MB): big enough that int8 weights are usually the fastest variant. */
const model = buildTransformerMlpModel({ blocks: 2, width: WIDTH, hidden: 3072, seed: 5 });

let dataDir: string;
let stack: LocalStack;

beforeAll(async () => {
  ({ stack, dataDir } = await startTestStack("optimize-integ", { demo: false }));
});

afterAll(() => stopTestStack(stack, dataDir));

async function waitForOptimized(name: string, version: number, timeoutMs = 25_000): Promise<ModelVersion> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const record = await stack.registry.getVersionConsistent(name, version);
    if (record?.optimizedAt !== undefined) return record;
    if (Date.now() > deadline)
      throw new Error(`${name} v${version} is still ${record?.status} after ${timeoutMs} ms`);
    await new Promise((wake) => setTimeout(wake, 100));
  }
}

describe("optimization on upload, through the local stack", () => {
  it("publishes, optimizes, and serves a lossless variant (or the original) with the original's outputs", async () => {
    const registered = await stack.publish("encoder", 1, model);
    expect(registered.status === "ready" || registered.status === "optimizing").toBe(true);

    const optimized = await waitForOptimized("encoder", 1);

    expect(optimized.status).toBe("ready");
    expect(optimized.optimizeError).toBeUndefined();
    expect(optimized.variants.map((variant) => variant.kind)).toEqual([
      "original",
      "graph-extended",
      "int8-dynamic",
    ]);
    // int8 is built, gated and measured, and never served: no manifest asked for it.
    const int8 = optimized.variants.find((variant) => variant.kind === "int8-dynamic")!;
    expect(int8.parity).toMatchObject({ passed: true, inputs: "generated" });
    expect(int8.bytes / model.byteLength).toBeLessThan(0.3);
    expect(int8.selected).toBe(false);
    expect(optimized.variantChoice).toBeUndefined();
    // Which lossless candidate wins the benchmark depends on the machine's load.
    const selected = optimized.variants.filter((variant) => variant.selected);
    expect(selected).toHaveLength(1);
    const serving = selected[0]!;
    expect(["original", "graph-extended"]).toContain(serving.kind);
    const head = await stack.emulators
      .s3Client()
      .send(new HeadObjectCommand({ Bucket: serving.artifact!.bucket, Key: serving.artifact!.key }));
    expect(head.ContentLength).toBe(serving.bytes);

    const { input, response, body } = await infer("encoder", 1, WIDTH);

    expect(response.status).toBe(200);
    expect(response.headers.get("x-maas-model-version")).toBe("1");
    expect(response.headers.get("x-maas-variant")).toBe(serving.kind);
    expect(stack.inference.sessions.has(serving.artifact!.sha256)).toBe(true);
    const session = await ort.InferenceSession.create(model, { logSeverityLevel: 3 });
    const expected = await session.run({
      input: new ort.Tensor("float32", Float32Array.from(input), [2, WIDTH]),
    });
    await session.release();
    const served = body.outputs[0]!;
    expect(served.shape).toEqual([2, WIDTH]);
    expect(worstError(expected.output!.data as Float32Array, served.data)).toBeLessThanOrEqual(
      LOSSLESS_TOLERANCE,
    );
  });

  it("serves the same variant for the same bytes: two models, two versions each", async () => {
    const small = buildTransformerMlpModel({ blocks: 2, width: 256, hidden: 1024, seed: 11 });
    const published = [
      ["twin-a", 1],
      ["twin-a", 2],
      ["twin-b", 1],
      ["twin-b", 2],
    ] as const;
    for (const [name, version] of published) await stack.publish(name, version, small);

    const records = [];
    for (const [name, version] of published) records.push(await waitForOptimized(name, version));

    const serving = records.map((record) => {
      if (!isServable(record)) throw new Error(`${record.name} v${record.version} is ${record.status}`);
      return {
        kind: record.variants.find((variant) => variant.selected)?.kind,
        artifact: servingArtifact(record),
      };
    });
    for (const each of serving) expect(each).toEqual(serving[0]);
    const answers = [];
    for (const [name, version] of published) {
      const { response, body } = await infer(name, version, 256);
      expect(response.headers.get("x-maas-variant")).toBe(serving[0]?.kind);
      answers.push(body.outputs[0]!.data);
    }
    for (const answer of answers) expect(answer).toEqual(answers[0]);
  });

  it("ends, from the dead-letter queue, a version whose optimization never finished", async () => {
    const bytes = buildTransformerMlpModel({ blocks: 1, width: 128, hidden: 512, seed: 12 });
    const registered = await stack.publish("stuck", 1, bytes);
    await waitForOptimized("stuck", 1);
    // As a crashed last attempt leaves a version: optimizing, never finished, its claim taken an hour
    // ago (past the lease: the message sent here is not the one that claimed it).
    const now = new Date().toISOString();
    const anHourAgo = new Date(Date.now() - 60 * 60 * 1000).toISOString();
    await stack.registry.deleteVersion("stuck", 1);
    await stack.registry.createVersion({
      ...registered,
      signature: inspectModel(bytes).signature,
      status: "optimizing",
      variants: [],
      optimizeAttempt: {
        id: "crashed-message",
        startedAt: anHourAgo,
        error: "Runtime exited with error: signal: killed",
      },
      createdAt: now,
      updatedAt: now,
    });

    await stack.sqs.send(
      new SendMessageCommand({
        QueueUrl: stack.emulators.queueUrl(OPTIMIZE_DEAD_LETTER_QUEUE),
        MessageBody: JSON.stringify({ name: "stuck", version: 1 }),
      }),
    );
    const ended = await waitForOptimized("stuck", 1);

    expect(ended).toMatchObject({
      status: "ready",
      optimizeError:
        "optimization did not finish after 3 attempts: Runtime exited with error: signal: killed",
      variants: [],
    });
  });
});
