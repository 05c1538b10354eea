import { PutObjectCommand } from "@aws-sdk/client-s3";
import { SendMessageBatchCommand, SendMessageCommand } from "@aws-sdk/client-sqs";
import { Upload } from "@aws-sdk/lib-storage";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { manifestKey, modelKey } from "#core/registry/manifest.ts";
import { type LocalStack, OPTIMIZE_QUEUE, REGISTER_QUEUE } from "../../local/stack.ts";
import { buildMlpModel } from "../../models/mlp.ts";
import { craftedModels, unknownOperatorModel, validAddModel } from "../support/crafted-models.ts";
import { startTestStack, stopTestStack } from "../support/local-stack.ts";

const API_KEY = "publish-inference-key";
const ADMIN_KEY = "publish-admin-key";
const DEAD_LETTER_QUEUE = `${REGISTER_QUEUE}-dlq`;
const MULTIPART_THRESHOLD = 8 * 1024 * 1024;

let dataDir: string;
let stack: LocalStack;

beforeAll(async () => {
  // Failed register messages come back after 1 s, so a poison message is dead-lettered in seconds.
  ({ stack, dataDir } = await startTestStack("publish", {
    apiKey: API_KEY,
    adminKey: ADMIN_KEY,
    registerVisibilitySeconds: 1,
  }));
});

afterAll(() => stopTestStack(stack, dataDir));

/** Uploads as any S3 client would: one PUT, or multipart above 8 MiB. */
async function upload(key: string, body: Uint8Array | string): Promise<void> {
  const s3 = stack.emulators.s3Client();
  if (body.length <= MULTIPART_THRESHOLD) {
    await s3.send(new PutObjectCommand({ Bucket: stack.bucket, Key: key, Body: body }));
    return;
  }
  await new Upload({
    client: s3,
    params: { Bucket: stack.bucket, Key: key, Body: body },
    partSize: MULTIPART_THRESHOLD,
  }).done();
}

const uploadModel = (name: string, version: number, bytes: Uint8Array) =>
  upload(modelKey(name, version), bytes);

function api(path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${stack.url}${path}`, {
    ...init,
    headers: { "x-api-key": API_KEY, "content-type": "application/json", ...init.headers },
  });
}

function admin(path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(`${stack.url}/admin${path}`, {
    ...init,
    headers: { "x-api-key": ADMIN_KEY, "content-type": "application/json", ...init.headers },
  });
}

async function okJson<T>(response: Response): Promise<T> {
  const text = await response.text();
  expect(response.status, text).toBe(200);
  return JSON.parse(text) as T;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((wake) => setTimeout(wake, 10));
  }
}

/** Polls the V2 readiness route until the version answers 200. */
function untilServable(name: string, version: number): Promise<true> {
  return until(`${name} v${version} to be servable`, async () => {
    const response = await api(`/v2/models/${name}/versions/${version}/ready`);
    await response.body?.cancel();
    return response.status === 200 ? true : undefined;
  });
}

interface AdminVersion {
  status: string;
  optimizedAt?: string;
  reason?: string;
  sha256?: string;
  rejectedUpload?: { etag: string; at: string; reason: string };
}

/** Polls the admin record until registration settles the version. */
function untilSettled(name: string, version: number): Promise<AdminVersion> {
  return until(`${name} v${version} to leave registering`, async () => {
    const response = await admin(`/models/${name}/versions/${version}`);
    if (response.status === 404) {
      await response.body?.cancel();
      return undefined;
    }
    const record = await okJson<AdminVersion>(response);
    return record.status === "registering" ? undefined : record;
  });
}

interface V2Response {
  model_name: string;
  model_version: string;
  outputs: { name: string; datatype: string; shape: number[]; data: number[] }[];
}

const IRIS_REQUEST = JSON.stringify({
  inputs: [{ name: "features", shape: [1, 4], datatype: "FP32", data: [6.7, 3.0, 5.2, 2.3] }],
});

/** The bystander: the demo iris model, published at start-up, must keep answering. */
async function expectIrisAnswers(): Promise<void> {
  const response = await api("/v2/models/iris/infer", { method: "POST", body: IRIS_REQUEST });
  const body = await okJson<V2Response>(response);
  expect(body.outputs.find((out) => out.name === "label")?.data).toEqual(["virginica"]);
}

function mlpRequest(width: number): string {
  const data = Array.from({ length: width }, (_, i) => ((i % 17) - 8) / 8);
  return JSON.stringify({ inputs: [{ name: "input", shape: [1, width], datatype: "FP32", data }] });
}

async function infer(path: string, body: string): Promise<{ version: string; output: number[] }> {
  const response = await api(`/v2/models/${path}/infer`, { method: "POST", body });
  const parsed = await okJson<V2Response>(response);
  expect(response.headers.get("x-maas-model-version")).toBe(parsed.model_version);
  // FP32 data arrives in its short float32 form: compare it as float32, as onnxruntime gives it.
  const output = (parsed.outputs[0]?.data ?? []).map((value) =>
    typeof value === "number" ? Math.fround(value) : value,
  );
  return { version: parsed.model_version, output };
}

async function directOutput(bytes: Uint8Array, width: number): Promise<number[]> {
  const session = await ort.InferenceSession.create(bytes);
  const input = (JSON.parse(mlpRequest(width)) as { inputs: { data: number[] }[] }).inputs[0]!.data;
  const result = await session.run({
    input: new ort.Tensor("float32", Float32Array.from(input), [1, width]),
  });
  await session.release();
  return Array.from(result.output!.data as Float32Array);
}

const inspectQueue = (name: string) => {
  const queue = stack.emulators.fauxqs.inspectQueue(name);
  if (queue === undefined) throw new Error(`no queue ${name}`);
  return queue;
};

describe("publish by upload", () => {
  it("makes a ~10 MB model uploaded by multipart servable over HTTP, and reports how long it took", async () => {
    const layers = [1024, 1280, 1024];
    const bytes = buildMlpModel({ layers, seed: 3, name: "mlp10" });
    expect(bytes.length).toBeGreaterThan(10_000_000);

    const started = performance.now();
    await uploadModel("mlp10", 1, bytes);
    const uploaded = performance.now();
    // The registry's own view, beside what clients see through the inference function's registry cache.
    const recordedReady = until("mlp10 v1 to be ready in the registry", async () => {
      const record = await stack.registry.getVersionConsistent("mlp10", 1);
      return record?.status === "ready" ? performance.now() : undefined;
    });
    await untilServable("mlp10", 1);
    const servable = performance.now();
    const readyInRegistry = await recordedReady;
    const served = await infer("mlp10/versions/1", mlpRequest(1024));
    const answered = performance.now();

    console.log(
      `upload-to-servable, ${(bytes.length / 1e6).toFixed(1)} MB model: ` +
        `${Math.round(servable - started)} ms from the start of the upload ` +
        `(upload ${Math.round(uploaded - started)} ms, registration ${Math.round(servable - uploaded)} ms; ` +
        `ready in the registry ${Math.round(readyInRegistry - started)} ms); ` +
        `first inference answered ${Math.round(answered - started)} ms after the upload started`,
    );
    expect(served.version).toBe("1");
    expect(served.output).toEqual(await directOutput(bytes, 1024));
    const record = await untilSettled("mlp10", 1);
    // Servable either way: the optimizer may already be working on it.
    expect(["ready", "optimizing"]).toContain(record.status);
  });

  it.each(craftedModels().map((model) => [model.name, model] as const))(
    "fails %s with its reason in the admin API, never serves it, and iris keeps answering",
    async (_label, model) => {
      await expectIrisAnswers();

      await uploadModel(model.name, 1, model.bytes);
      const record = await untilSettled(model.name, 1);
      const ready = await api(`/v2/models/${model.name}/versions/1/ready`);

      expect(record.status).toBe("failed");
      expect(record.reason).toMatch(model.reason);
      expect(ready.status).toBe(503);
      expect(await ready.json()).toEqual({ error: expect.stringContaining("failed to register") });
      await expectIrisAnswers();
    },
  );

  it("dead-letters a message that is not an S3 notification while an upload beside it registers", async () => {
    const poison = `not json ${Date.now()}`;
    const started = performance.now();

    await stack.sqs.send(
      new SendMessageCommand({ QueueUrl: stack.emulators.queueUrl(REGISTER_QUEUE), MessageBody: poison }),
    );
    await uploadModel("beside-poison", 1, validAddModel());
    await untilServable("beside-poison", 1);
    const registered = performance.now();
    const dead = await until(
      "the poison message to reach the dead-letter queue",
      async () => inspectQueue(DEAD_LETTER_QUEUE).messages.ready.find((message) => message.body === poison),
      15_000,
    );
    const deadLettered = performance.now();

    console.log(
      `poison message: neighbour servable after ${Math.round(registered - started)} ms, ` +
        `dead-lettered after ${Math.round(deadLettered - started)} ms`,
    );
    expect(registered).toBeLessThan(deadLettered);
    expect(dead.approximateReceiveCount).toBeGreaterThanOrEqual(3);
    const main = inspectQueue(REGISTER_QUEUE).messages;
    const stillQueued = [...main.ready, ...main.delayed, ...main.inflight.map((entry) => entry.message)];
    expect(stillQueued.some((message) => message.body === poison)).toBe(false);
    await expectIrisAnswers();
  });

  it("keeps serving a version's first bytes when different bytes are uploaded to it, and says so", async () => {
    const original = buildMlpModel({ layers: [4, 8, 2], seed: 11, name: "immutable" });
    const replacement = buildMlpModel({ layers: [4, 8, 2], seed: 12, name: "immutable" });
    const originalOutput = await directOutput(original, 4);
    expect(await directOutput(replacement, 4)).not.toEqual(originalOutput);
    await uploadModel("immutable", 1, original);
    await untilServable("immutable", 1);
    // Optimization over, so that the status after the re-upload is registration's doing alone.
    const before = await until("immutable v1 to be optimized", async () => {
      const record = await untilSettled("immutable", 1);
      return record.optimizedAt === undefined ? undefined : record;
    });
    expect((await infer("immutable/versions/1", mlpRequest(4))).output).toEqual(originalOutput);

    await uploadModel("immutable", 1, replacement);
    const after = await until("the re-upload to be rejected", async () => {
      const record = await untilSettled("immutable", 1);
      return record.rejectedUpload === undefined ? undefined : record;
    });
    stack.inference.registry.clear();
    const served = await infer("immutable/versions/1", mlpRequest(4));

    expect(after.status).toBe("ready");
    expect(after.sha256).toBe(before.sha256);
    expect(after.rejectedUpload?.reason).toMatch(
      /^model 'immutable' version 1 already exists and versions are immutable/,
    );
    expect(served.output).toEqual(originalOutput);
  });

  it("moves unversioned traffic with the default alias over HTTP, refuses a failed target, and rolls back", async () => {
    const v1 = buildMlpModel({ layers: [4, 8, 2], seed: 21, name: "promo" });
    const v2 = buildMlpModel({ layers: [4, 8, 2], seed: 22, name: "promo" });
    await upload(manifestKey("promo", 3), JSON.stringify({ description: "never loads" }));
    await Promise.all([
      uploadModel("promo", 1, v1),
      uploadModel("promo", 2, v2),
      uploadModel("promo", 3, unknownOperatorModel()),
    ]);
    await Promise.all([untilServable("promo", 1), untilServable("promo", 2), untilSettled("promo", 3)]);
    const servedVersion = async () => (await infer("promo", mlpRequest(4))).version;
    const untilUnversionedServes = (version: string) =>
      until(`unversioned promo to serve v${version}`, async () =>
        (await servedVersion()) === version ? true : undefined,
      );
    const put = (version: number) =>
      admin("/models/promo/aliases/default", { method: "PUT", body: JSON.stringify({ version }) });

    expect(await servedVersion()).toBe("2");
    expect(await okJson(await put(1))).toMatchObject({ alias: "default", version: 1 });
    await untilUnversionedServes("1");

    expect(await okJson(await put(2))).toMatchObject({ alias: "default", version: 2, previous: 1 });
    await untilUnversionedServes("2");

    const refused = await put(3);
    expect(refused.status).toBe(409);
    expect(await refused.json()).toEqual({
      error: expect.stringMatching(
        /version 3 of model 'promo' cannot take traffic: it is failed: onnxruntime/,
      ),
    });

    const rolledBack = await admin("/models/promo/aliases/default/rollback", { method: "POST" });
    expect(await okJson(rolledBack)).toMatchObject({ alias: "default", version: 1, previous: 2 });
    await untilUnversionedServes("1");
    expect((await infer("promo/versions/default", mlpRequest(4))).version).toBe("1");
    expect(await okJson(await admin("/models/promo/aliases"))).toMatchObject({
      aliases: [{ alias: "default", version: 1, previous: 2 }],
    });
  });

  it("refuses the inference key on the admin routes, and the admin key on inference", async () => {
    const withInferenceKey = await api("/admin/models/promo/aliases");
    const withAdminKey = await fetch(`${stack.url}/v2/models/iris/ready`, {
      headers: { "x-api-key": ADMIN_KEY },
    });

    expect(withInferenceKey.status).toBe(403);
    expect(withAdminKey.status).toBe(403);
  });

  it("leaves one version record and one optimize message after 1000 replays of a real S3 event", async () => {
    const key = modelKey("replayed", 1);
    const captured = stack.emulators.fauxqs.spy.waitForMessage(
      (message) =>
        message.service === "sqs" &&
        message.queueName === REGISTER_QUEUE &&
        message.body.includes(`"key":"${key}"`),
      "published",
      10_000,
    );
    await uploadModel("replayed", 1, validAddModel());
    const event = await captured;
    if (event.service !== "sqs") throw new Error("expected an SQS message");
    await untilServable("replayed", 1);

    const queueUrl = stack.emulators.queueUrl(REGISTER_QUEUE);
    const batches = Array.from({ length: 100 }, (_, batch) =>
      Array.from({ length: 10 }, (_, i) => ({ Id: `r${batch}-${i}`, MessageBody: event.body })),
    );
    const started = performance.now();
    for (let i = 0; i < batches.length; i += 10) {
      await Promise.all(
        batches
          .slice(i, i + 10)
          .map((entries) =>
            stack.sqs.send(new SendMessageBatchCommand({ QueueUrl: queueUrl, Entries: entries })),
          ),
      );
    }
    await until(
      "the register queue to drain",
      async () => {
        const { ready, delayed, inflight } = inspectQueue(REGISTER_QUEUE).messages;
        return ready.length + delayed.length + inflight.length === 0 ? true : undefined;
      },
      40_000,
    );
    console.log(`1000 replays drained in ${Math.round(performance.now() - started)} ms`);

    const versions = await stack.registry.listVersions("replayed");
    // The optimizer consumes its queue: count what was ever published to it, not what is left.
    const optimizeMessages = stack.emulators.fauxqs.spy
      .getAllMessages()
      .flatMap((message) =>
        message.service === "sqs" && message.queueName === OPTIMIZE_QUEUE && message.status === "published"
          ? [JSON.parse(message.body) as { name: string; version: number }]
          : [],
      )
      .filter((message) => message.name === "replayed");
    const dead = inspectQueue(DEAD_LETTER_QUEUE).messages.ready.filter(
      (message) => message.body === event.body,
    );

    expect(JSON.parse(event.body)).toMatchObject({
      Records: [{ eventName: "ObjectCreated:Put", s3: { bucket: { name: stack.bucket }, object: { key } } }],
    });
    expect(versions).toHaveLength(1);
    expect(versions[0]).toMatchObject({ optimizeState: "queued" });
    expect(["ready", "optimizing"]).toContain(versions[0]?.status);
    expect(optimizeMessages).toEqual([{ name: "replayed", version: 1 }]);
    expect(dead).toEqual([]);
    await expectIrisAnswers();
  });
});
