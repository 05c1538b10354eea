import { HeadObjectCommand } from "@aws-sdk/client-s3";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ModelVersion } from "#core/model.ts";
import type { LocalStack } from "../../local/stack.ts";
import { buildTransformerMlpModel } from "../../models/transformer-mlp.ts";
import { TEST_API_KEY as API_KEY, startTestStack, stopTestStack } from "../support/local-stack.ts";
import { cosine } from "../support/numeric.ts";

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
  it("publishes, optimizes to a selected variant, and serves it within tolerance of the original", async () => {
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
    // Which variant wins the benchmark depends on the machine's load; the gate and the bytes do not.
    const int8 = optimized.variants.find((variant) => variant.kind === "int8-dynamic")!;
    expect(int8.parity).toMatchObject({ passed: true, inputs: "generated" });
    expect(int8.bytes / model.byteLength).toBeLessThan(0.3);
    const selected = optimized.variants.filter((variant) => variant.selected);
    expect(selected).toHaveLength(1);
    const serving = selected[0]!;
    expect(serving.kind === "original" || serving.parity?.passed).toBe(true);
    const head = await stack.emulators
      .s3Client()
      .send(new HeadObjectCommand({ Bucket: serving.artifact!.bucket, Key: serving.artifact!.key }));
    expect(head.ContentLength).toBe(serving.bytes);

    const input = Array.from({ length: 2 * WIDTH }, (_, i) => Math.sin(i / 7));
    const response = await fetch(`${stack.url}/v2/models/encoder/infer`, {
      method: "POST",
      headers: { "x-api-key": API_KEY, "content-type": "application/json" },
      body: JSON.stringify({ inputs: [{ name: "input", shape: [2, WIDTH], datatype: "FP32", data: input }] }),
    });
    const body = (await response.json()) as { outputs: { name: string; shape: number[]; data: number[] }[] };

    expect(response.status).toBe(200);
    expect(response.headers.get("x-maas-model-version")).toBe("1");
    expect(stack.inference.sessions.has(serving.artifact!.sha256)).toBe(true);
    const session = await ort.InferenceSession.create(model, { logSeverityLevel: 3 });
    const expected = await session.run({
      input: new ort.Tensor("float32", Float32Array.from(input), [2, WIDTH]),
    });
    await session.release();
    const served = body.outputs[0]!;
    expect(served.shape).toEqual([2, WIDTH]);
    expect(cosine(served.data, expected.output!.data as Float32Array)).toBeGreaterThan(0.99);
  });
});
