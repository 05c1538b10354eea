import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PROMETHEUS } from "#core/metrics/names.ts";
import { isServable } from "#core/registry/registry.ts";
import type { LocalStack } from "../../local/stack.ts";
import { buildMlpModel } from "../../models/mlp.ts";
import { randomBytesModel } from "../support/crafted-models.ts";
import { startTestStack, stopTestStack, TEST_ADMIN_KEY, TEST_API_KEY } from "../support/local-stack.ts";

/**
 * The worker functions' outcomes on the local `GET /metrics` (issue 18): a valid model registered and
 * optimized, a broken one failed, a second upload to an immutable version rejected, and two jobs, one
 * that succeeds and one a caller's mistake fails; each counted exactly once, by model, version and outcome.
 */
let stack: LocalStack;
let dataDir: string | undefined;

const MLP = 'model="mlp",version="1"';
const BROKEN = 'model="broken",version="1"';

function api(path: string, init: RequestInit = {}, key = TEST_API_KEY): Promise<Response> {
  return fetch(`${stack.url}${path}`, {
    ...init,
    headers: { "x-api-key": key, ...init.headers },
    signal: AbortSignal.timeout(30_000),
  });
}

/** `name{labels}` to value for every sample of the families named `name`. */
async function scrape(...families: string[]): Promise<Record<string, number>> {
  const response = await api("/metrics", {}, TEST_ADMIN_KEY);
  expect(response.status).toBe(200);
  const found: Record<string, number> = {};
  for (const line of (await response.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (match === null) throw new Error(`not a Prometheus sample: ${line}`);
    if (families.includes(match[1]!)) found[`${match[1]}${match[2] ?? ""}`] = Number(match[3]);
  }
  return found;
}

/** Scrapes until `done` holds (the handlers record after their work, so after the registry shows it). */
async function scrapeUntil(
  families: string[],
  done: (samples: Record<string, number>) => boolean,
  timeoutMs = 60_000,
): Promise<Record<string, number>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const samples = await scrape(...families);
    if (done(samples)) return samples;
    if (Date.now() > deadline) throw new Error(`metrics did not settle: ${JSON.stringify(samples)}`);
    await new Promise((wake) => setTimeout(wake, 100));
  }
}

const total = (samples: Record<string, number>) => Object.values(samples).reduce((sum, n) => sum + n, 0);

async function submitJob(body: unknown): Promise<string> {
  const response = await api("/v2/models/mlp/versions/1/infer", {
    method: "POST",
    headers: { prefer: "respond-async", "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await response.text();
  expect(response.status, text).toBe(202);
  return (JSON.parse(text) as { id: string }).id;
}

async function jobStatus(id: string, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = (await (await api(`/v2/jobs/${id}`)).json()) as { status: string };
    if (job.status === "succeeded" || job.status === "failed") return job.status;
    if (Date.now() > deadline) throw new Error(`job ${id} is still ${job.status}`);
    await new Promise((wake) => setTimeout(wake, 50));
  }
}

beforeAll(async () => {
  ({ stack, dataDir } = await startTestStack("pipeline-metrics", { demo: false }));
  const mlp = await stack.publish("mlp", 1, buildMlpModel({ layers: [4, 8, 3], seed: 5 }));
  if (!isServable(mlp)) throw new Error(`mlp did not register: ${mlp.reason}`);
  const broken = await stack.publish("broken", 1, randomBytesModel());
  expect(broken.status).toBe("failed");
  // Other bytes for a version that exists: versions are immutable, the upload is rejected.
  await stack.publish("mlp", 1, buildMlpModel({ layers: [4, 8, 3], seed: 6 }));

  const good = await submitJob({
    inputs: [{ name: "input", shape: [2, 4], datatype: "FP32", data: [1, 2, 3, 4, 5, 6, 7, 8] }],
  });
  const wrongShape = await submitJob({
    inputs: [{ name: "input", shape: [1, 3], datatype: "FP32", data: [1, 2, 3] }],
  });
  expect([await jobStatus(good), await jobStatus(wrongShape)]).toEqual(["succeeded", "failed"]);
});

afterAll(async () => {
  await stopTestStack(stack, dataDir);
});

describe("local stack: the worker functions' outcomes on GET /metrics", () => {
  it("counts each registration once by model, version and outcome, with its duration", async () => {
    const counts = await scrapeUntil([PROMETHEUS.registrations], (samples) => total(samples) >= 3);
    const durations = await scrape(PROMETHEUS.registrationDuration);

    expect(counts).toEqual({
      [`maas_registration_total{${MLP},outcome="registered"}`]: 1,
      [`maas_registration_total{${MLP},outcome="rejected"}`]: 1,
      [`maas_registration_total{${BROKEN},outcome="failed"}`]: 1,
    });
    expect(Object.keys(durations).sort()).toEqual(
      Object.keys(counts)
        .map((key) => key.replace("maas_registration_total", "maas_registration_duration_us"))
        .sort(),
    );
    for (const [series, us] of Object.entries(durations)) expect(us, series).toBeGreaterThan(0);
  });

  it("counts the valid model's optimization once, as a selected variant or the original kept", async () => {
    const counts = await scrapeUntil([PROMETHEUS.optimizations], (samples) => total(samples) >= 1);
    const durations = await scrape(PROMETHEUS.optimizationDuration);

    expect(Object.values(counts)).toEqual([1]);
    const [series] = Object.keys(counts);
    expect([
      `maas_optimization_total{${MLP},outcome="selected-variant"}`,
      `maas_optimization_total{${MLP},outcome="kept-original"}`,
    ]).toContain(series);
    expect(durations[series!.replace("_total", "_duration_us")]).toBeGreaterThan(0);
  });

  it("counts each job's run by outcome, with its duration and time on the queue", async () => {
    const counts = await scrapeUntil([PROMETHEUS.jobs], (samples) => total(samples) >= 2);
    const figures = await scrape(PROMETHEUS.jobDuration, PROMETHEUS.jobQueueDuration);

    expect(counts).toEqual({
      [`maas_job_total{${MLP},outcome="succeeded"}`]: 1,
      [`maas_job_total{${MLP},outcome="failed"}`]: 1,
    });
    for (const outcome of ["succeeded", "failed"]) {
      expect(figures[`maas_job_duration_us{${MLP},outcome="${outcome}"}`], outcome).toBeGreaterThan(0);
      // Milliseconds apart at least, a minute at most: µs from the job's epoch-ms times.
      const queued = figures[`maas_job_queue_duration_us{${MLP},outcome="${outcome}"}`];
      expect(queued, outcome).toBeGreaterThanOrEqual(0);
      expect(queued! % 1000, outcome).toBe(0);
      expect(queued, outcome).toBeLessThan(60_000_000);
    }
  });

  it("keeps the inference counters beside them, in one exposition", async () => {
    const response = await api("/metrics", {}, TEST_ADMIN_KEY);
    const text = await response.text();

    expect(text).toContain("# TYPE nv_inference_request_success counter");
    expect(text).toContain("# TYPE maas_registration_total counter");
    expect(text).toContain("# TYPE maas_job_queue_duration_us counter");
    expect(text.match(/^# TYPE maas_registration_total /gm)).toHaveLength(1);
  });
});
