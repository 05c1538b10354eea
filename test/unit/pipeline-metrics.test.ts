import { Logger } from "@aws-lambda-powertools/logger";
import { afterEach, describe, expect, it, vi } from "vitest";
import { EmfPipelineMetricsSink } from "#aws/metrics/pipeline-emf-sink.ts";
import type { JobRunner } from "#core/jobs/async-inference.ts";
import type { Job, JobStatus, JobStore, JobUpdate } from "#core/jobs/jobs.ts";
import { METRICS_NAMESPACE } from "#core/metrics/names.ts";
import {
  ObservedJobStore,
  optimizationMetricOutcome,
  type PipelineMetric,
} from "#core/metrics/pipeline-metric.ts";
import { PipelineStatistics } from "#core/metrics/pipeline-statistics.ts";
import type { OptimizerDeps } from "#core/optimize/optimization.ts";
import type { RegistrationDeps } from "#core/registry/registration.ts";
import { createJobsHandler } from "#lambdas/jobs/handler.ts";
import { createOptimizeHandler } from "#lambdas/optimize/handler.ts";
import { createRegisterHandler } from "#lambdas/register/handler.ts";
import { s3ObjectCreatedBody, sqsEvent } from "../infra/events.ts";
import { directive, emitted } from "../support/metric-outputs.ts";

const silent = new Logger({ serviceName: "test", logLevel: "SILENT" });

describe("EMF pipeline metrics sink", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("writes a registration as one EMF line by model, version and outcome, its duration in milliseconds", () => {
    const sink = new EmfPipelineMetricsSink();

    const documents = emitted(() =>
      sink.record({
        kind: "registration",
        model: "mlp",
        version: 3,
        outcome: "registered",
        durationUs: 12_500,
      }),
    );

    expect(documents).toHaveLength(1);
    const [document] = documents;
    expect(directive(document!)).toEqual({
      Namespace: METRICS_NAMESPACE,
      Dimensions: [["model", "version", "outcome"]],
      Metrics: [
        { Name: "Registrations", Unit: "Count" },
        { Name: "RegistrationDuration", Unit: "Milliseconds" },
      ],
    });
    expect(document).toMatchObject({
      model: "mlp",
      version: "3",
      outcome: "registered",
      Registrations: 1,
      RegistrationDuration: 12.5,
    });
    expect(document).not.toHaveProperty("service");
    expect(typeof (document!._aws as { Timestamp: unknown }).Timestamp).toBe("number");
  });

  it("writes each metric on a line of its own, flushed as it is recorded: nothing carries over", () => {
    const sink = new EmfPipelineMetricsSink();

    const documents = emitted(() => {
      sink.record({
        kind: "optimization",
        model: "mlp",
        version: 1,
        outcome: "kept-original",
        durationUs: 2e6,
      });
      sink.record({
        kind: "job",
        model: "iris",
        version: 2,
        outcome: "succeeded",
        durationUs: 800,
        queueUs: 4000,
      });
      sink.record({
        kind: "job",
        model: "iris",
        version: 2,
        outcome: "retried",
        durationUs: 300,
        queueUs: undefined,
      });
    });

    expect(documents.map((document) => directive(document).Dimensions)).toEqual([
      [["model", "version", "outcome"]],
      [["model", "version", "outcome"]],
      [["model", "version", "outcome"]],
    ]);
    expect(documents[0]).toMatchObject({ model: "mlp", outcome: "kept-original", Optimizations: 1 });
    expect(documents[0]).toMatchObject({ OptimizationDuration: 2000 });
    expect(documents[1]).toMatchObject({
      model: "iris",
      version: "2",
      outcome: "succeeded",
      Jobs: 1,
      JobDuration: 0.8,
      JobQueueWait: 4,
    });
    expect(directive(documents[1]!).Metrics).toEqual([
      { Name: "Jobs", Unit: "Count" },
      { Name: "JobDuration", Unit: "Milliseconds" },
      { Name: "JobQueueWait", Unit: "Milliseconds" },
    ]);
    expect(documents[1]).not.toHaveProperty("Optimizations");
    expect(documents[2]).toMatchObject({ outcome: "retried", Jobs: 1, JobDuration: 0.3 });
    expect(documents[2]).not.toHaveProperty("JobQueueWait");
  });

  it("writes a step that named no model under its outcome alone", () => {
    const sink = new EmfPipelineMetricsSink();

    const [document, ...rest] = emitted(() =>
      sink.record({
        kind: "registration",
        model: undefined,
        version: undefined,
        outcome: "error",
        durationUs: 0,
      }),
    );

    expect(rest).toEqual([]);
    expect(directive(document!).Dimensions).toEqual([["outcome"]]);
    expect(document).toMatchObject({ outcome: "error", Registrations: 1 });
    expect(document).not.toHaveProperty("model");
  });
});

/** Sample values by name and labels, as a Prometheus scrape reads them. */
function samples(text: string): Map<string, number> {
  const found = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-z_]+)(\{.*\})? (\S+)$/.exec(line);
    if (match === null) throw new Error(`not a sample line: ${line}`);
    found.set(`${match[1]}${match[2] ?? ""}`, Number(match[3]));
  }
  return found;
}

describe("PipelineStatistics: the local /metrics counters", () => {
  it("counts outcomes and sums durations per model, version and outcome, in µs", () => {
    const statistics = new PipelineStatistics();
    const step = (metric: PipelineMetric) => statistics.record(metric);
    step({ kind: "registration", model: "mlp", version: 1, outcome: "registered", durationUs: 100.4 });
    step({ kind: "registration", model: "mlp", version: 1, outcome: "rejected", durationUs: 20 });
    step({ kind: "registration", model: "mlp", version: 1, outcome: "rejected", durationUs: 30 });
    step({ kind: "registration", model: undefined, version: undefined, outcome: "error", durationUs: 0 });
    step({ kind: "optimization", model: "mlp", version: 1, outcome: "selected-variant", durationUs: 5000 });
    step({ kind: "job", model: "mlp", version: 1, outcome: "succeeded", durationUs: 700, queueUs: 3000 });
    step({ kind: "job", model: "mlp", version: 1, outcome: "succeeded", durationUs: 300, queueUs: 1000 });
    step({
      kind: "job",
      model: "mlp",
      version: 1,
      outcome: "dead-lettered",
      durationUs: 50,
      queueUs: undefined,
    });

    const text = statistics.prometheus();
    const found = samples(text);

    const mlp = 'model="mlp",version="1"';
    expect(Object.fromEntries(found)).toEqual({
      [`maas_registration_total{${mlp},outcome="registered"}`]: 1,
      [`maas_registration_total{${mlp},outcome="rejected"}`]: 2,
      'maas_registration_total{outcome="error"}': 1,
      [`maas_registration_duration_us{${mlp},outcome="registered"}`]: 100,
      [`maas_registration_duration_us{${mlp},outcome="rejected"}`]: 50,
      'maas_registration_duration_us{outcome="error"}': 0,
      [`maas_optimization_total{${mlp},outcome="selected-variant"}`]: 1,
      [`maas_optimization_duration_us{${mlp},outcome="selected-variant"}`]: 5000,
      [`maas_job_total{${mlp},outcome="succeeded"}`]: 2,
      [`maas_job_total{${mlp},outcome="dead-lettered"}`]: 1,
      [`maas_job_duration_us{${mlp},outcome="succeeded"}`]: 1000,
      [`maas_job_duration_us{${mlp},outcome="dead-lettered"}`]: 50,
      // Only runs that waited on the queue: a dead letter ran nothing.
      [`maas_job_queue_duration_us{${mlp},outcome="succeeded"}`]: 4000,
    });
    expect(text).toContain("# TYPE maas_registration_total counter\n");
    expect(text).toContain("# TYPE maas_job_queue_duration_us counter\n");
    expect(text.endsWith("\n")).toBe(true);
  });

  it("renders every family, empty, before anything happened", () => {
    const text = new PipelineStatistics().prometheus();

    expect(samples(text).size).toBe(0);
    expect(text.match(/^# TYPE \S+ counter$/gm)).toHaveLength(7);
  });
});

describe("what the worker handlers count", () => {
  it("maps optimizations: a variant selected, the original kept, a failure the model's or not", () => {
    const variants: never[] = [];
    expect([
      optimizationMetricOutcome({
        outcome: "optimized",
        selected: "graph-extended",
        variants,
        reused: false,
      }),
      optimizationMetricOutcome({ outcome: "optimized", selected: "original", variants, reused: true }),
      optimizationMetricOutcome({ outcome: "failed", reason: "no candidate", unfinished: false }),
      optimizationMetricOutcome({ outcome: "failed", reason: "timed out", unfinished: true }),
      optimizationMetricOutcome({ outcome: "in-progress" }),
    ]).toEqual(["selected-variant", "kept-original", "failed", "unfinished", "in-progress"]);
  });

  it("register: an upload key that names no model is counted by outcome alone, a malformed message as an error", async () => {
    const statistics = new PipelineStatistics();
    // Neither message reaches the dependencies: a key that is not a model upload is ignored first.
    const handler = createRegisterHandler({} as RegistrationDeps, silent, { metrics: statistics });

    const response = await handler(
      sqsEvent("register", [
        s3ObjectCreatedBody({ bucket: "b", key: "models/Not A Name/1/model.onnx", size: 1, eTag: '"e"' }),
        "not json",
      ]),
    );

    expect(response.batchItemFailures).toHaveLength(1);
    expect(Object.fromEntries(samples(statistics.prometheus()))).toMatchObject({
      'maas_registration_total{outcome="ignored"}': 1,
      'maas_registration_total{outcome="error"}': 1,
    });
  });

  it("optimize: a malformed message is counted as an error, by outcome alone", async () => {
    const statistics = new PipelineStatistics();
    const handler = createOptimizeHandler({} as OptimizerDeps, silent, { metrics: statistics });

    const response = await handler(sqsEvent("optimize", ['{"name":"mlp"}']));

    expect(response.batchItemFailures).toHaveLength(1);
    expect(samples(statistics.prometheus()).get('maas_optimization_total{outcome="error"}')).toBe(1);
  });

  /** A job table in memory, behind the worker's ObservedJobStore. */
  function jobTable(jobs: Job[]): ObservedJobStore {
    const table = new Map(jobs.map((job) => [job.id, job]));
    const store: JobStore = {
      create: async (job) => {
        table.set(job.id, job);
      },
      get: async (id) => table.get(id),
      update: async (id: string, from: readonly JobStatus[], update: JobUpdate) => {
        const job = table.get(id);
        if (job === undefined || !from.includes(job.status)) return false;
        table.set(id, { ...job, ...update });
        return true;
      },
    };
    return new ObservedJobStore(store);
  }

  function job(id: string, updatedAt: number): Job {
    return {
      id,
      model_name: "mlp",
      model_version: 4,
      status: "queued",
      input: { key: `async/inputs/${id}` },
      attempts: 0,
      created_at: updatedAt,
      updated_at: updatedAt,
      expires_at: 0,
    };
  }

  it("jobs: each run by outcome with the job's model and version and its time on the queue; dead letters too", async () => {
    const queuedAt = Date.now() - 2_000;
    const jobs = jobTable([job("ok", queuedAt), job("flaky", queuedAt), job("dead", queuedAt)]);
    // The runner reads the job first, as JobRunner does.
    const runner = {
      run: async (id: string) => {
        await jobs.get(id);
        if (id === "flaky") throw new Error("socket hang up");
        return id === "gone" ? "skipped" : "succeeded";
      },
      abandon: async (id: string) => {
        await jobs.update(id, ["queued"], { status: "failed" });
      },
    } as unknown as JobRunner;
    const statistics = new PipelineStatistics();
    const handler = createJobsHandler(runner, silent, {
      metrics: statistics,
      jobs,
      deadLetterQueueArn: "arn:aws:sqs:us-east-1:000000000000:jobs-dlq",
    });
    const bodies = (...ids: string[]) => ids.map((id) => JSON.stringify({ id }));

    const live = await handler(sqsEvent("jobs", bodies("ok", "flaky", "gone")));
    const dead = await handler(sqsEvent("jobs-dlq", bodies("dead")));

    expect(live.batchItemFailures).toHaveLength(1);
    expect(dead.batchItemFailures).toEqual([]);
    const found = samples(statistics.prometheus());
    const mlp = 'model="mlp",version="4"';
    expect(found.get(`maas_job_total{${mlp},outcome="succeeded"}`)).toBe(1);
    expect(found.get(`maas_job_total{${mlp},outcome="retried"}`)).toBe(1);
    expect(found.get(`maas_job_total{${mlp},outcome="dead-lettered"}`)).toBe(1);
    // An expired job: no record, so no model to name.
    expect(found.get('maas_job_total{outcome="skipped"}')).toBe(1);
    for (const outcome of ["succeeded", "retried"]) {
      const queued = found.get(`maas_job_queue_duration_us{${mlp},outcome="${outcome}"}`);
      expect(queued, outcome).toBeGreaterThanOrEqual(2_000_000);
      expect(queued, outcome).toBeLessThan(60_000_000);
    }
    expect(found.has(`maas_job_queue_duration_us{${mlp},outcome="dead-lettered"}`)).toBe(false);
    expect(jobs.take("ok")).toBeUndefined();
  });
});
