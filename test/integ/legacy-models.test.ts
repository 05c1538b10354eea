import { PutObjectCommand } from "@aws-sdk/client-s3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { modelKey } from "#core/registry/manifest.ts";
import type { LocalStack } from "../../local/stack.ts";
import {
  expectedProbabilities,
  legacyOpsetModel,
  ZIPMAP_LABELS,
  zipMapClassifier,
} from "../support/classifier-models.ts";
import { startTestStack, stopTestStack, TEST_ADMIN_KEY, TEST_API_KEY } from "../support/local-stack.ts";

let dataDir: string;
let stack: LocalStack;

beforeAll(async () => {
  ({ stack, dataDir } = await startTestStack("legacy-models"));
});

afterAll(() => stopTestStack(stack, dataDir));

async function uploadModel(name: string, bytes: Uint8Array): Promise<void> {
  await stack.emulators
    .s3Client()
    .send(new PutObjectCommand({ Bucket: stack.bucket, Key: modelKey(name, 1), Body: bytes }));
}

async function untilReady(name: string): Promise<Record<string, unknown>> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const response = await fetch(`${stack.url}/admin/models/${name}/versions/1`, {
      headers: { "x-api-key": TEST_ADMIN_KEY },
    });
    const record = response.status === 200 ? ((await response.json()) as Record<string, unknown>) : undefined;
    if (record !== undefined && record.status !== "registering") return record;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${name} to register`);
    await new Promise((wake) => setTimeout(wake, 20));
  }
}

async function infer(name: string, features: readonly number[]) {
  const response = await fetch(`${stack.url}/v2/models/${name}/versions/1/infer`, {
    method: "POST",
    headers: { "x-api-key": TEST_API_KEY, "content-type": "application/json" },
    body: JSON.stringify({
      inputs: [{ name: "x", datatype: "FP32", shape: [features.length / 2, 2], data: features }],
    }),
  });
  const text = await response.text();
  expect(response.status, text).toBe(200);
  return JSON.parse(text) as {
    outputs: { name: string; datatype: string; shape: number[]; data: number[] }[];
  };
}

const FEATURES = [1, 2, 3, -1];

describe("models older exporters and sklearn-onnx write, published by upload", () => {
  it("serves a ZipMap classifier's probabilities over V2, with its class labels and a warning in the admin API", async () => {
    await uploadModel("zipmap-classifier", zipMapClassifier());

    const record = await untilReady("zipmap-classifier");
    const response = await infer("zipmap-classifier", FEATURES);

    expect(record).toMatchObject({
      status: expect.stringMatching(/^(ready|optimizing)$/),
      signature: {
        outputs: [{ name: "output_label" }, { name: "output_probability", classLabels: [...ZIPMAP_LABELS] }],
      },
      warnings: [expect.stringContaining("served as FP32 [N, 3]")],
    });
    const probabilities = response.outputs.find((output) => output.name === "output_probability")!;
    expect(probabilities).toMatchObject({ datatype: "FP32", shape: [2, 3] });
    expectedProbabilities(FEATURES).forEach((expected, i) => {
      expect(probabilities.data[i]).toBeCloseTo(expected, 6);
    });
    expect(response.outputs.find((output) => output.name === "output_label")).toMatchObject({
      datatype: "INT64",
      data: [1, 0],
    });
  });

  it("serves an operator-set-5 model, with the warning in the admin API", async () => {
    await uploadModel("opset-five", legacyOpsetModel(5));

    const record = await untilReady("opset-five");
    const response = await infer("opset-five", FEATURES);

    expect(record).toMatchObject({ warnings: [expect.stringContaining("operator set 5")] });
    expect(response.outputs[0]).toMatchObject({ name: "y", datatype: "FP32", shape: [2, 3] });
    expectedProbabilities(FEATURES).forEach((expected, i) => {
      expect(response.outputs[0]!.data[i]).toBeCloseTo(expected, 6);
    });
  });
});
