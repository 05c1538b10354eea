import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ModelVersion, TensorSpec } from "#core/model.ts";
import type { LocalStack } from "../../local/stack.ts";
import { type CompatModel, compatCorpus } from "../../models/compat.ts";
import { startTestStack, stopTestStack } from "../support/local-stack.ts";
import {
  expectSameTensor,
  ortLoadError,
  type PlainTensor,
  parseExactJson,
  runDirectly,
  v2RequestBody,
} from "../support/onnxruntime-reference.ts";

const API_KEY = "compat-inference-key";
const ADMIN_KEY = "compat-admin-key";
const VERSION = 1;
/** One deadline for registering the whole corpus, uploaded at once. */
const PUBLISH_BUDGET_MS = 60_000;

const corpus = compatCorpus();
const runs = corpus.filter((model) => model.refusedBy === undefined);
const refused = corpus.filter((model) => model.refusedBy !== undefined);
const oldStamps = runs.filter((model) => model.opset < 7);
const reshaped = runs.filter((model) => model.reshaped !== undefined);

let stack: LocalStack | undefined;
let dataDir: string | undefined;
/** How registration settled each model: its record, or why publishing it did not finish. */
const settled = new Map<string, PromiseSettledResult<ModelVersion>>();

beforeAll(async () => {
  ({ stack, dataDir } = await startTestStack("compat", {
    apiKey: API_KEY,
    adminKey: ADMIN_KEY,
    demo: false,
  }));
  const live = stack;
  const deadline = Date.now() + PUBLISH_BUDGET_MS;
  const outcomes = await Promise.allSettled(
    corpus.map((model) =>
      live.publish(model.name, VERSION, model.bytes, { timeoutMs: deadline - Date.now() }),
    ),
  );
  for (const [i, outcome] of outcomes.entries()) settled.set(corpus[i]!.name, outcome);
}, 120_000);

afterAll(() => stopTestStack(stack, dataDir));

function settledRecord(model: CompatModel): ModelVersion {
  const outcome = settled.get(model.name);
  if (outcome === undefined) throw new Error(`${model.name} was never published`);
  if (outcome.status === "rejected") throw outcome.reason;
  return outcome.value;
}

function request(path: string, key: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${stack!.url}${path}`, {
    ...init,
    headers: { "x-api-key": key, "content-type": "application/json", ...init.headers },
  });
}

async function okJson<T>(response: Response): Promise<T> {
  const text = await response.text();
  expect(response.status, text).toBe(200);
  return parseExactJson(text) as T;
}

interface AdminVersion {
  status: string;
  reason?: string;
  warnings?: string[];
  signature?: { inputs: TensorSpec[]; outputs: TensorSpec[] };
}

const adminRecord = (model: CompatModel) =>
  request(`/admin/models/${model.name}/versions/${VERSION}`, ADMIN_KEY).then(okJson<AdminVersion>);

async function infer(model: CompatModel): Promise<{ variant: string | null; outputs: PlainTensor[] }> {
  const response = await request(`/v2/models/${model.name}/infer`, API_KEY, {
    method: "POST",
    body: v2RequestBody(model.inputs),
  });
  const body = await okJson<{ outputs: PlainTensor[] }>(response);
  return { variant: response.headers.get("x-maas-variant"), outputs: body.outputs };
}

/** What onnxruntime gives for the model, or for the graph that declares its reshaped output as a tensor. */
const expectedOutputs = (model: CompatModel) =>
  runDirectly(model.reshaped?.reference ?? model.bytes, model.inputs);

describe("compatibility corpus: every model onnxruntime runs is served with its own outputs", () => {
  it.each(runs)("serves $name ($exercises) as onnxruntime runs it", async (model) => {
    const expected = await expectedOutputs(model);
    const record = settledRecord(model);
    expect(["ready", "optimizing"], `${model.name} is ${record.status}: ${record.reason}`).toContain(
      record.status,
    );

    const served = await infer(model);

    expect(served.variant, "the x-maas-variant header").toMatch(/^[a-z0-9][a-z0-9-]*$/);
    expect(served.outputs.map((output) => output.name)).toEqual(expected.map((output) => output.name));
    for (const output of expected) {
      expectSameTensor(
        served.outputs.find((candidate) => candidate.name === output.name),
        output,
      );
    }
  });

  it.each(oldStamps)(
    "records a warning for $name, stamped below onnxruntime's guaranteed opset 7",
    async (model) => {
      const record = await adminRecord(model);

      expect(record.status).not.toBe("failed");
      expect(record.warnings ?? []).not.toHaveLength(0);
    },
  );

  it.each(reshaped)("serves $name's ZipMap as FP32 [N, 3] and lists its class labels", async (model) => {
    const { output, classLabels } = model.reshaped!;
    const rows = model.inputs[0]!.shape[0]!;

    const record = await adminRecord(model);
    const signature = record.signature?.outputs.find((spec) => spec.name === output);
    expect(signature).toMatchObject({ datatype: "FP32", classLabels });

    const served = await infer(model);
    const probabilities = served.outputs.find((candidate) => candidate.name === output);
    expect(probabilities).toMatchObject({ datatype: "FP32", shape: [rows, classLabels.length] });
  });

  it("describes declared dims as the models declare them: shared names, unknown as -1, weights left out", async () => {
    const byName = new Map(runs.map((model) => [model.name, model]));
    const inputs = async (name: string) =>
      (await adminRecord(byName.get(name)!)).signature?.inputs.map(({ name, shape }) => ({ name, shape }));

    expect(await inputs("symbolic-dims")).toEqual([
      { name: "a", shape: ["batch", "width"] },
      { name: "b", shape: ["batch", "width"] },
    ]);
    expect(await inputs("unknown-dims")).toEqual([{ name: "features", shape: [-1, 4] }]);
    expect(await inputs("initializers-as-inputs")).toEqual([{ name: "features", shape: ["batch", 4] }]);
  });
});

describe("compatibility corpus: models onnxruntime cannot load", () => {
  it.each(refused)("fails $name with onnxruntime's reason and never serves it", async (model) => {
    const direct = await ortLoadError(model.bytes);
    const record = settledRecord(model);

    const ready = await request(`/v2/models/${model.name}/versions/${VERSION}/ready`, API_KEY);
    await ready.body?.cancel();

    expect(direct).toMatch(model.refusedBy!);
    expect(record.status).toBe("failed");
    expect(record.reason).toMatch(/^onnxruntime cannot load the model: /);
    expect(record.reason).toMatch(model.refusedBy!);
    expect(ready.status).not.toBe(200);
  });
});
