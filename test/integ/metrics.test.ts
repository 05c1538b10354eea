import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ModelStat, StatisticsResponse } from "#core/metrics/statistics.ts";
import { isServable } from "#core/registry/registry.ts";
import type { LocalStack } from "../../local/stack.ts";
import { buildMlpModel } from "../../models/mlp.ts";
import { randomBytesModel } from "../support/crafted-models.ts";
import { startTestStack, stopTestStack, TEST_ADMIN_KEY, TEST_API_KEY } from "../support/local-stack.ts";
import { parsePrometheus } from "../support/metric-outputs.ts";

/**
 * A scripted burst against the local stack (issue 18, done-when 1): successes and failures of two
 * classes across two models, then `/metrics` and the statistics extension report each exactly.
 */
let stack: LocalStack;
let dataDir: string | undefined;

const IRIS_ROWS = [
  [5.1, 3.5, 1.4, 0.2],
  [6.7, 3.0, 5.2, 2.3],
];
const MLP_ROWS = 3;

const irisRequest = JSON.stringify({
  inputs: [{ name: "features", shape: [2, 4], datatype: "FP32", data: IRIS_ROWS.flat() }],
});
const mlpRequest = JSON.stringify({
  inputs: [
    {
      name: "input",
      shape: [MLP_ROWS, 4],
      datatype: "FP32",
      data: Array.from({ length: 12 }, (_, i) => i / 10),
    },
  ],
});
/** A shape the signature refuses: 400, caller_error. */
const wrongShape = (input: string) =>
  JSON.stringify({ inputs: [{ name: input, shape: [1, 3], datatype: "FP32", data: [1, 2, 3] }] });

/** What the burst sends, and so what must be counted. */
const BURST = {
  irisSuccess: 7,
  irisCallerError: 3,
  /** Version 2 of iris failed registration: 503, not_ready. */
  irisNotReady: 2,
  mlpSuccess: 5,
  mlpCallerError: 4,
  /** A model the registry does not know: counted by reason only. */
  unknownModel: 2,
};

function post(path: string, body: string): Promise<Response> {
  return fetch(`${stack.url}${path}`, {
    method: "POST",
    headers: { "x-api-key": TEST_API_KEY, "content-type": "application/json" },
    body,
  });
}

function get(path: string, key = TEST_API_KEY): Promise<Response> {
  return fetch(`${stack.url}${path}`, { headers: { "x-api-key": key } });
}

async function stats(path: string): Promise<ModelStat[]> {
  const response = await get(path);
  expect(response.status, await response.clone().text()).toBe(200);
  return ((await response.json()) as StatisticsResponse).model_stats as ModelStat[];
}

function version(stats: readonly ModelStat[], name: string, number: string): ModelStat {
  const found = stats.find((stat) => stat.name === name && stat.version === number);
  if (found === undefined) throw new Error(`no statistics for ${name} version ${number}`);
  return found;
}

beforeAll(async () => {
  ({ stack, dataDir } = await startTestStack("metrics"));
  const mlp = await stack.publish("mlp", 1, buildMlpModel({ layers: [4, 8, 3], seed: 5 }));
  if (!isServable(mlp)) throw new Error(`mlp did not register: ${mlp.reason}`);
  const broken = await stack.publish("iris", 2, randomBytesModel());
  expect(broken.status).toBe("failed");

  const requests = [
    ...Array.from(
      { length: BURST.irisSuccess },
      () => () => post("/v2/models/iris/versions/1/infer", irisRequest),
    ),
    ...Array.from(
      { length: BURST.irisCallerError },
      () => () => post("/v2/models/iris/infer", wrongShape("features")),
    ),
    ...Array.from(
      { length: BURST.irisNotReady },
      () => () => post("/v2/models/iris/versions/2/infer", irisRequest),
    ),
    ...Array.from({ length: BURST.mlpSuccess }, () => () => post("/v2/models/mlp/infer", mlpRequest)),
    ...Array.from(
      { length: BURST.mlpCallerError },
      () => () => post("/v2/models/mlp/versions/1/infer", wrongShape("input")),
    ),
    ...Array.from({ length: BURST.unknownModel }, () => () => post("/v2/models/nope/infer", irisRequest)),
  ];
  // Interleaved, all in flight at once.
  const order = requests.map((send, i) => ({ send, key: (i * 7919) % requests.length }));
  order.sort((a, b) => a.key - b.key);
  const statuses = await Promise.all(
    order.map(async ({ send }) => {
      const response = await send();
      await response.arrayBuffer();
      return response.status;
    }),
  );
  const count = (status: number) => statuses.filter((found) => found === status).length;
  expect([count(200), count(400), count(503), count(404)]).toEqual([
    BURST.irisSuccess + BURST.mlpSuccess,
    BURST.irisCallerError + BURST.mlpCallerError,
    BURST.irisNotReady,
    BURST.unknownModel,
  ]);
});

afterAll(async () => {
  await stopTestStack(stack, dataDir);
});

describe("local stack: GET /metrics", () => {
  it("reports the burst exactly, per model, version and reason, in Triton's names", async () => {
    const response = await get("/metrics", TEST_ADMIN_KEY);
    const text = await response.text();
    const samples = parsePrometheus(text);
    const at = (name: string, labels: string) => samples.get(`${name}{${labels}}`);
    const iris1 = 'model="iris",version="1"';
    const iris2 = 'model="iris",version="2"';
    const mlp1 = 'model="mlp",version="1"';

    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(text).toContain("# TYPE nv_inference_request_success counter");
    expect(at("nv_inference_request_success", iris1)).toBe(BURST.irisSuccess);
    expect(at("nv_inference_request_success", iris2)).toBe(0);
    expect(at("nv_inference_request_success", mlp1)).toBe(BURST.mlpSuccess);
    expect(at("nv_inference_request_failure", `${iris1},reason="caller_error"`)).toBe(BURST.irisCallerError);
    expect(at("nv_inference_request_failure", `${iris1},reason="not_ready"`)).toBe(0);
    expect(at("nv_inference_request_failure", `${iris2},reason="not_ready"`)).toBe(BURST.irisNotReady);
    expect(at("nv_inference_request_failure", `${iris2},reason="caller_error"`)).toBe(0);
    expect(at("nv_inference_request_failure", `${mlp1},reason="caller_error"`)).toBe(BURST.mlpCallerError);
    expect(at("nv_inference_request_failure", `${mlp1},reason="not_ready"`)).toBe(0);
    for (const reason of ["throttled", "timeout", "internal"])
      for (const labels of [iris1, iris2, mlp1])
        expect(
          at("nv_inference_request_failure", `${labels},reason="${reason}"`),
          `${labels} ${reason}`,
        ).toBe(0);
    expect(at("nv_inference_count", iris1)).toBe(BURST.irisSuccess * IRIS_ROWS.length);
    expect(at("nv_inference_count", mlp1)).toBe(BURST.mlpSuccess * MLP_ROWS);
    expect(at("nv_inference_exec_count", iris1)).toBe(BURST.irisSuccess);
    expect(at("nv_inference_exec_count", mlp1)).toBe(BURST.mlpSuccess);
    expect(samples.get('maas_unresolved_request_failure_total{reason="caller_error"}')).toBe(
      BURST.unknownModel,
    );
    for (const labels of [iris1, mlp1]) {
      expect(at("nv_inference_request_duration_us", labels)).toBeGreaterThan(0);
      expect(at("nv_inference_compute_infer_duration_us", labels)).toBeGreaterThan(0);
      expect(at("nv_inference_compute_infer_duration_us", labels)).toBeLessThan(
        at("nv_inference_request_duration_us", labels) as number,
      );
    }
    // The stack warmed iris at start; mlp's first request loaded it.
    expect(at("maas_artifact_fetch_duration_us", mlp1)).toBeGreaterThan(0);
    expect(at("maas_session_create_duration_us", mlp1)).toBeGreaterThan(0);
    const coldStarts = [...samples].filter(([key]) => key.startsWith("maas_cold_start_total{"));
    expect(coldStarts.reduce((sum, [, value]) => sum + value, 0)).toBe(1);
    // No label for a model name the registry does not know.
    expect(text).not.toContain('model="nope"');
  });

  it("opens to the admin key only: the inference key and no key get 403", async () => {
    const inference = await get("/metrics");
    const anonymous = await fetch(`${stack.url}/metrics`);

    expect([inference.status, await inference.json()]).toEqual([403, { message: "Forbidden" }]);
    expect(anonymous.status).toBe(403);
  });
});

describe("local stack: the statistics extension", () => {
  it("reports each version of a model, failed ones included", async () => {
    const iris = await stats("/v2/models/iris/stats");

    expect(iris.map((stat) => stat.version)).toEqual(["1", "2"]);
    const ready = version(iris, "iris", "1");
    expect(ready).toMatchObject({
      inference_count: BURST.irisSuccess * IRIS_ROWS.length,
      execution_count: BURST.irisSuccess,
      inference_stats: {
        success: { count: BURST.irisSuccess },
        fail: { count: BURST.irisCallerError },
        queue: { count: BURST.irisSuccess },
        compute_input: { count: BURST.irisSuccess },
        compute_infer: { count: BURST.irisSuccess },
        compute_output: { count: BURST.irisSuccess },
        cache_hit: { count: 0, ns: 0 },
      },
      batch_stats: [],
    });
    expect(ready.inference_stats.success.ns).toBeGreaterThan(ready.inference_stats.compute_infer.ns);
    expect(ready.last_inference).toBeGreaterThan(Date.now() - 10 * 60_000);
    expect(version(iris, "iris", "2")).toMatchObject({
      execution_count: 0,
      inference_stats: { success: { count: 0, ns: 0 }, fail: { count: BURST.irisNotReady } },
    });
  });

  it("reports one version, by number or by alias, and every model", async () => {
    const aliased = await fetch(`${stack.url}/admin/models/mlp/aliases/prod`, {
      method: "PUT",
      headers: { "x-api-key": TEST_ADMIN_KEY, "content-type": "application/json" },
      body: JSON.stringify({ version: 1 }),
    });
    expect(aliased.status, await aliased.text()).toBe(200);

    const mlp = await stats("/v2/models/mlp/versions/1/stats");
    const prod = await stats("/v2/models/mlp/versions/prod/stats");
    const all = await stats("/v2/models/stats");

    expect(mlp).toHaveLength(1);
    expect(mlp[0]).toMatchObject({
      name: "mlp",
      version: "1",
      inference_count: BURST.mlpSuccess * MLP_ROWS,
      execution_count: BURST.mlpSuccess,
      inference_stats: { success: { count: BURST.mlpSuccess }, fail: { count: BURST.mlpCallerError } },
    });
    expect(prod).toEqual(mlp);
    expect(version(all, "mlp", "1").execution_count).toBe(BURST.mlpSuccess);
    expect(version(all, "iris", "1").execution_count).toBe(BURST.irisSuccess);
    expect(version(all, "iris", "2").inference_stats.fail.count).toBe(BURST.irisNotReady);
  });

  it("answers 404 for a model the registry does not know", async () => {
    const response = await get("/v2/models/nope/stats");

    expect(response.status).toBe(404);
    expect(await response.json()).toEqual({ error: expect.stringContaining("nope") });
  });
});
