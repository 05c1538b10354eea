import { describe, expect, it } from "vitest";
import {
  type MaasError,
  MethodNotAllowedError,
  ModelNotFoundError,
  RouteNotFoundError,
} from "#core/errors.ts";
import { matchV2Route } from "#core/v2/routes.ts";

function routeError(method: string, path: string): MaasError {
  try {
    matchV2Route(method, path);
  } catch (error) {
    return error as MaasError;
  }
  throw new Error(`${method} ${path} matched a route`);
}

describe("matchV2Route", () => {
  it.each([
    ["GET", "/v2", { kind: "server-metadata" }],
    ["GET", "/v2/health/live", { kind: "live" }],
    ["GET", "/v2/health/ready", { kind: "ready" }],
    ["GET", "/v2/models", { kind: "list-models" }],
    ["GET", "/v2/models/iris", { kind: "model-metadata", model: "iris", version: undefined }],
    ["GET", "/v2/models/iris/versions/3", { kind: "model-metadata", model: "iris", version: "3" }],
    ["GET", "/v2/models/iris/ready", { kind: "model-ready", model: "iris", version: undefined }],
    ["GET", "/v2/models/iris/versions/3/ready", { kind: "model-ready", model: "iris", version: "3" }],
    ["POST", "/v2/models/iris/infer", { kind: "infer", model: "iris", version: undefined }],
    ["POST", "/v2/models/iris/versions/3/infer", { kind: "infer", model: "iris", version: "3" }],
    ["GET", "/v2/models/stats", { kind: "stats" }],
    ["GET", "/v2/models/iris/stats", { kind: "stats", model: "iris", version: undefined }],
    ["GET", "/v2/models/iris/versions/3/stats", { kind: "stats", model: "iris", version: "3" }],
  ])("matches %s %s", (method, path, route) => {
    expect(matchV2Route(method, path)).toEqual(route);
  });

  it("passes an alias through as the version", () => {
    expect(matchV2Route("POST", "/v2/models/iris/versions/prod/infer")).toEqual({
      kind: "infer",
      model: "iris",
      version: "prod",
    });
  });

  it("accepts every character the model name alphabet allows", () => {
    expect(matchV2Route("GET", "/v2/models/bert-base_v2.1")).toEqual({
      kind: "model-metadata",
      model: "bert-base_v2.1",
      version: undefined,
    });
  });

  it("decodes a percent-encoded path segment", () => {
    expect(matchV2Route("GET", "/v2/models/my%2Dmodel/versions/canary%2D1")).toEqual({
      kind: "model-metadata",
      model: "my-model",
      version: "canary-1",
    });
  });

  it.each([
    ["GET", "/v2/", { kind: "server-metadata" }],
    ["GET", "/v2/health/live/", { kind: "live" }],
    ["GET", "/v2/models/", { kind: "list-models" }],
    ["GET", "/v2/models/iris/", { kind: "model-metadata", model: "iris", version: undefined }],
    ["POST", "/v2/models/iris/versions/2/infer/", { kind: "infer", model: "iris", version: "2" }],
  ])("ignores a trailing slash: %s %s", (method, path, route) => {
    expect(matchV2Route(method, path)).toEqual(route);
  });

  it("answers HEAD on a GET route like GET", () => {
    expect(matchV2Route("HEAD", "/v2/health/ready")).toEqual({ kind: "ready" });
    expect(matchV2Route("HEAD", "/v2/models/iris/ready")).toEqual({
      kind: "model-ready",
      model: "iris",
      version: undefined,
    });
  });

  it.each([
    ["POST", "/v2/health/live", "GET"],
    ["DELETE", "/v2", "GET"],
    ["PUT", "/v2/models", "GET"],
    ["POST", "/v2/models/iris", "GET"],
    ["POST", "/v2/models/iris/versions/1/ready", "GET"],
    ["GET", "/v2/models/iris/infer", "POST"],
    ["HEAD", "/v2/models/iris/versions/1/infer", "POST"],
  ])("answers %s %s with 405 and allows %s", (method, path, allowed) => {
    const error = routeError(method, path);

    expect(error).toBeInstanceOf(MethodNotAllowedError);
    expect(error.status).toBe(405);
    expect((error as MethodNotAllowedError).allow).toEqual([allowed]);
    expect(error.message).toBe(`${method} is not allowed on ${path}; use ${allowed}`);
  });

  it.each([
    "/",
    "/v1/models/iris",
    "/v2/health",
    "/v2/models/iris/versions",
    "/v2/models/iris/versions/1/2",
    "/v2/models/iris/explain",
    "/v2/models/iris/infer/extra",
    "/v2//models",
  ])("answers an unknown path %s with 404", (path) => {
    const error = routeError("GET", path);

    expect(error).toBeInstanceOf(RouteNotFoundError);
    expect(error.status).toBe(404);
    expect(error.message).toContain(path === "/" ? "no route for GET /" : path);
  });

  it.each(["Iris", "-iris", "a%2Fb", "x".repeat(65), "iris%20model"])(
    "answers the invalid model name %s with 404 and the naming rule",
    (name) => {
      const error = routeError("GET", `/v2/models/${name}`);

      expect(error).toBeInstanceOf(ModelNotFoundError);
      expect(error.status).toBe(404);
      expect(error.message).toMatch(/names are 1-64 lower-case letters, digits, '-', '_' or '\.'/);
    },
  );

  it("accepts a 64-character model name", () => {
    const name = "m".repeat(64);

    expect(matchV2Route("GET", `/v2/models/${name}`)).toMatchObject({ model: name });
  });

  it("answers a path it matched before with the same route, and still checks the method", () => {
    for (let i = 0; i < 300; i++) matchV2Route("GET", `/v2/models/m${i}/ready`);
    const first = matchV2Route("POST", "/v2/models/iris/versions/2/infer/");
    expect(matchV2Route("POST", "/v2/models/iris/versions/2/infer/")).toEqual(first);
    const error = routeError("GET", "/v2/models/iris/versions/2/infer/");
    expect(error).toBeInstanceOf(MethodNotAllowedError);
    expect(error.message).toContain("/v2/models/iris/versions/2/infer");
    expect(matchV2Route("GET", "/v2/models/m0/ready")).toEqual({
      kind: "model-ready",
      model: "m0",
      version: undefined,
    });
    expect(routeError("GET", "/v2/models/Bad%20Name").status).toBe(404);
    expect(routeError("GET", "/v2/models/Bad%20Name").status).toBe(404);
  });
});
