import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PutMetricDataCommandInput } from "@aws-sdk/client-cloudwatch";
import * as ort from "onnxruntime-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type InferenceMetric, newInferenceMetric } from "#core/metrics/inference-metric.ts";
import { METRICS_NAMESPACE, PROMETHEUS } from "#core/metrics/names.ts";
import type { StatisticsResponse } from "#core/metrics/statistics.ts";
import { CloudWatchMetrics, type MetricDataSender } from "../../containers/gpu/cloudwatch-metrics.ts";
import { loadGpuServerConfig, metricsPort } from "../../containers/gpu/config.ts";
import { type GpuServer, startGpuServer } from "../../containers/gpu/server.ts";
import { buildMlpModel } from "../../models/mlp.ts";
import { parsePrometheus } from "../support/metric-outputs.ts";

/** Every PutMetricData input a publisher sent, instead of CloudWatch. */
function recordingSender(): MetricDataSender & { readonly sent: PutMetricDataCommandInput[] } {
  const sent: PutMetricDataCommandInput[] = [];
  return {
    sent,
    async putMetricData(input) {
      sent.push(structuredClone(input));
    },
  };
}

/** Values and counts of one metric, by its dimensions (`model=mlp,version=1,...`), over every request sent. */
function sentValues(
  sent: readonly PutMetricDataCommandInput[],
  name: string,
): Map<string, Map<number, number>> {
  const found = new Map<string, Map<number, number>>();
  for (const datum of sent.flatMap((input) => input.MetricData ?? [])) {
    if (datum.MetricName !== name) continue;
    const key = (datum.Dimensions ?? []).map((d) => `${d.Name}=${d.Value}`).join(",");
    const values = found.get(key) ?? new Map<number, number>();
    datum.Values?.forEach((value, i) => {
      values.set(value, (values.get(value) ?? 0) + (datum.Counts?.[i] ?? 1));
    });
    found.set(key, values);
  }
  return found;
}

// --- the container server with onnxruntime on CPU, and its metrics port ---------------------------

const MLP = buildMlpModel({ layers: [4, 8, 3], seed: 11 });
let root: string;
const servers: GpuServer[] = [];

async function start(env: Record<string, string>, cloudWatch?: MetricDataSender): Promise<GpuServer> {
  const server = await startGpuServer({
    config: loadGpuServerConfig({
      MAAS_PORT: "0",
      MAAS_HOST: "127.0.0.1",
      MAAS_MODEL_DIRS: join(root, "models"),
      MAAS_SCRATCH_DIR: join(root, "scratch"),
      MAAS_EXECUTION_PROVIDERS: "cpu",
      MAAS_INTRA_OP_THREADS: "1",
      ...env,
    }),
    ort,
    log: () => undefined,
    ...(cloudWatch === undefined ? {} : { cloudWatch }),
  });
  servers.push(server);
  return server;
}

function mlpBody(rows: number, input = "input"): string {
  return JSON.stringify({
    inputs: [
      {
        name: input,
        datatype: "FP32",
        shape: [rows, 4],
        data: Array.from({ length: rows * 4 }, (_, i) => i),
      },
    ],
  });
}

async function invoke(server: GpuServer, target: string, body: string) {
  const response = await fetch(`${server.url}/invocations`, {
    method: "POST",
    headers: { "content-type": "application/json", "X-Amzn-SageMaker-Target-Model": target },
    body,
  });
  const text = await response.text();
  return {
    status: response.status,
    requestBytes: Buffer.byteLength(body),
    responseBytes: Buffer.byteLength(text),
  };
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "maas-gpu-metrics-"));
  await mkdir(join(root, "models", "mlp"), { recursive: true });
  await writeFile(join(root, "models", "mlp", "model.onnx"), MLP);
});

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("GPU container metrics after a scripted burst", () => {
  /** What the burst sends, and so what must be counted. */
  const BURST = {
    /** Concurrent requests of these rows: 8 rows, the batch limit, so they run as one execution. */
    batchedRows: [1, 1, 1, 1, 2, 2],
    /** Then one request larger than the limit, run alone at once. */
    loneRows: 9,
    /** A wrong input name on the loaded model: 400, caller_error, under its label. */
    callerErrors: 3,
    /** A target found nowhere: 404, caller_error, by reason only. */
    unknownTargets: 2,
  };

  it("counts successes, failures by reason, and one execution per batch on its own port, in Triton's names", async () => {
    const cloudWatch = recordingSender();
    // A long delay: the batch runs when its 8 rows are in, however slow the machine.
    const server = await start(
      { MAAS_MAX_BATCH_SIZE: "8", MAAS_MAX_QUEUE_DELAY_MS: "10000", MAAS_CLOUDWATCH_METRICS: "1" },
      cloudWatch,
    );

    const batched = await Promise.all(
      BURST.batchedRows.map((rows) => invoke(server, "mlp.tar.gz", mlpBody(rows))),
    );
    const lone = await invoke(server, "mlp.tar.gz", mlpBody(BURST.loneRows));
    const refused = await Promise.all(
      Array.from({ length: BURST.callerErrors }, () => invoke(server, "mlp.tar.gz", mlpBody(1, "wrong"))),
    );
    const unknown = await Promise.all(
      Array.from({ length: BURST.unknownTargets }, () => invoke(server, "ghost.tar.gz", mlpBody(1))),
    );

    expect([...batched, lone].map((answer) => answer.status)).toEqual(Array(7).fill(200));
    expect(refused.map((answer) => answer.status)).toEqual([400, 400, 400]);
    expect(unknown.map((answer) => answer.status)).toEqual([404, 404]);
    expect(server.models()[0]!.stats).toMatchObject({ requests: 7, runs: 2, mergedRuns: 1 });

    const scrape = await fetch(`${server.metricsUrl}/metrics`);
    expect(scrape.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    const text = await scrape.text();
    const samples = parsePrometheus(text);
    const mlp = 'model="mlp",version="1"';
    const modelAnswers = [...batched, lone, ...refused];
    expect(samples.get(`${PROMETHEUS.success}{${mlp}}`)).toBe(7);
    expect(samples.get(`${PROMETHEUS.failure}{${mlp},reason="caller_error"}`)).toBe(3);
    expect(samples.get(`${PROMETHEUS.failure}{${mlp},reason="internal"}`)).toBe(0);
    expect(samples.get(`${PROMETHEUS.inferenceCount}{${mlp}}`)).toBe(8 + 9);
    expect(samples.get(`${PROMETHEUS.execCount}{${mlp}}`)).toBe(2);
    expect(samples.get(`${PROMETHEUS.batchExecutions}{${mlp},batch_size="8"}`)).toBe(1);
    expect(samples.get(`${PROMETHEUS.batchExecutions}{${mlp},batch_size="9"}`)).toBe(1);
    expect(samples.get(`${PROMETHEUS.unresolvedFailure}{reason="caller_error"}`)).toBe(2);
    expect(samples.get(`${PROMETHEUS.coldStarts}{${mlp}}`)).toBe(1);
    expect(samples.get(`${PROMETHEUS.requestBytes}{${mlp}}`)).toBe(
      modelAnswers.reduce((sum, answer) => sum + answer.requestBytes, 0),
    );
    expect(samples.get(`${PROMETHEUS.responseBytes}{${mlp}}`)).toBe(
      modelAnswers.reduce((sum, answer) => sum + answer.responseBytes, 0),
    );
    expect(samples.get(`${PROMETHEUS.queueDuration}{${mlp}}`)).toBeGreaterThan(0);
    expect(samples.get(`${PROMETHEUS.batchQueueDuration}{${mlp}}`)).toBeGreaterThan(0);
    expect(samples.get(`${PROMETHEUS.computeInfer}{${mlp}}`)).toBeGreaterThan(0);
    expect(text).not.toContain("ghost");

    const stats = (await (
      await fetch(`${server.metricsUrl}/v2/models/mlp/versions/1/stats`)
    ).json()) as StatisticsResponse;
    const [stat] = stats.model_stats;
    expect(stat).toMatchObject({ name: "mlp", version: "1", inference_count: 17, execution_count: 2 });
    expect(stat!.inference_stats.success.count).toBe(7);
    expect(stat!.inference_stats.fail.count).toBe(3);
    expect(stat!.inference_stats.compute_infer.count).toBe(7);
    expect(stat!.batch_stats.map((batch) => [batch.batch_size, batch.count])).toEqual([
      [8, 1],
      [9, 1],
    ]);
    expect(stat!.last_inference).toBeGreaterThan(0);
    const all = (await (await fetch(`${server.metricsUrl}/v2/models/stats`)).json()) as StatisticsResponse;
    expect(all.model_stats.map((model) => model.name)).toEqual(["mlp"]);
    expect((await fetch(`${server.metricsUrl}/v2/models/ghost/stats`)).status).toBe(404);
    // The serving port keeps SageMaker's contract only.
    expect((await fetch(`${server.url}/metrics`)).status).toBe(404);

    await server.close();
    const labels = "model=mlp,version=1,backend=sagemaker";
    expect(sentValues(cloudWatch.sent, "InferenceSuccess").get(labels)).toEqual(new Map([[1, 7]]));
    expect(sentValues(cloudWatch.sent, "InferenceRequests").get(labels)).toEqual(new Map([[1, 10]]));
    expect(sentValues(cloudWatch.sent, "InferenceFailure")).toEqual(
      new Map([
        [`${labels},reason=caller_error`, new Map([[1, 3]])],
        ["backend=sagemaker,reason=caller_error", new Map([[1, 2]])],
      ]),
    );
    expect(sentValues(cloudWatch.sent, "BatchSize").get(labels)).toEqual(
      new Map([
        [8, 1],
        [9, 1],
      ]),
    );
    const delays = sentValues(cloudWatch.sent, "BatchQueueDelay").get(labels)!;
    expect([...delays.values()].reduce((sum, count) => sum + count, 0)).toBe(2);
    const latencies = sentValues(cloudWatch.sent, "RequestLatency").get(labels)!;
    expect([...latencies.values()].reduce((sum, count) => sum + count, 0)).toBe(7);
    expect(cloudWatch.sent.every((input) => input.Namespace === METRICS_NAMESPACE)).toBe(true);
  });

  it("sends nothing to CloudWatch unless MAAS_CLOUDWATCH_METRICS turns it on", async () => {
    const cloudWatch = recordingSender();
    const server = await start({ MAAS_MAX_QUEUE_DELAY_MS: "0" }, cloudWatch);

    expect((await invoke(server, "mlp.tar.gz", mlpBody(1))).status).toBe(200);
    await server.close();

    expect(cloudWatch.sent).toEqual([]);
  });
});

describe("metrics port settings", () => {
  it("defaults to Triton's 8002, a free port beside a free serving port, and SageMaker's safe range", () => {
    expect(metricsPort(loadGpuServerConfig({}))).toBe(8002);
    expect(metricsPort(loadGpuServerConfig({ MAAS_PORT: "0" }))).toBe(0);
    expect(metricsPort(loadGpuServerConfig({ SAGEMAKER_SAFE_PORT_RANGE: "23000-23999" }))).toBe(23000);
    expect(metricsPort(loadGpuServerConfig({ MAAS_METRICS_PORT: "9102" }))).toBe(9102);
    expect(loadGpuServerConfig({}).MAAS_CLOUDWATCH_METRICS).toBe("0");
  });

  it("refuses a metrics port outside SageMaker's safe range or on the serving port", () => {
    expect(() =>
      loadGpuServerConfig({ SAGEMAKER_SAFE_PORT_RANGE: "23000-23999", MAAS_METRICS_PORT: "8002" }),
    ).toThrow("MAAS_METRICS_PORT: 8002 is outside SAGEMAKER_SAFE_PORT_RANGE 23000-23999");
    expect(() => loadGpuServerConfig({ MAAS_METRICS_PORT: "8080" })).toThrow(
      "MAAS_METRICS_PORT: 8080 is the serving port too",
    );
  });
});

// --- the CloudWatch publisher alone, with a sender that records what it would send ---------------

function request(overrides: Partial<InferenceMetric> = {}): InferenceMetric {
  return {
    ...newInferenceMetric(),
    model: "mlp",
    version: 1,
    backend: "sagemaker",
    totalUs: 12_345,
    queueUs: 2000,
    inferUs: 8000,
    requestBytes: 100,
    responseBytes: 200,
    ...overrides,
  };
}

describe("CloudWatch metrics publisher", () => {
  const publishers: CloudWatchMetrics[] = [];
  const publisher = (options: Omit<ConstructorParameters<typeof CloudWatchMetrics>[0], "now">) => {
    const created = new CloudWatchMetrics({ now: () => 1_767_225_600_000, ...options });
    publishers.push(created);
    return created;
  };

  afterEach(async () => {
    await Promise.all(publishers.splice(0).map((created) => created.close()));
  });

  it("aggregates a window's requests into Values and Counts, 3 significant digits, one request", async () => {
    const sender = recordingSender();
    const metrics = publisher({ sender });

    metrics.record(request());
    metrics.record(request({ totalUs: 12_340 }));
    metrics.record(request({ totalUs: 50_000 }));
    metrics.recordExecution(
      {
        model: "mlp",
        version: 1,
        batchSize: 3,
        queueUs: 1500,
        computeInputUs: 1,
        computeInferUs: 1,
        computeOutputUs: 1,
      },
      "sagemaker",
    );
    await metrics.flush();

    expect(sender.sent).toHaveLength(1);
    const data = sender.sent[0]!.MetricData!;
    const latency = data.find((datum) => datum.MetricName === "RequestLatency")!;
    expect(latency).toEqual({
      MetricName: "RequestLatency",
      Dimensions: [
        { Name: "model", Value: "mlp" },
        { Name: "version", Value: "1" },
        { Name: "backend", Value: "sagemaker" },
      ],
      Timestamp: new Date(1_767_225_600_000),
      Unit: "Milliseconds",
      Values: [12.3, 50],
      Counts: [2, 1],
    });
    expect(data.find((datum) => datum.MetricName === "InferenceRequests")).toMatchObject({
      Unit: "Count",
      Values: [1],
      Counts: [3],
    });
    expect(data.find((datum) => datum.MetricName === "BatchSize")).toMatchObject({
      Values: [3],
      Counts: [1],
    });
    expect(data.find((datum) => datum.MetricName === "BatchQueueDelay")).toMatchObject({
      Unit: "Milliseconds",
      Values: [1.5],
    });
    // Only requests that loaded the model report a load phase.
    expect(data.some((datum) => datum.MetricName === "ArtifactFetchLatency")).toBe(false);

    await metrics.flush();
    expect(sender.sent).toHaveLength(1);
  });

  it("holds at most maxSeries x maxValuesPerSeries samples, and logs what it dropped", async () => {
    const sender = recordingSender();
    const logged: Record<string, unknown>[] = [];
    const metrics = publisher({
      sender,
      maxSeries: 3,
      maxValuesPerSeries: 4,
      log: (message, fields) => logged.push({ message, ...fields }),
    });

    for (let i = 1; i <= 50; i++) metrics.record(request({ totalUs: i * 1000, requestBytes: i }));

    // Requests (one value), request bytes (four of fifty), response bytes (one); no room for a fourth series.
    expect(metrics.heldSamples).toBe(1 + 4 + 1);
    await metrics.flush();
    expect(metrics.heldSamples).toBe(0);
    expect(logged).toContainEqual(expect.objectContaining({ dropped: expect.any(Number) }));
    const sent = sender.sent.flatMap((input) => input.MetricData ?? []);
    expect(sent.map((datum) => datum.MetricName)).toEqual([
      "InferenceRequests",
      "RequestBytes",
      "ResponseBytes",
    ]);
    expect(sent[1]!.Values).toEqual([1, 2, 3, 4]);
  });

  it("splits a series' values into datums of 150, never two of one series in a request", async () => {
    const sender = recordingSender();
    const metrics = publisher({ sender });

    for (let i = 1; i <= 400; i++) metrics.record(request({ requestBytes: i }));
    await metrics.flush();

    const perRequest = sender.sent.map(
      (input) => input.MetricData!.find((datum) => datum.MetricName === "RequestBytes")?.Values?.length,
    );
    expect(perRequest).toEqual([150, 150, 100]);
    for (const input of sender.sent) {
      const names = input.MetricData!.map((datum) => datum.MetricName);
      expect(new Set(names).size).toBe(names.length);
    }
  });

  it("never throws when CloudWatch refuses, and sends the next window", async () => {
    let calls = 0;
    const logged: string[] = [];
    const metrics = publisher({
      sender: {
        async putMetricData() {
          calls++;
          if (calls === 1) throw new Error("AccessDenied");
        },
      },
      log: (message) => logged.push(message),
    });

    metrics.record(request());
    await expect(metrics.flush()).resolves.toBeUndefined();
    metrics.record(request());
    await metrics.flush();

    expect(calls).toBe(2);
    expect(logged).toEqual(["metrics not sent to CloudWatch"]);
  });
});
