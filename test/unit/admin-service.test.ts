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
import type { ModelVersion, Variant, VersionStatus } from "#core/model.ts";
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
    ["PUT", "/admin/models/iris/versions/3/variant", { kind: "set-variant", model: "iris", version: 3 }],
    ["PUT", "/admin/models/iris/versions/3/variant/", { kind: "set-variant", model: "iris", version: 3 }],
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
    ["GET", "/admin/models/iris/versions/1/variant", ["PUT"]],
    ["POST", "/admin/models/iris/versions/1/variant", ["PUT"]],
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
    ["a variant of an alias", "PUT", "/admin/models/iris/aliases/default/variant", RouteNotFoundError],
    ["a variant of the versions", "PUT", "/admin/models/iris/versions/variant", ModelNotFoundError],
    ["a variant of version 0", "PUT", "/admin/models/iris/versions/0/variant", ModelNotFoundError],
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
        serving: "original",
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

  it("shows the variant choice and the warnings, and no serving variant for a version that cannot serve", async () => {
    const name = uniqueName("warned");
    await seed(name, 1);
    await seed(name, 2, "failed", "bad");
    const variantChoice = { kind: "original", by: "manifest" as const, at: "2026-01-02T00:00:00.000Z" };
    const warnings = ["the model uses ai.onnx opset 7, which onnxruntime only keeps working"];
    await registry.updateVersion(name, 1, "ready", { variantChoice, warnings });

    const ready = await handle({ kind: "get-version", model: name, version: 1 });
    const failed = await handle({ kind: "get-version", model: name, version: 2 });

    expect(ready.body).toMatchObject({ serving: "original", variantChoice, warnings });
    expect(failed.body).not.toHaveProperty("serving");
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

  it("refuses a body nested a million deep before parsing it, naming the limit", async () => {
    const name = uniqueName("deep-body");
    await seed(name, 1);
    const body = `${"[".repeat(1_000_000)}${"]".repeat(1_000_000)}`;

    const error = await rejectionOf(
      handle({ kind: "set-alias", model: name, alias: "default" }, body),
      InvalidRequestError,
    );

    expect(error.message).toMatch(/nests deeper than 64 levels/);
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

/** Variants as the optimizer records them: built ones have an artifact; `selected` marks one. */
function optimizerVariants(selected = "original"): Variant[] {
  const built = (kind: string, digit: string, extra: Partial<Variant> = {}): Variant => ({
    kind,
    bytes: 100,
    selected: kind === selected,
    artifact: {
      bucket: "models",
      key: `artifacts/sha256/${digit.repeat(64)}.onnx`,
      sha256: digit.repeat(64),
      bytes: 100,
    },
    ...extra,
  });
  const { artifact: _unbuilt, ...fp16 } = built("fp16", "e");
  return [
    built("original", "a"),
    built("graph-extended", "b", {
      parity: { passed: true, maxAbsDiff: 0, maxRelativeDiff: 0, cosine: 1, inputs: "generated" },
    }),
    built("int8-dynamic", "c", {
      parity: { passed: true, maxAbsDiff: 0.01, maxRelativeDiff: 0.002, cosine: 0.9999, inputs: "generated" },
    }),
    built("int4-awq", "d", {
      parity: {
        passed: false,
        maxAbsDiff: 0.9,
        maxRelativeDiff: 0.4,
        cosine: 0.8,
        reason: "cosine 0.8 under 0.999",
        inputs: "generated",
      },
    }),
    fp16,
    { kind: "int8-static", bytes: 0, selected: false, error: "int8-static: onnxruntime cannot load it" },
  ];
}

async function seedOptimized(
  name: string,
  status: VersionStatus = "ready",
  target: ModelVersion["target"] = "lambda",
) {
  await seed(name, 1, status);
  await registry.updateVersion(name, 1, status, { variants: optimizerVariants(), target });
}

const chooseVariant = (model: string, kind: string, version = 1) =>
  handle({ kind: "set-variant", model, version }, JSON.stringify({ kind }));

const selectedKinds = async (name: string) =>
  (await registry.getVersionConsistent(name, 1))?.variants.filter((v) => v.selected).map((v) => v.kind);

describe("AdminService: choosing the variant a version serves", () => {
  it("selects a built variant alone, records the operator's choice and describes the version serving it", async () => {
    const name = uniqueName("chosen");
    await seedOptimized(name);
    await registry.setAlias(name, "default", 1);

    const result = await chooseVariant(name, "int8-dynamic");

    expect(result.status).toBe(200);
    expect(result.body).toMatchObject({
      name,
      version: 1,
      serving: "int8-dynamic",
      variantChoice: { kind: "int8-dynamic", by: "operator", at: "2026-02-03T04:05:06.000Z" },
      aliases: ["default"],
      updatedAt: "2026-02-03T04:05:06.000Z",
    });
    expect(await selectedKinds(name)).toEqual(["int8-dynamic"]);
    const stored = await registry.getVersionConsistent(name, 1);
    expect(stored?.variantChoice).toEqual({
      kind: "int8-dynamic",
      by: "operator",
      at: "2026-02-03T04:05:06.000Z",
    });
    expect(stored?.variants.find((v) => v.kind === "int8-dynamic")?.artifact?.sha256).toBe("c".repeat(64));
    expect((await handle({ kind: "get-version", model: name, version: 1 })).body).toEqual(result.body);
  });

  it("goes back to the original, selecting its own entry and nothing else", async () => {
    const name = uniqueName("unchosen");
    await seedOptimized(name);
    await chooseVariant(name, "int8-dynamic");

    const result = await chooseVariant(name, "original");

    expect(result.body).toMatchObject({
      serving: "original",
      variantChoice: { kind: "original", by: "operator" },
    });
    expect(await selectedKinds(name)).toEqual(["original"]);
  });

  it("goes back to the original on a version the optimizer has not reached, and chooses while it optimizes", async () => {
    const fresh = uniqueName("fresh");
    await seed(fresh, 1);
    const optimizing = uniqueName("optimizing-choice");
    await seedOptimized(optimizing, "optimizing");

    const original = await chooseVariant(fresh, "original");
    const chosen = await chooseVariant(optimizing, "graph-extended");

    expect(original.body).toMatchObject({
      serving: "original",
      variants: [],
      variantChoice: { kind: "original" },
    });
    expect(chosen.body).toMatchObject({ status: "optimizing", serving: "graph-extended" });
    expect(await selectedKinds(optimizing)).toEqual(["graph-extended"]);
  });

  it("refuses a variant that missed the parity gate, naming the threshold it missed", async () => {
    const name = uniqueName("lossy");
    await seedOptimized(name);

    const error = await rejectionOf(chooseVariant(name, "int4-awq"), MaasError);

    expect(error).toBeInstanceOf(ConflictError);
    expect(error.message).toMatch(/int4-awq.*failed the parity gate \(cosine 0.8 under 0.999\)/);
    expect(await selectedKinds(name)).not.toContain("int4-awq");
  });

  it("lets a SageMaker version go back to the original", async () => {
    const name = uniqueName("gpu-original");
    await seedOptimized(name, "ready", "sagemaker");

    const result = await chooseVariant(name, "original");

    expect(result.body).toMatchObject({ target: "sagemaker", serving: "original" });
  });

  it.each([
    [
      "a variant that does not exist",
      "int2",
      "lambda",
      /has no variant 'int2'; its variants are: original, graph-extended, int8-dynamic, int4-awq, fp16, int8-static$/,
    ],
    [
      "a variant that failed to build",
      "int8-static",
      "lambda",
      /variant 'int8-static' of version 1 of model '.*' failed: int8-static: onnxruntime cannot load it$/,
    ],
    [
      "a variant that was not built",
      "fp16",
      "lambda",
      /variant 'fp16' of version 1 of model '.*' was not built$/,
    ],
    [
      "a variant of a SageMaker version",
      "int8-dynamic",
      "sagemaker",
      /is served by SageMaker, whose endpoint serves the original upload: only 'original' can be chosen$/,
    ],
  ] as const)(
    "refuses with 409 %s, leaving the selection as it was",
    async (_case, kind, target, message) => {
      const name = uniqueName("refused-variant");
      await seedOptimized(name, "ready", target);

      const error = await rejectionOf(chooseVariant(name, kind), MaasError);

      expect(error).toBeInstanceOf(ConflictError);
      expect(error.status).toBe(409);
      expect(error.message).toMatch(message);
      expect(await selectedKinds(name)).toEqual(["original"]);
      expect((await registry.getVersionConsistent(name, 1))?.variantChoice).toBeUndefined();
    },
  );

  it("refuses with 409 a variant of a version the optimizer has not reached", async () => {
    const name = uniqueName("unoptimized");
    await seed(name, 1);

    const error = await rejectionOf(chooseVariant(name, "int8-dynamic"), MaasError);

    expect(error.status).toBe(409);
    expect(error.message).toBe(
      `version 1 of model '${name}' has no variant 'int8-dynamic': it has no variants yet (optimization has not finished)`,
    );
  });

  it.each([
    ["registering", undefined, `cannot serve a variant: it is registering`],
    ["failed", "the model uses opset 99", `cannot serve a variant: it is failed: the model uses opset 99`],
  ] as const)("refuses with 409 a version that is %s, even its original", async (status, reason, message) => {
    const name = uniqueName(`choice-${status}`);
    await seed(name, 1, status, reason);

    const error = await rejectionOf(chooseVariant(name, "original"), MaasError);

    expect(error).toBeInstanceOf(ConflictError);
    expect(error.message).toBe(`version 1 of model '${name}' ${message}`);
  });

  it("answers 404 to an unknown model and to an unknown version of a known one", async () => {
    const name = uniqueName("known");
    await seed(name, 1);

    const model = await rejectionOf(chooseVariant("nobody-here", "original"), MaasError);
    const version = await rejectionOf(chooseVariant(name, "original", 2), MaasError);

    expect(model).toBeInstanceOf(ModelNotFoundError);
    expect(version).toBeInstanceOf(ModelNotFoundError);
    expect(version.message).toBe(`model '${name}' has no version 2`);
  });

  it.each([
    ["not JSON", "kind=int8"],
    ["empty", ""],
    ["missing the kind", "{}"],
    ["a kind that is not a string", '{"kind": 8}'],
    ["an empty kind", '{"kind": ""}'],
    ["an extra field", '{"kind": "original", "force": true}'],
  ])("answers 400 to a body that is %s", async (_case, body) => {
    const name = uniqueName("bad-variant-body");
    await seedOptimized(name);

    const error = await rejectionOf(
      handle({ kind: "set-variant", model: name, version: 1 }, body),
      MaasError,
    );

    expect(error).toBeInstanceOf(InvalidRequestError);
    expect(error.status).toBe(400);
    expect(await selectedKinds(name)).toEqual(["original"]);
  });

  /** The registry, with one write of another party's landing between the service's read and its write. */
  class RacingRegistry extends DynamoModelRegistry {
    race: (() => Promise<unknown>) | undefined;

    override async updateVersion(...args: Parameters<DynamoModelRegistry["updateVersion"]>) {
      const race = this.race;
      this.race = undefined;
      await race?.();
      return super.updateVersion(...args);
    }
  }

  const racing = () => {
    const raced = new RacingRegistry(emulators.dynamoClient(), TABLE);
    return {
      raced,
      admin: new AdminService({
        registry: raced,
        deleteUpload: async () => {},
        now: () => "2026-02-03T04:05:06.000Z",
      }),
    };
  };

  it("writes only onto the status it read: a version claimed meanwhile is read again and chosen on", async () => {
    const name = uniqueName("raced");
    await seedOptimized(name);
    const { raced, admin } = racing();
    raced.race = () => registry.updateVersion(name, 1, "ready", { status: "optimizing" });

    const result = await admin.handle(
      { kind: "set-variant", model: name, version: 1 },
      '{"kind": "int8-dynamic"}',
    );

    expect(result.body).toMatchObject({ status: "optimizing", serving: "int8-dynamic" });
    expect(await selectedKinds(name)).toEqual(["int8-dynamic"]);
  });

  it("refuses with 409, writing nothing, when the version failed between the read and the write", async () => {
    const name = uniqueName("raced-failed");
    await seedOptimized(name);
    const { raced, admin } = racing();
    raced.race = () =>
      registry.updateVersion(name, 1, "ready", { status: "failed", reason: "deleted upload" });

    const error = await rejectionOf(
      admin.handle({ kind: "set-variant", model: name, version: 1 }, '{"kind": "int8-dynamic"}'),
      MaasError,
    );

    expect(error.status).toBe(409);
    expect(error.message).toMatch(/it is failed: deleted upload/);
    expect(await selectedKinds(name)).toEqual(["original"]);
  });
});
