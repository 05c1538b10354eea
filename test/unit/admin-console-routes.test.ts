/**
 * The admin routes the web console adds: a model's per-minute figures, and presigned uploads that publish
 * a new version from a browser. Against the emulators: the registry in DynamoDB, the uploads in S3.
 */
import { PutObjectCommand } from "@aws-sdk/client-s3";
import { beforeAll, describe, expect, it } from "vitest";
import { DynamoModelRegistry } from "#aws/registry/dynamo-registry.ts";
import {
  type AdminDeps,
  AdminService,
  ConflictError,
  matchAdminRoute,
  NotImplementedError,
  type VersionUploads,
} from "#core/admin/admin-service.ts";
import {
  InvalidRequestError,
  MaasError,
  MethodNotAllowedError,
  ModelNotFoundError,
  RouteNotFoundError,
} from "#core/errors.ts";
import { MINUTE_MS, MinuteFigures } from "#core/metrics/figures.ts";
import { newInferenceMetric } from "#core/metrics/inference-metric.ts";
import type { ModelVersion } from "#core/model.ts";
import { s3VersionUploads } from "#lambdas/admin/handler.ts";
import { MODEL_BUCKET, useBucketEmulators } from "../support/bucket-emulators.ts";
import { rejectionOf, thrownBy } from "../support/rejection.ts";

const NOW = Date.UTC(2026, 11, 7, 12, 30, 15);

describe("matchAdminRoute: the console's routes", () => {
  it.each([
    ["/admin/models/iris/figures", null, 60],
    ["/admin/models/iris/figures/", { minutes: "15" }, 15],
    ["/admin/models/iris/figures", { minutes: "1440" }, 1440],
  ])("matches GET %s with %j as %i minutes of figures", (path, query, minutes) => {
    expect(matchAdminRoute("GET", path, query)).toEqual({ kind: "figures", model: "iris", minutes });
  });

  it.each(["0", "1441", "1.5", "an hour"])("answers 400 to %s minutes of figures", (minutes) => {
    const error = thrownBy(
      () => matchAdminRoute("GET", "/admin/models/iris/figures", { minutes }),
      MaasError,
    );

    expect(error).toBeInstanceOf(InvalidRequestError);
    expect(error.message).toBe("minutes must be an integer from 1 to 1440");
  });

  it("matches POST .../versions/<v>/uploads", () => {
    expect(matchAdminRoute("POST", "/admin/models/iris/versions/7/uploads")).toEqual({
      kind: "create-uploads",
      model: "iris",
      version: 7,
    });
  });

  it.each([
    ["POST", "/admin/models/iris/figures", ["GET"], MethodNotAllowedError],
    ["GET", "/admin/models/iris/versions/7/uploads", ["POST"], MethodNotAllowedError],
    ["GET", "/admin/models/iris/figures/1", [], RouteNotFoundError],
    ["POST", "/admin/models/iris/aliases/default/uploads", [], RouteNotFoundError],
    ["GET", "/admin/models/Iris/figures", [], ModelNotFoundError],
  ])("refuses %s %s", (method, path, allowed, type) => {
    const error = thrownBy(() => matchAdminRoute(method, path), MaasError);

    expect(error).toBeInstanceOf(type);
    if (error instanceof MethodNotAllowedError) expect(error.allow).toEqual(allowed);
  });
});

const bucket = useBucketEmulators("admin-console");
let registry: DynamoModelRegistry;
let uploads: VersionUploads;

beforeAll(() => {
  const { emulators } = bucket;
  registry = new DynamoModelRegistry(emulators.dynamoClient(), "maas-registry");
  uploads = s3VersionUploads(MODEL_BUCKET, {
    region: emulators.region,
    credentials: emulators.credentials,
    endpoint: emulators.s3Endpoint,
    forcePathStyle: true,
  });
});

function service(deps: Partial<AdminDeps> = {}): AdminService {
  return new AdminService({
    registry,
    deleteUpload: async () => undefined,
    now: () => new Date(NOW).toISOString(),
    ...deps,
  });
}

let counter = 0;
const uniqueName = (prefix: string) => `${prefix}-${++counter}`;

async function seed(name: string, version: number): Promise<void> {
  const record: ModelVersion = {
    name,
    version,
    status: "failed",
    reason: "seeded",
    target: "lambda",
    variants: [],
    createdAt: "2026-01-01T00:00:00.000Z",
    updatedAt: "2026-01-01T00:00:00.000Z",
  };
  expect(await registry.createVersion(record)).toBeUndefined();
}

describe("AdminService: figures", () => {
  it("answers the last N minutes, the current one included, of every version's requests", async () => {
    const name = uniqueName("charted");
    await seed(name, 1);
    const figures = new MinuteFigures();
    const currentMinute = Math.floor(NOW / MINUTE_MS) * MINUTE_MS;
    for (const [at, totalMs, outcome] of [
      [currentMinute - 2 * MINUTE_MS, 4, "success"],
      [currentMinute, 2, "success"],
      [currentMinute + 1000, 9, "failure"],
    ] as const) {
      figures.record({
        ...newInferenceMetric(),
        model: name,
        version: 1,
        timestamp: at,
        totalUs: totalMs * 1000,
        outcome,
      });
    }

    const { status, body } = await service({ figures }).handle(
      { kind: "figures", model: name, minutes: 3 },
      "",
    );

    expect(status).toBe(200);
    expect(body).toEqual({
      model: name,
      stepSeconds: 60,
      timestamps: [0, 1, 2].map((i) => (currentMinute + (i - 2) * MINUTE_MS) / 1000),
      requests: [1, 0, 2],
      errors: [0, 0, 1],
      latencyMs: { p50: [4, null, 2], p90: [4, null, 2], p99: [4, null, 2] },
    });
  });

  it("answers 404 for a model the registry does not know", async () => {
    const error = await rejectionOf(
      service({ figures: new MinuteFigures() }).handle(
        { kind: "figures", model: uniqueName("absent"), minutes: 60 },
        "",
      ),
      ModelNotFoundError,
    );

    expect(error.status).toBe(404);
  });

  it("answers 501 where no figures are kept", async () => {
    const error = await rejectionOf(
      service().handle({ kind: "figures", model: "iris", minutes: 60 }, ""),
      NotImplementedError,
    );

    expect([error.status, error.message]).toEqual([501, "figures are not kept in this deployment"]);
  });
});

describe("AdminService: publish uploads", () => {
  const create = (name: string, version: number, body: unknown) =>
    service({ uploads }).handle({ kind: "create-uploads", model: name, version }, JSON.stringify(body));

  it("presigns the manifest and side files before the model, each a PUT into the version's folder", async () => {
    const name = uniqueName("published");

    const { status, body } = await create(name, 1, { files: ["model.onnx", "tokenizer.json", "maas.json"] });
    const tickets = (body as { uploads: { file: string; key: string; url: string }[] }).uploads;
    const answers = await Promise.all(
      tickets.map((ticket) => fetch(ticket.url, { method: "PUT", body: `bytes of ${ticket.file}` })),
    );

    expect(status).toBe(201);
    expect(body).toMatchObject({ name, version: 1, expiresIn: 3600 });
    expect(tickets.map((ticket) => [ticket.file, ticket.key])).toEqual([
      ["maas.json", `models/${name}/1/maas.json`],
      ["tokenizer.json", `models/${name}/1/tokenizer.json`],
      ["model.onnx", `models/${name}/1/model.onnx`],
    ]);
    expect(tickets.every((ticket) => !ticket.url.includes("x-amz-checksum"))).toBe(true);
    expect(answers.map((answer) => answer.status)).toEqual([200, 200, 200]);
    expect(await uploads.exists(`models/${name}/1/model.onnx`)).toBe(true);
  });

  it("presigns a large file as parts and the request that completes them", async () => {
    const name = uniqueName("large");
    const { body } = await create(name, 1, { files: [{ name: "model.onnx", parts: 2 }] });
    const [ticket] = (body as { uploads: { partUrls: string[]; completeUrl: string; uploadId: string }[] })
      .uploads;
    const parts = [new Uint8Array(5 * 1024 * 1024).fill(1), new Uint8Array(10).fill(2)];

    const etags = [];
    for (const [index, url] of (ticket?.partUrls ?? []).entries()) {
      const answer = await fetch(url, { method: "PUT", body: parts[index] });
      etags.push(answer.headers.get("etag"));
    }
    const xml = etags
      .map((etag, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${etag}</ETag></Part>`)
      .join("");
    const completed = await fetch(ticket?.completeUrl ?? "", {
      method: "POST",
      body: `<CompleteMultipartUpload>${xml}</CompleteMultipartUpload>`,
    });

    expect(ticket?.uploadId).toEqual(expect.any(String));
    expect(ticket?.partUrls).toHaveLength(2);
    expect(completed.status).toBe(200);
    expect(await uploads.exists(`models/${name}/1/model.onnx`)).toBe(true);
  });

  it("refuses a version the registry already has, whatever its status", async () => {
    const name = uniqueName("taken");
    await seed(name, 1);

    const error = await rejectionOf(create(name, 1, { files: ["model.onnx"] }), ConflictError);

    expect(error.status).toBe(409);
    expect(error.message).toBe(
      `version 1 of model '${name}' already exists (failed): publish a new version number`,
    );
  });

  it("refuses a version whose model is already uploaded but not yet registered", async () => {
    const name = uniqueName("racing");
    await bucket.emulators
      .s3Client()
      .send(new PutObjectCommand({ Bucket: MODEL_BUCKET, Key: `models/${name}/2/model.onnx`, Body: "x" }));

    const error = await rejectionOf(create(name, 2, { files: ["model.onnx"] }), ConflictError);

    expect(error.message).toMatch(/already uploaded and being registered/);
  });

  it.each([
    ["no model", { files: ["maas.json"] }, /files must include model\.onnx/],
    ["a repeated file", { files: ["model.onnx", "model.onnx"] }, /must not repeat a name/],
    ["a path", { files: ["model.onnx", "../escape.json"] }, /files\[1\]/],
    ["another kind of file", { files: ["model.onnx", "weights.bin"] }, /files\[1\]/],
    ["no parts", { files: [{ name: "model.onnx", parts: 0 }] }, /files\[0\]/],
    ["an unknown field", { files: ["model.onnx"], overwrite: true }, /overwrite/],
  ])("answers 400 to a body with %s", async (_case, body, message) => {
    const error = await rejectionOf(create(uniqueName("bad"), 1, body), InvalidRequestError);

    expect(error.status).toBe(400);
    expect(error.message).toMatch(message);
  });

  it("answers 400 to a version past what an upload key can name", async () => {
    const error = await rejectionOf(
      create(uniqueName("huge"), 2 ** 31, { files: ["model.onnx"] }),
      InvalidRequestError,
    );

    expect(error.message).toBe(`a version is a positive integer up to ${2 ** 31 - 1}`);
  });

  it("answers 501 where publishing through the API is not set up", async () => {
    const error = await rejectionOf(
      service().handle({ kind: "create-uploads", model: "iris", version: 9 }, '{"files":["model.onnx"]}'),
      NotImplementedError,
    );

    expect(error.status).toBe(501);
  });
});
