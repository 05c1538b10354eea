import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { DynamoModelRegistry } from "#aws/registry/dynamo-registry.ts";
import { type AdminRoute, AdminService, ConflictError, matchAdminRoute } from "#core/admin/admin-service.ts";
import {
  InvalidRequestError,
  MaasError,
  MethodNotAllowedError,
  ModelNotFoundError,
  RouteNotFoundError,
} from "#core/errors.ts";
import type { ModelVersion, VersionStatus } from "#core/model.ts";
import { type Emulators, startEmulators } from "../../local/emulators.ts";
import { rejectionOf, thrownBy } from "../support/rejection.ts";

const TABLE = "admin-registry";

describe("matchAdminRoute", () => {
  it.each<[string, string, AdminRoute]>([
    ["GET", "/admin/models", { kind: "list-models" }],
    ["GET", "/admin/models/", { kind: "list-models" }],
    ["GET", "/admin/models/iris/versions", { kind: "list-versions", model: "iris" }],
    ["GET", "/admin/models/iris/versions/3", { kind: "get-version", model: "iris", version: 3 }],
    ["GET", "/admin/models/iris/versions/3/", { kind: "get-version", model: "iris", version: 3 }],
    ["DELETE", "/admin/models/iris/versions/3", { kind: "delete-version", model: "iris", version: 3 }],
    ["GET", "/admin/models/iris/aliases", { kind: "list-aliases", model: "iris" }],
    ["GET", "/admin/models/iris/aliases/default", { kind: "get-alias", model: "iris", alias: "default" }],
    ["PUT", "/admin/models/iris/aliases/default", { kind: "set-alias", model: "iris", alias: "default" }],
    ["DELETE", "/admin/models/iris/aliases/canary", { kind: "delete-alias", model: "iris", alias: "canary" }],
    [
      "POST",
      "/admin/models/iris/aliases/default/rollback",
      { kind: "rollback-alias", model: "iris", alias: "default" },
    ],
    ["GET", "/admin/models/my-model.v2_x/versions", { kind: "list-versions", model: "my-model.v2_x" }],
    ["GET", "/admin/models/my%2Dmodel/versions", { kind: "list-versions", model: "my-model" }],
    [
      "GET",
      "/admin/models/iris/versions/2147483647",
      { kind: "get-version", model: "iris", version: 2147483647 },
    ],
  ])("matches %s %s", (method, path, route) => {
    expect(matchAdminRoute(method, path)).toEqual(route);
  });

  it.each([
    ["POST", "/admin/models", ["GET"]],
    ["DELETE", "/admin/models/iris/versions", ["GET"]],
    ["POST", "/admin/models/iris/versions/1", ["GET", "DELETE"]],
    ["PUT", "/admin/models/iris/versions/1", ["GET", "DELETE"]],
    ["PUT", "/admin/models/iris/aliases", ["GET"]],
    ["POST", "/admin/models/iris/aliases/default", ["GET", "PUT", "DELETE"]],
    ["PATCH", "/admin/models/iris/aliases/default", ["GET", "PUT", "DELETE"]],
    ["GET", "/admin/models/iris/aliases/default/rollback", ["POST"]],
    ["PUT", "/admin/models/iris/aliases/default/rollback", ["POST"]],
  ])("answers 405 to %s %s, allowing %j", (method, path, allowed) => {
    const error = thrownBy(() => matchAdminRoute(method, path), MaasError);

    expect(error).toBeInstanceOf(MethodNotAllowedError);
    expect(error.status).toBe(405);
    expect((error as MethodNotAllowedError).allow).toEqual(allowed);
  });

  it.each([
    ["an upper-case letter", "Default"],
    ["a leading digit", "1st"],
    ["a dot", "v.2"],
    ["65 characters", `a${"b".repeat(64)}`],
    ["a malformed escape", "%ZZ"],
  ])("answers 400 to an alias with %s", (_case, alias) => {
    for (const method of ["GET", "PUT", "DELETE"]) {
      const error = thrownBy(() => matchAdminRoute(method, `/admin/models/iris/aliases/${alias}`), MaasError);

      expect(error).toBeInstanceOf(InvalidRequestError);
      expect(error.status).toBe(400);
      expect(error.message).toMatch(/is not a valid alias/);
    }
    expect(
      thrownBy(() => matchAdminRoute("POST", `/admin/models/iris/aliases/${alias}/rollback`), MaasError)
        .status,
    ).toBe(400);
  });

  it.each(["0", "01", "-1", "1.5", "latest", "12345678901"])(
    "answers 404 to version '%s', which is not a version number",
    (version) => {
      const error = thrownBy(
        () => matchAdminRoute("GET", `/admin/models/iris/versions/${version}`),
        MaasError,
      );

      expect(error).toBeInstanceOf(ModelNotFoundError);
      expect(error.status).toBe(404);
    },
  );

  it.each([
    ["an invalid model name", "GET", "/admin/models/Iris/versions", ModelNotFoundError],
    ["a model name with a malformed escape", "GET", "/admin/models/%E0%A4%A/versions", ModelNotFoundError],
    ["a model without a collection", "GET", "/admin/models/iris", RouteNotFoundError],
    ["an unknown collection", "GET", "/admin/models/iris/variants", RouteNotFoundError],
    ["an action on a version", "POST", "/admin/models/iris/versions/1/rollback", RouteNotFoundError],
    ["an empty model name", "GET", "/admin/models//versions", RouteNotFoundError],
    ["a path outside /admin/models", "GET", "/admin/users", RouteNotFoundError],
    [
      "a path one level too deep",
      "GET",
      "/admin/models/iris/aliases/default/rollback/now",
      RouteNotFoundError,
    ],
  ])("answers 404 to %s", (_case, method, path, type) => {
    const error = thrownBy(() => matchAdminRoute(method, path), MaasError);

    expect(error).toBeInstanceOf(type);
    expect(error.status).toBe(404);
  });
});

let dataDir: string;
let emulators: Emulators;
let registry: DynamoModelRegistry;
let deletedUploads: [string, number][];
let service: AdminService;

beforeAll(async () => {
  dataDir = await mkdtemp(join(tmpdir(), "maas-admin-"));
  emulators = await startEmulators({ dataDir, s3Port: 0, bucket: "unused", table: TABLE });
  registry = new DynamoModelRegistry(emulators.dynamoClient(), TABLE);
});

afterAll(async () => {
  await emulators?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

beforeEach(() => {
  deletedUploads = [];
  service = new AdminService({
    registry,
    deleteUpload: async (name, version) => {
      deletedUploads.push([name, version]);
    },
    now: () => "2026-02-03T04:05:06.000Z",
  });
});

/** A model name no other test uses: every test shares one registry table. */
let counter = 0;
const uniqueName = (prefix: string) => `${prefix}-${++counter}`;

async function seed(name: string, version: number, status: VersionStatus = "ready", reason?: string) {
  const servable = status === "ready" || status === "optimizing";
  const record: ModelVersion = {
    name,
    version,
    status,
    ...(reason === undefined ? {} : { reason }),
    target: "lambda",
    ...(servable
      ? {
          artifact: {
            bucket: "models",
            key: `artifacts/sha256/${"a".repeat(64)}.onnx`,
            sha256: "a".repeat(64),
            bytes: 135,
          },
          signature: {
            inputs: [{ name: "x", datatype: "FP32", shape: ["batch", 2] }],
            outputs: [{ name: "y", datatype: "FP32", shape: ["batch", 2] }],
          },
        }
      : {}),
    variants: [],
    source: { key: `models/${name}/${version}/model.onnx`, etag: "e".repeat(32) },
    createdAt: "2026-01-01T00:00:00.000Z",
    updatedAt: "2026-01-01T00:00:00.000Z",
  };
  expect(await registry.createVersion(record)).toBeUndefined();
  return record;
}

const handle = (route: AdminRoute, body = "") => service.handle(route, body);
const setAlias = (model: string, alias: string, version: number) =>
  handle({ kind: "set-alias", model, alias }, JSON.stringify({ version }));
const rollback = (model: string, alias: string) => handle({ kind: "rollback-alias", model, alias });

describe("AdminService: versions", () => {
  it("describes a version with its status, signature, digest and the aliases naming it", async () => {
    const name = uniqueName("described");
    await seed(name, 1);
    await registry.setAlias(name, "default", 1);

    const result = await handle({ kind: "get-version", model: name, version: 1 });

    expect(result).toEqual({
      status: 200,
      body: {
        name,
        version: 1,
        status: "ready",
        target: "lambda",
        signature: {
          inputs: [{ name: "x", datatype: "FP32", shape: ["batch", 2] }],
          outputs: [{ name: "y", datatype: "FP32", shape: ["batch", 2] }],
        },
        sha256: "a".repeat(64),
        bytes: 135,
        variants: [],
        aliases: ["default"],
        createdAt: "2026-01-01T00:00:00.000Z",
        updatedAt: "2026-01-01T00:00:00.000Z",
      },
    });
  });

  it("shows a failed version's reason and leaves out its internals", async () => {
    const name = uniqueName("failed");
    await seed(name, 1, "failed", "onnxruntime cannot load the model: no op");

    const { body } = await handle({ kind: "get-version", model: name, version: 1 });

    expect(body).toMatchObject({ status: "failed", reason: "onnxruntime cannot load the model: no op" });
    expect(body).not.toHaveProperty("source");
    expect(body).not.toHaveProperty("optimizeState");
  });

  it("shows the upload a version refused", async () => {
    const name = uniqueName("refused");
    await seed(name, 1);
    const rejectedUpload = { etag: "f".repeat(32), at: "2026-01-02T00:00:00.000Z", reason: "immutable" };
    await registry.updateVersion(name, 1, "ready", { rejectedUpload });

    const { body } = await handle({ kind: "get-version", model: name, version: 1 });

    expect(body).toMatchObject({ rejectedUpload });
  });

  it("lists a model's versions oldest first, each with its aliases", async () => {
    const name = uniqueName("listed");
    await seed(name, 2);
    await seed(name, 1);
    await seed(name, 10, "registering");
    await registry.setAlias(name, "stable", 2);

    const { status, body } = await handle({ kind: "list-versions", model: name });

    expect(status).toBe(200);
    const versions = (body as { versions: { version: number; status: string; aliases: string[] }[] })
      .versions;
    expect(versions.map((v) => [v.version, v.status, v.aliases])).toEqual([
      [1, "ready", []],
      [2, "ready", ["stable"]],
      [10, "registering", []],
    ]);
  });

  it("lists the models with their versions", async () => {
    const name = uniqueName("catalogued");
    await seed(name, 1);
    await seed(name, 2, "failed", "bad");

    const { body } = await handle({ kind: "list-models" });

    expect((body as { models: unknown[] }).models).toContainEqual({ name, versions: [1, 2] });
  });

  it.each([
    ["a version of an unknown model", { kind: "get-version", model: "nobody-here", version: 1 }],
    ["the versions of an unknown model", { kind: "list-versions", model: "nobody-here" }],
    ["the aliases of an unknown model", { kind: "list-aliases", model: "nobody-here" }],
    ["an unknown alias", { kind: "get-alias", model: "nobody-here", alias: "default" }],
    ["deleting an unknown alias", { kind: "delete-alias", model: "nobody-here", alias: "default" }],
    ["rolling back an unknown alias", { kind: "rollback-alias", model: "nobody-here", alias: "default" }],
    ["deleting an unknown version", { kind: "delete-version", model: "nobody-here", version: 1 }],
  ] satisfies [string, AdminRoute][])("answers 404 to %s", async (_case, route) => {
    const error = await rejectionOf(handle(route, JSON.stringify({ version: 1 })), MaasError);

    expect(error).toBeInstanceOf(ModelNotFoundError);
    expect(error.status).toBe(404);
  });

  it("answers 404 to an unknown version of a known model, naming it", async () => {
    const name = uniqueName("known");
    await seed(name, 1);

    const error = await rejectionOf(handle({ kind: "get-version", model: name, version: 2 }), MaasError);

    expect(error.message).toBe(`model '${name}' has no version 2`);
  });
});

describe("AdminService: aliases", () => {
  it("points an alias at a ready version", async () => {
    const name = uniqueName("promoted");
    await seed(name, 1);

    const result = await setAlias(name, "default", 1);

    expect(result).toEqual({
      status: 200,
      body: { alias: "default", version: 1, updatedAt: "2026-02-03T04:05:06.000Z" },
    });
    expect(await registry.getAlias(name, "default")).toBe(1);
    expect(await handle({ kind: "get-alias", model: name, alias: "default" })).toEqual(result);
  });

  it("points an alias at an optimizing version, which still serves its original", async () => {
    const name = uniqueName("optimizing");
    await seed(name, 1, "optimizing");

    expect((await setAlias(name, "default", 1)).status).toBe(200);
  });

  it("refuses with 409 an alias to a failed version, giving its reason", async () => {
    const name = uniqueName("to-failed");
    await seed(name, 1, "failed", "the model uses ONNX operator set 6");

    const error = await rejectionOf(setAlias(name, "default", 1), MaasError);

    expect(error).toBeInstanceOf(ConflictError);
    expect(error.status).toBe(409);
    expect(error.message).toBe(
      `version 1 of model '${name}' cannot take traffic: it is failed: the model uses ONNX operator set 6`,
    );
    expect(await registry.getAlias(name, "default")).toBeUndefined();
  });

  it("refuses with 409 an alias to a version still registering", async () => {
    const name = uniqueName("to-registering");
    await seed(name, 1, "registering");

    const error = await rejectionOf(setAlias(name, "canary", 1), MaasError);

    expect(error.status).toBe(409);
    expect(error.message).toBe(`version 1 of model '${name}' cannot take traffic: it is registering`);
  });

  it("answers 404 to an alias for a version that does not exist", async () => {
    const name = uniqueName("to-nothing");
    await seed(name, 1);

    const error = await rejectionOf(setAlias(name, "default", 2), MaasError);

    expect(error.status).toBe(404);
    expect(await registry.getAlias(name, "default")).toBeUndefined();
  });

  it.each([
    ["not JSON", "version=2"],
    ["empty", ""],
    ["a string version", '{"version": "1"}'],
    ["version 0", '{"version": 0}'],
    ["a fractional version", '{"version": 1.5}'],
    ["an extra field", '{"version": 1, "force": true}'],
    ["missing the version", "{}"],
  ])("answers 400 to a body that is %s", async (_case, body) => {
    const name = uniqueName("bad-body");
    await seed(name, 1);

    const error = await rejectionOf(
      handle({ kind: "set-alias", model: name, alias: "default" }, body),
      MaasError,
    );

    expect(error).toBeInstanceOf(InvalidRequestError);
    expect(error.status).toBe(400);
  });

  it("rolls an alias back to where it pointed before, and forward again", async () => {
    const name = uniqueName("rolled");
    await seed(name, 1);
    await seed(name, 2);
    await setAlias(name, "default", 1);
    const moved = await setAlias(name, "default", 2);

    const back = await rollback(name, "default");
    const forward = await rollback(name, "default");

    expect(moved.body).toMatchObject({ version: 2, previous: 1 });
    expect(back).toEqual({ status: 200, body: expect.objectContaining({ version: 1, previous: 2 }) });
    expect(forward.body).toMatchObject({ version: 2, previous: 1 });
    expect(await registry.getAliasRecord(name, "default")).toMatchObject({ version: 2, previous: 1 });
  });

  it("keeps the rollback target when an alias is set again to where it points", async () => {
    const name = uniqueName("reset");
    await seed(name, 1);
    await seed(name, 2);
    await setAlias(name, "default", 1);
    await setAlias(name, "default", 2);

    await setAlias(name, "default", 2);

    expect((await rollback(name, "default")).body).toMatchObject({ version: 1 });
  });

  it("refuses with 409 to roll back an alias that never moved", async () => {
    const name = uniqueName("unmoved");
    await seed(name, 1);
    await setAlias(name, "default", 1);

    const error = await rejectionOf(rollback(name, "default"), MaasError);

    expect(error).toBeInstanceOf(ConflictError);
    expect(error.message).toBe(`alias 'default' of model '${name}' has no earlier version to roll back to`);
    expect(await registry.getAlias(name, "default")).toBe(1);
  });

  it("refuses to roll back onto a version deleted since, leaving the alias where it was", async () => {
    const name = uniqueName("gone-back");
    await seed(name, 1);
    await seed(name, 2);
    await setAlias(name, "default", 1);
    await setAlias(name, "default", 2);
    await handle({ kind: "delete-version", model: name, version: 1 });

    const error = await rejectionOf(rollback(name, "default"), MaasError);

    expect(error.status).toBe(409);
    expect(error.message).toMatch(/previous version 1 was deleted/);
    expect(await registry.getAlias(name, "default")).toBe(2);
  });

  it("lists a model's aliases and deletes one", async () => {
    const name = uniqueName("aliased");
    await seed(name, 1);
    await setAlias(name, "default", 1);
    await setAlias(name, "canary", 1);

    const listed = await handle({ kind: "list-aliases", model: name });
    const deleted = await handle({ kind: "delete-alias", model: name, alias: "canary" });
    const again = await rejectionOf(
      handle({ kind: "delete-alias", model: name, alias: "canary" }),
      MaasError,
    );

    expect(listed.body).toEqual({
      name,
      aliases: [
        { alias: "canary", version: 1, updatedAt: "2026-02-03T04:05:06.000Z" },
        { alias: "default", version: 1, updatedAt: "2026-02-03T04:05:06.000Z" },
      ],
    });
    expect(deleted).toEqual({ status: 204 });
    expect(again.status).toBe(404);
    expect(await registry.listAliases(name)).toHaveLength(1);
  });
});

describe("AdminService: deleting versions", () => {
  it("refuses with 409 to delete a version an alias points at, naming the alias", async () => {
    const name = uniqueName("held");
    await seed(name, 1);
    await setAlias(name, "default", 1);
    await setAlias(name, "stable", 1);

    const error = await rejectionOf(handle({ kind: "delete-version", model: name, version: 1 }), MaasError);

    expect(error).toBeInstanceOf(ConflictError);
    expect(error.message).toBe(
      `version 1 of model '${name}' is the target of alias 'default', 'stable': move the alias first`,
    );
    expect(await registry.getVersion(name, 1)).toBeDefined();
    expect(deletedUploads).toEqual([]);
  });

  it("deletes a version once its alias moved, with its uploaded files", async () => {
    const name = uniqueName("released");
    await seed(name, 1);
    await seed(name, 2);
    await setAlias(name, "default", 1);
    await setAlias(name, "default", 2);

    const result = await handle({ kind: "delete-version", model: name, version: 1 });

    expect(result).toEqual({ status: 204 });
    expect(deletedUploads).toEqual([[name, 1]]);
    expect(await registry.getVersionConsistent(name, 1)).toBeUndefined();
    expect((await handle({ kind: "list-versions", model: name })).body).toMatchObject({
      versions: [expect.objectContaining({ version: 2 })],
    });
    expect((await registry.listModels()).find((model) => model.name === name)).toEqual({
      name,
      versions: [2],
    });
  });

  it("deletes a failed version, and the model disappears with its last version", async () => {
    const name = uniqueName("failed-only");
    await seed(name, 1, "failed", "bad");

    await handle({ kind: "delete-version", model: name, version: 1 });

    expect(deletedUploads).toEqual([[name, 1]]);
    expect((await registry.listModels()).map((model) => model.name)).not.toContain(name);
    expect((await rejectionOf(handle({ kind: "list-versions", model: name }), MaasError)).status).toBe(404);
  });
});
