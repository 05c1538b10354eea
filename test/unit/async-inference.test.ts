import { describe, expect, it } from "vitest";
import {
  InferenceFailedError,
  InvalidRequestError,
  MaasError,
  ModelNotFoundError,
  ModelNotReadyError,
  PayloadTooLargeError,
} from "#core/errors.ts";
import { AsyncInference, type AsyncInferenceOptions, JobRunner } from "#core/jobs/async-inference.ts";
import type { Job, JobObjects, JobQueue, JobStatus, JobStore, JobUpdate } from "#core/jobs/jobs.ts";
import type { ModelVersion } from "#core/model.ts";
import type { ModelEntries, ModelRegistry, ModelSummary } from "#core/registry/registry.ts";
import { encodeBinaryRequest, encodeInferResponse, type InferBody } from "#core/v2/binary-data.ts";
import type { InferenceService, InferOutcome } from "#core/v2/inference-service.ts";
import { inferResponseJson, type TensorResponse } from "#core/v2/tensor-codec.ts";
import { rejectionOf } from "../support/rejection.ts";

const BUCKET = "maas-models";
const UPLOAD_PREFIX = `s3://${BUCKET}/async/inputs/`;
/** Not on a whole second: expires_at is rounded up to one. */
const START = Date.UTC(2026, 3, 9, 12, 0, 0, 250);
const DAY_MS = 86_400_000;

/** Job records in a Map; update is a conditional write on the job's status, as the table's is. */
class MemoryJobStore implements JobStore {
  readonly jobs = new Map<string, Job>();

  async create(job: Job): Promise<void> {
    if (this.jobs.has(job.id)) throw new Error(`job ${job.id} exists`);
    this.jobs.set(job.id, job);
  }

  async get(id: string): Promise<Job | undefined> {
    return this.jobs.get(id);
  }

  async update(id: string, from: readonly JobStatus[], update: JobUpdate): Promise<boolean> {
    const job = this.jobs.get(id);
    if (job === undefined || !from.includes(job.status)) return false;
    this.jobs.set(id, { ...job, ...update });
    return true;
  }

  job(id: string): Job {
    const job = this.jobs.get(id);
    if (job === undefined) throw new Error(`no job ${id}`);
    return job;
  }
}

interface StoredObject {
  readonly body: Buffer;
  readonly contentType: string;
  readonly metadata?: Record<string, string>;
}

/** Objects in a Map; presigned URLs name the key and the lifetime they were asked for. */
class MemoryJobObjects implements JobObjects {
  readonly objects = new Map<string, StoredObject>();
  readonly puts: string[] = [];
  putFailure: Error | undefined;

  async presignPut(key: string, expiresSeconds: number): Promise<string> {
    return `https://put.example/${key}?expires=${expiresSeconds}`;
  }

  async presignMultipart(key: string, parts: number, expiresSeconds: number) {
    return {
      uploadId: `upload-of-${key}`,
      partUrls: Array.from({ length: parts }, (_, i) => `https://part.example/${key}?part=${i + 1}`),
      completeUrl: `https://complete.example/${key}?expires=${expiresSeconds}`,
    };
  }

  async presignGet(key: string, expiresSeconds: number): Promise<string> {
    return `https://get.example/${key}?expires=${expiresSeconds}`;
  }

  async size(key: string): Promise<number | undefined> {
    return this.objects.get(key)?.body.length;
  }

  async get(key: string): Promise<Buffer> {
    const object = this.objects.get(key);
    if (object === undefined) throw new Error(`NoSuchKey: ${key}`);
    return object.body;
  }

  async put(key: string, body: string | Uint8Array, contentType: string, metadata?: Record<string, string>) {
    if (this.putFailure !== undefined) throw this.putFailure;
    this.puts.push(key);
    this.objects.set(key, {
      body: Buffer.from(typeof body === "string" ? Buffer.from(body, "utf8") : body),
      contentType,
      ...(metadata === undefined ? {} : { metadata }),
    });
  }

  object(key: string): StoredObject {
    const object = this.objects.get(key);
    if (object === undefined) throw new Error(`no object ${key}`);
    return object;
  }
}

class MemoryJobQueue implements JobQueue {
  readonly sent: string[] = [];
  failure: Error | undefined;

  async send(id: string): Promise<void> {
    if (this.failure !== undefined) throw this.failure;
    this.sent.push(id);
  }
}

function version(number: number, status: ModelVersion["status"] = "ready"): ModelVersion {
  return {
    name: "iris",
    version: number,
    status,
    target: "lambda",
    artifact: { bucket: BUCKET, key: `models/iris/${number}/model.onnx`, sha256: "0".repeat(64), bytes: 1 },
    signature: {
      inputs: [{ name: "features", datatype: "FP32", shape: ["batch", 4] }],
      outputs: [{ name: "label", datatype: "INT64", shape: ["batch"] }],
    },
    variants: [],
    createdAt: "2026-04-09T12:00:00.000Z",
    updatedAt: "2026-04-09T12:00:00.000Z",
  };
}

/** iris: versions 1 and 2 ready, 3 still registering; the alias `stable` names 1. */
class MemoryRegistry implements ModelRegistry {
  readonly versions = [version(1), version(2), version(3, "registering")];
  readonly aliases = new Map([["stable", 1]]);

  async getVersion(name: string, number: number) {
    return (await this.listVersions(name)).find((record) => record.version === number);
  }
  async getAlias(name: string, alias: string) {
    return name === "iris" ? this.aliases.get(alias) : undefined;
  }
  async listVersions(name: string): Promise<ModelVersion[]> {
    return name === "iris" ? [...this.versions] : [];
  }
  async getModel(name: string): Promise<ModelEntries> {
    return { versions: await this.listVersions(name), aliases: name === "iris" ? this.aliases : new Map() };
  }
  async listModels(): Promise<ModelSummary[]> {
    return [{ name: "iris", versions: this.versions.map((record) => record.version) }];
  }
}

function setup(options: Partial<AsyncInferenceOptions> = {}) {
  const store = new MemoryJobStore();
  const objects = new MemoryJobObjects();
  const queue = new MemoryJobQueue();
  const clock = { now: START };
  const jobs = new AsyncInference({
    registry: new MemoryRegistry(),
    store,
    objects,
    queue,
    bucket: BUCKET,
    now: () => clock.now,
    ...options,
  });
  return { jobs, store, objects, queue, clock };
}

const irisJson = JSON.stringify({
  inputs: [{ name: "features", shape: [1, 4], datatype: "FP32", data: [5.1, 3.5, 1.4, 0.2] }],
});

/** An object uploaded to a fresh upload URI, as a caller's PUT would leave it. */
async function uploaded(context: ReturnType<typeof setup>, body: Uint8Array | string): Promise<string> {
  const { input_uri } = await context.jobs.upload("");
  await context.objects.put(input_uri.slice(`s3://${BUCKET}/`.length), body, "application/octet-stream");
  context.objects.puts.length = 0;
  return input_uri;
}

describe("AsyncInference.upload", () => {
  it.each(["", "  ", "{}"])("presigns one PUT under async/inputs/ for the body %j", async (body) => {
    const { jobs } = setup();

    const ticket = await jobs.upload(body);

    expect(ticket.input_uri).toMatch(/^s3:\/\/maas-models\/async\/inputs\/[A-Za-z0-9_-]{22}$/);
    const key = ticket.input_uri.slice(`s3://${BUCKET}/`.length);
    expect(ticket).toEqual({
      url: `https://put.example/${key}?expires=3600`,
      input_uri: ticket.input_uri,
      expires_in: 3600,
    });
  });

  it("gives every upload a key of its own", async () => {
    const { jobs } = setup();

    const [first, second] = await Promise.all([jobs.upload(""), jobs.upload("")]);

    expect(first.input_uri).not.toBe(second.input_uri);
  });

  it("presigns a multipart upload of the parts asked for, and its completion", async () => {
    const { jobs } = setup({ urlExpiresSeconds: 600 });

    const ticket = await jobs.upload(JSON.stringify({ parts: 3 }));

    const key = ticket.input_uri.slice(`s3://${BUCKET}/`.length);
    expect(key).toMatch(/^async\/inputs\//);
    expect(ticket).toEqual({
      input_uri: ticket.input_uri,
      expires_in: 600,
      upload_id: `upload-of-${key}`,
      part_urls: [1, 2, 3].map((part) => `https://part.example/${key}?part=${part}`),
      complete_url: `https://complete.example/${key}?expires=600`,
    });
  });

  it("takes S3's most parts, 10 000", async () => {
    const { jobs } = setup();

    const ticket = await jobs.upload(JSON.stringify({ parts: 10_000 }));

    expect(ticket.part_urls).toHaveLength(10_000);
  });

  it.each([0, -1, 10_001, 1.5, "3", null])("refuses parts %j with a 400", async (parts) => {
    const { jobs } = setup();

    const error = await rejectionOf(jobs.upload(JSON.stringify({ parts })), InvalidRequestError);

    expect(error.status).toBe(400);
    expect(error.message).toBe("parts must be an integer from 1 to 10000");
  });

  it("refuses a body that is not JSON with a 400", async () => {
    const { jobs } = setup();

    const error = await rejectionOf(jobs.upload("parts=3"), InvalidRequestError);

    expect(error.message).toMatch(/^request body is not valid JSON: /);
  });
});

describe("AsyncInference.submit", () => {
  it("stores an inline JSON request under async/inputs/<id> and queues a job on the newest servable version", async () => {
    const context = setup({ retentionDays: 2 });

    const { id, status } = await context.jobs.submit("iris", undefined, irisJson, "key-a");

    expect(status).toBe("queued");
    expect(id).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(context.objects.object(`async/inputs/${id}`)).toEqual({
      body: Buffer.from(irisJson),
      contentType: "application/json",
    });
    expect(context.store.job(id)).toEqual({
      id,
      model_name: "iris",
      model_version: 2,
      status: "queued",
      owner: "key-a",
      input: { key: `async/inputs/${id}` },
      attempts: 0,
      created_at: START,
      updated_at: START,
      expires_at: Math.ceil(START / 1000) + 2 * 86_400,
    });
    expect(context.queue.sent).toEqual([id]);
  });

  it("keeps jobs seven days unless told otherwise", async () => {
    const context = setup();

    const { id } = await context.jobs.submit("iris", undefined, irisJson, "key-a");

    expect(context.store.job(id).expires_at).toBe(Math.ceil(START / 1000) + 7 * 86_400);
  });

  it("stores an inline binary request as sent, with its header length", async () => {
    const context = setup();
    const body = encodeBinaryRequest(
      [{ name: "features", type: "float32", dims: [1, 4], data: Float32Array.of(5.1, 3.5, 1.4, 0.2) }],
      ["label"],
    );

    const { id } = await context.jobs.submit("iris", undefined, body, "key-a");

    expect(context.objects.object(`async/inputs/${id}`)).toEqual({
      body: Buffer.from(body.bytes),
      contentType: "application/octet-stream",
    });
    expect(context.store.job(id).input).toEqual({
      key: `async/inputs/${id}`,
      headerLength: body.headerLength,
    });
  });

  it("resolves an alias at submission, so the job runs the version it named then", async () => {
    const context = setup();

    const { id } = await context.jobs.submit("iris", "stable", irisJson, "key-a");

    expect(context.store.job(id).model_version).toBe(1);
  });

  it("leaves the owner out of a job submitted without an API key", async () => {
    const context = setup();

    const { id } = await context.jobs.submit("iris", undefined, irisJson, undefined);

    expect(context.store.job(id)).not.toHaveProperty("owner");
  });

  it("refuses a version that cannot serve, and an unknown model, before storing anything", async () => {
    const context = setup();

    await rejectionOf(context.jobs.submit("iris", "3", irisJson, "key-a"), ModelNotReadyError);
    await rejectionOf(context.jobs.submit("lily", undefined, irisJson, "key-a"), ModelNotFoundError);

    expect(context.objects.puts).toEqual([]);
    expect(context.store.jobs.size).toBe(0);
    expect(context.queue.sent).toEqual([]);
  });

  it("refuses an inline request that does not parse with a 400, before storing anything", async () => {
    const context = setup();
    const body = JSON.stringify({
      inputs: [{ name: "x", datatype: "FP32", shape: [1], parameters: { binary_data_size: 4 } }],
    });

    const error = await rejectionOf(
      context.jobs.submit("iris", undefined, body, "key-a"),
      InvalidRequestError,
    );

    expect(error.message).toContain("Inference-Header-Content-Length");
    expect(context.objects.puts).toEqual([]);
    expect(context.store.jobs.size).toBe(0);
  });

  it("queues a job on an uploaded input without copying it, with the header length it was given", async () => {
    const context = setup();
    const inputUri = await uploaded(context, "0123456789abcdef");

    const { id } = await context.jobs.submit(
      "iris",
      undefined,
      JSON.stringify({ input_uri: inputUri, inference_header_content_length: 12 }),
      "key-a",
    );

    expect(context.store.job(id).input).toEqual({
      key: inputUri.slice(`s3://${BUCKET}/`.length),
      headerLength: 12,
    });
    expect(context.objects.puts).toEqual([]);
    expect(context.queue.sent).toEqual([id]);
  });

  it.each([
    `s3://${BUCKET}/models/iris/1/model.onnx`,
    "s3://another-bucket/async/inputs/abcdefghijklmnopqrstuv",
    `${UPLOAD_PREFIX}../../models/iris/1/model.onnx`,
    `${UPLOAD_PREFIX}..`,
    `${UPLOAD_PREFIX}abc/def`,
    UPLOAD_PREFIX,
    `${UPLOAD_PREFIX}${"a".repeat(65)}`,
    `https://${BUCKET}.s3.amazonaws.com/async/inputs/abcdefghijklmnopqrstuv`,
  ])("refuses an input_uri that is not an upload of this service: %s", async (inputUri) => {
    const context = setup();

    const error = await rejectionOf(
      context.jobs.submit("iris", undefined, JSON.stringify({ input_uri: inputUri }), "key-a"),
      InvalidRequestError,
    );

    expect(error.status).toBe(400);
    expect(error.message).toBe(`input_uri must be an upload URI from POST /v2/uploads (${UPLOAD_PREFIX}...)`);
    expect(context.store.jobs.size).toBe(0);
  });

  it("refuses an input_uri that is not a string", async () => {
    const context = setup();

    const error = await rejectionOf(
      context.jobs.submit("iris", undefined, JSON.stringify({ input_uri: 7 }), "key-a"),
      InvalidRequestError,
    );

    expect(error.message).toBe("input_uri must be a string");
  });

  it.each([0, -1, 1.5, "12"])("refuses an inference_header_content_length of %j", async (headerLength) => {
    const context = setup();
    const inputUri = await uploaded(context, "0123456789abcdef");

    const error = await rejectionOf(
      context.jobs.submit(
        "iris",
        undefined,
        JSON.stringify({ input_uri: inputUri, inference_header_content_length: headerLength }),
        "key-a",
      ),
      InvalidRequestError,
    );

    expect(error.message).toBe("inference_header_content_length must be a positive integer");
  });

  it("refuses an input_uri that nothing was uploaded to with a 400 that says to PUT first", async () => {
    const context = setup();
    const { input_uri } = await context.jobs.upload("");

    const error = await rejectionOf(
      context.jobs.submit("iris", undefined, JSON.stringify({ input_uri }), "key-a"),
      InvalidRequestError,
    );

    expect(error.message).toBe(
      `nothing was uploaded to ${input_uri}; PUT the request body to the URL that POST /v2/uploads gave, then submit`,
    );
    expect(context.store.jobs.size).toBe(0);
  });

  it("takes an upload of exactly maxInputBytes and refuses one byte more with a 413 naming both", async () => {
    const context = setup({ maxInputBytes: 16 });
    const fits = await uploaded(context, "x".repeat(16));
    const over = await uploaded(context, "x".repeat(17));

    await context.jobs.submit("iris", undefined, JSON.stringify({ input_uri: fits }), "key-a");
    const error = await rejectionOf(
      context.jobs.submit("iris", undefined, JSON.stringify({ input_uri: over }), "key-a"),
      PayloadTooLargeError,
    );

    expect(error.status).toBe(413);
    expect(error.message).toBe(
      "the uploaded input is 17 bytes; asynchronous inference takes at most 16 bytes (MAAS_ASYNC_MAX_INPUT_BYTES)",
    );
    expect(context.store.jobs.size).toBe(1);
  });

  it("fails the job and rethrows the queue's error when it cannot be queued", async () => {
    const context = setup();
    const queueDown = new Error("the queue is unreachable");
    context.queue.failure = queueDown;

    const error = await rejectionOf(context.jobs.submit("iris", undefined, irisJson, "key-a"), Error);

    expect(error).toBe(queueDown);
    const [job] = [...context.store.jobs.values()];
    expect(job?.status).toBe("failed");
    expect(job?.error).toBe("the job could not be queued; submit it again");
  });
});

describe("AsyncInference.status", () => {
  async function submitted(context: ReturnType<typeof setup>, owner: string | undefined) {
    return (await context.jobs.submit("iris", undefined, irisJson, owner)).id;
  }

  it("shows a queued job to its owner, without an output", async () => {
    const context = setup();
    const id = await submitted(context, "key-a");

    const view = await context.jobs.status(id, "key-a");

    expect(view).toEqual({
      id,
      model_name: "iris",
      model_version: "2",
      status: "queued",
      created_at: new Date(START).toISOString(),
      updated_at: new Date(START).toISOString(),
    });
  });

  it("answers 404 with one message for another key's job, an unknown id and a malformed id", async () => {
    const context = setup();
    const id = await submitted(context, "key-a");
    const unknown = "A".repeat(22);

    const cases: [string, string | undefined][] = [
      [id, "key-b"],
      [id, undefined],
      [unknown, "key-a"],
      ["../../etc/passwd", "key-a"],
      [`${id}x`, "key-a"],
    ];
    for (const [asked, owner] of cases) {
      const error = await rejectionOf(context.jobs.status(asked, owner), MaasError);

      expect(error.status, `${asked} as ${owner}`).toBe(404);
      expect(error.code).toBe("job_not_found");
      expect(error.message).toBe(`job '${asked}' not found`);
    }
  });

  it("shows a job submitted without a key only to callers without one", async () => {
    const context = setup();
    const id = await submitted(context, undefined);

    await expect(context.jobs.status(id, undefined)).resolves.toMatchObject({ id });
    await rejectionOf(context.jobs.status(id, "key-a"), MaasError);
  });

  it("shows a job until its expiry and answers 404 after it", async () => {
    const context = setup({ retentionDays: 1 });
    const id = await submitted(context, "key-a");
    const expiresMs = context.store.job(id).expires_at * 1000;

    context.clock.now = expiresMs;
    await expect(context.jobs.status(id, "key-a")).resolves.toMatchObject({ id });
    context.clock.now = expiresMs + 1;
    const error = await rejectionOf(context.jobs.status(id, "key-a"), MaasError);

    expect(error.message).toBe(`job '${id}' not found`);
    expect(expiresMs).toBe(Math.ceil(START / 1000) * 1000 + DAY_MS);
  });

  it("shows a failed job's error", async () => {
    const context = setup();
    const id = await submitted(context, "key-a");
    await context.store.update(id, ["queued"], { status: "failed", error: "input 'x' is wrong" });

    const view = await context.jobs.status(id, "key-a");

    expect(view.status).toBe("failed");
    expect(view.error).toBe("input 'x' is wrong");
    expect(view).not.toHaveProperty("output_url");
  });

  it("gives a succeeded JSON job's result as a presigned URL with its content type", async () => {
    const context = setup({ urlExpiresSeconds: 900 });
    const id = await submitted(context, "key-a");
    const output = { key: `async/results/${id}`, contentType: "application/json" };
    await context.store.update(id, ["queued"], { status: "succeeded", output, updated_at: START + 5_000 });

    const view = await context.jobs.status(id, "key-a");

    expect(view).toMatchObject({
      status: "succeeded",
      updated_at: new Date(START + 5_000).toISOString(),
      output_url: `https://get.example/async/results/${id}?expires=900`,
      output_content_type: "application/json",
      expires_in: 900,
    });
    expect(view).not.toHaveProperty("inference_header_content_length");
  });

  it("gives a succeeded binary job's JSON header length, which a presigned GET cannot send", async () => {
    const context = setup();
    const id = await submitted(context, "key-a");
    const output = { key: `async/results/${id}`, contentType: "application/octet-stream", headerLength: 321 };
    await context.store.update(id, ["queued"], { status: "succeeded", output });

    const view = await context.jobs.status(id, "key-a");

    expect(view.output_content_type).toBe("application/octet-stream");
    expect(view.inference_header_content_length).toBe(321);
  });
});

const labelResponse: TensorResponse = {
  model_name: "iris",
  model_version: "2",
  outputs: [{ name: "label", type: "int64", dims: [1], data: BigInt64Array.of(0n) }],
};

function outcome(response: TensorResponse, binary = false): InferOutcome {
  return {
    response,
    version: version(2) as InferOutcome["version"],
    backend: "lambda",
    variant: "original",
    binaryOutputs: () => binary,
  };
}

/** An InferenceService whose infer answers `answer` (or throws what it throws), recording its calls. */
function fakeService(answer: () => InferOutcome) {
  const calls: { name: string; reference: string | undefined; body: InferBody; latest: number }[] = [];
  const service = {
    async infer(name: string, reference: string | undefined, body: InferBody, latest: number) {
      calls.push({ name, reference, body, latest });
      return answer();
    },
  } as unknown as InferenceService;
  return { service, calls };
}

function failingWith(error: Error) {
  return fakeService(() => {
    throw error;
  });
}

/** A job in the store with its input object, as submit leaves it. */
async function storedJob(
  store: MemoryJobStore,
  objects: MemoryJobObjects,
  overrides: Partial<Job> = {},
  body: InferBody = irisJson,
): Promise<Job> {
  const id = overrides.id ?? "J".repeat(22);
  const input =
    typeof body === "string"
      ? { key: `async/inputs/${id}` }
      : { key: `async/inputs/${id}`, headerLength: body.headerLength };
  await objects.put(input.key, typeof body === "string" ? body : body.bytes, "application/octet-stream");
  objects.puts.length = 0;
  const job: Job = {
    id,
    model_name: "iris",
    model_version: 2,
    status: "queued",
    owner: "key-a",
    input,
    attempts: 0,
    created_at: START,
    updated_at: START,
    expires_at: Math.ceil(START / 1000) + 7 * 86_400,
    ...overrides,
  };
  await store.create(job);
  return job;
}

function runnerSetup(service: InferenceService, maxReceives = 3) {
  const store = new MemoryJobStore();
  const objects = new MemoryJobObjects();
  const clock = { now: START + 1_000 };
  const runner = new JobRunner({ store, objects, service, maxReceives, now: () => clock.now });
  return { runner, store, objects, clock };
}

describe("JobRunner.run", () => {
  const LATEST = START + 60_000;

  it("runs a queued JSON job on its version and writes the JSON response once under async/results/<id>", async () => {
    const { service, calls } = fakeService(() => outcome(labelResponse));
    const { runner, store, objects } = runnerSetup(service);
    const job = await storedJob(store, objects);

    const result = await runner.run(job.id, 1, LATEST);

    expect(result).toBe("succeeded");
    expect(calls).toEqual([{ name: "iris", reference: "2", body: irisJson, latest: LATEST }]);
    expect(objects.puts).toEqual([`async/results/${job.id}`]);
    expect(objects.object(`async/results/${job.id}`)).toEqual({
      body: Buffer.from(inferResponseJson(labelResponse)),
      contentType: "application/json",
      metadata: {},
    });
    expect(store.job(job.id)).toMatchObject({
      status: "succeeded",
      attempts: 1,
      updated_at: START + 1_000,
      output: { key: `async/results/${job.id}`, contentType: "application/json" },
    });
    expect(store.job(job.id).output).not.toHaveProperty("headerLength");
  });

  it("gives the service a binary input as bytes with its header length, and writes a binary result with its header length", async () => {
    const { service, calls } = fakeService(() => outcome(labelResponse, true));
    const { runner, store, objects } = runnerSetup(service);
    const body = encodeBinaryRequest(
      [{ name: "features", type: "float32", dims: [1, 4], data: Float32Array.of(1, 2, 3, 4) }],
      ["label"],
    );
    const job = await storedJob(store, objects, {}, body);
    const expected = encodeInferResponse(labelResponse, () => true);
    if (!("bytes" in expected)) throw new Error("expected a binary response");

    await runner.run(job.id, 1, LATEST);

    const given = calls[0]?.body as { bytes: Buffer; headerLength: number };
    expect(Buffer.from(given.bytes)).toEqual(Buffer.from(body.bytes));
    expect(given.headerLength).toBe(body.headerLength);
    expect(objects.object(`async/results/${job.id}`)).toEqual({
      body: expected.bytes,
      contentType: "application/octet-stream",
      metadata: { "inference-header-content-length": String(expected.headerLength) },
    });
    expect(store.job(job.id).output).toEqual({
      key: `async/results/${job.id}`,
      contentType: "application/octet-stream",
      headerLength: expected.headerLength,
    });
  });

  it("writes the result once when the message is delivered again after the job succeeded", async () => {
    const { service, calls } = fakeService(() => outcome(labelResponse));
    const { runner, store, objects } = runnerSetup(service);
    const job = await storedJob(store, objects);

    await runner.run(job.id, 1, LATEST);
    const again = await runner.run(job.id, 2, LATEST);

    expect(again).toBe("skipped");
    expect(calls).toHaveLength(1);
    expect(objects.puts).toEqual([`async/results/${job.id}`]);
    expect(store.job(job.id).attempts).toBe(1);
  });

  it.each<JobStatus>(["succeeded", "failed"])(
    "skips a job that already %s, without running it",
    async (status) => {
      const { service, calls } = fakeService(() => outcome(labelResponse));
      const { runner, store, objects } = runnerSetup(service);
      const job = await storedJob(store, objects, { status, attempts: 1 });

      const result = await runner.run(job.id, 1, LATEST);

      expect(result).toBe("skipped");
      expect(calls).toEqual([]);
      expect(objects.puts).toEqual([]);
      expect(store.job(job.id)).toEqual(job);
    },
  );

  it("skips a job that is not in the store", async () => {
    const { service, calls } = fakeService(() => outcome(labelResponse));
    const { runner } = runnerSetup(service);

    await expect(runner.run("Z".repeat(22), 1, LATEST)).resolves.toBe("skipped");
    expect(calls).toEqual([]);
  });

  it("skips a job that another run ended between its read and its start", async () => {
    const { service, calls } = fakeService(() => outcome(labelResponse));
    const { runner, store, objects } = runnerSetup(service);
    const job = await storedJob(store, objects);
    const read = store.get.bind(store);
    store.get = async (id) => {
      const current = await read(id);
      await store.update(id, ["queued"], { status: "succeeded" });
      return current;
    };

    const result = await runner.run(job.id, 1, LATEST);

    expect(result).toBe("skipped");
    expect(calls).toEqual([]);
  });

  it("runs again a job left running by a worker that crashed, counting the attempt", async () => {
    const { service } = fakeService(() => outcome(labelResponse));
    const { runner, store, objects } = runnerSetup(service);
    const job = await storedJob(store, objects, { status: "running", attempts: 1 });

    const result = await runner.run(job.id, 2, LATEST);

    expect(result).toBe("succeeded");
    expect(store.job(job.id)).toMatchObject({ status: "succeeded", attempts: 2 });
  });

  it("fails a job at once on a caller's mistake (4xx), with its message redacted, on its first receive", async () => {
    const { service } = failingWith(
      new InvalidRequestError("input 'x' is wrong at /var/task/handler.js:10:3"),
    );
    const { runner, store, objects } = runnerSetup(service, 5);
    const job = await storedJob(store, objects);

    const result = await runner.run(job.id, 1, LATEST);

    expect(result).toBe("failed");
    expect(store.job(job.id)).toMatchObject({
      status: "failed",
      error: "input 'x' is wrong at [path]",
      attempts: 1,
      updated_at: START + 1_000,
    });
    expect(objects.puts).toEqual([]);
  });

  it("fails a job at once when its result passes the worker's response limit (413)", async () => {
    const { service } = fakeService(() => outcome({ ...labelResponse, maxBytes: 10 }));
    const { runner, store, objects } = runnerSetup(service, 5);
    const job = await storedJob(store, objects);

    const result = await runner.run(job.id, 1, LATEST);

    expect(result).toBe("failed");
    expect(store.job(job.id).error).toBe(
      "the response would exceed the job result limit of 10 bytes (MAAS_ASYNC_MAX_RESULT_BYTES): request fewer rows or other outputs",
    );
    expect(objects.puts).toEqual([]);
  });

  it.each([
    ["a 5xx MaasError", new InferenceFailedError("onnxruntime crashed")],
    ["an unexpected error", new Error("socket hang up")],
  ])("puts the job back in the queue and rethrows %s before the last receive", async (_, failure) => {
    const { service } = failingWith(failure);
    const { runner, store, objects } = runnerSetup(service, 3);
    const job = await storedJob(store, objects);

    const error = await rejectionOf(runner.run(job.id, 2, LATEST), Error);

    expect(error).toBe(failure);
    expect(store.job(job.id)).toMatchObject({ status: "queued", attempts: 1, updated_at: START + 1_000 });
    expect(store.job(job.id)).not.toHaveProperty("error");
    expect(objects.puts).toEqual([]);
  });

  it("puts the job back in the queue when writing its result fails before the last receive", async () => {
    const { service } = fakeService(() => outcome(labelResponse));
    const { runner, store, objects } = runnerSetup(service, 3);
    const job = await storedJob(store, objects);
    objects.putFailure = new Error("SlowDown");

    await rejectionOf(runner.run(job.id, 1, LATEST), Error);

    expect(store.job(job.id).status).toBe("queued");
  });

  it("fails a job on the last receive with a 5xx MaasError's redacted message", async () => {
    const { service } = failingWith(new InferenceFailedError("onnxruntime failed: tensor.cc:57 bad shape"));
    const { runner, store, objects } = runnerSetup(service, 3);
    const job = await storedJob(store, objects);

    const result = await runner.run(job.id, 3, LATEST);

    expect(result).toBe("failed");
    expect(store.job(job.id)).toMatchObject({
      status: "failed",
      error: "onnxruntime failed: [source] bad shape",
    });
  });

  it("fails a job on the last receive of an unexpected error without showing its message", async () => {
    const { service } = failingWith(new Error("ECONNRESET 10.0.3.7:443"));
    const { runner, store, objects } = runnerSetup(service, 3);
    const job = await storedJob(store, objects);

    const result = await runner.run(job.id, 4, LATEST);

    expect(result).toBe("failed");
    expect(store.job(job.id).error).toBe("internal error while running the job");
  });
});

describe("JobRunner.abandon", () => {
  const { service } = fakeService(() => outcome(labelResponse));

  it.each<JobStatus>(["queued", "running"])(
    "fails a %s job, saying how many receives it had",
    async (status) => {
      const { runner, store, objects, clock } = runnerSetup(service);
      const job = await storedJob(store, objects, { status });
      clock.now = START + 9_000;

      await runner.abandon(job.id, 4);

      expect(store.job(job.id)).toMatchObject({
        status: "failed",
        error: "the job failed 4 times without an answer (the worker crashed or timed out); submit it again",
        updated_at: START + 9_000,
      });
    },
  );

  it.each<[JobStatus, Partial<Job>]>([
    ["succeeded", { output: { key: "async/results/x", contentType: "application/json" } }],
    ["failed", { error: "input 'x' is wrong" }],
  ])("leaves a %s job as it ended", async (status, ended) => {
    const { runner, store, objects } = runnerSetup(service);
    const job = await storedJob(store, objects, { status, ...ended });

    await runner.abandon(job.id, 4);

    expect(store.job(job.id)).toEqual(job);
  });

  it("does nothing for a job that is not in the store", async () => {
    const { runner, store } = runnerSetup(service);

    await runner.abandon("Z".repeat(22), 4);

    expect(store.jobs.size).toBe(0);
  });
});
