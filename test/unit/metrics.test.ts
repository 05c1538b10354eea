import { afterEach, describe, expect, it, vi } from "vitest";
import { EmfMetricsSink } from "#aws/metrics/emf-sink.ts";
import {
  bodyBytes,
  type InferenceMetric,
  newInferenceMetric,
  settleOutcome,
} from "#core/metrics/inference-metric.ts";
import { METRICS_NAMESPACE, PROMETHEUS } from "#core/metrics/names.ts";
import { InferenceStatistics } from "#core/metrics/statistics.ts";
import { directive, directives, emitted } from "../support/metric-outputs.ts";

function metric(overrides: Partial<InferenceMetric>): InferenceMetric {
  return {
    ...newInferenceMetric(),
    model: "iris",
    version: 1,
    backend: "lambda",
    timestamp: 1_767_225_600_000,
    ...overrides,
  };
}

function success(overrides: Partial<InferenceMetric> = {}): InferenceMetric {
  return metric({
    totalUs: 1000,
    registryUs: 10,
    queueUs: 20,
    inputDecodeUs: 30,
    inferUs: 500,
    outputEncodeUs: 40,
    batchSize: 3,
    requestBytes: 100,
    responseBytes: 200,
    ...overrides,
  });
}

function failure(status: number, overrides: Partial<InferenceMetric> = {}): InferenceMetric {
  const failed = metric({ totalUs: 250, requestBytes: 50, responseBytes: 60, ...overrides });
  settleOutcome(failed, status);
  return failed;
}

/** Sample values by name and labels, as a Prometheus scrape reads them. */
function samples(text: string): Map<string, number> {
  const found = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (match === null) throw new Error(`not a sample line: ${line}`);
    found.set(`${match[1]}${match[2] ?? ""}`, Number(match[3]));
  }
  return found;
}

describe("InferenceStatistics: Triton's statistics extension", () => {
  it("reports successes with their phases, failures with their duration, in nanoseconds", () => {
    const statistics = new InferenceStatistics();
    statistics.record(success());
    statistics.record(success({ totalUs: 2000.4, batchSize: 1, timestamp: 1_767_225_601_000 }));
    statistics.record(failure(400));

    expect(statistics.modelStats([{ name: "iris", versions: [1] }])).toEqual({
      model_stats: [
        {
          name: "iris",
          version: "1",
          last_inference: 1_767_225_601_000,
          inference_count: 4,
          execution_count: 2,
          inference_stats: {
            success: { count: 2, ns: 3_000_400 },
            fail: { count: 1, ns: 250_000 },
            queue: { count: 2, ns: 40_000 },
            compute_input: { count: 2, ns: 60_000 },
            compute_infer: { count: 2, ns: 1_000_000 },
            compute_output: { count: 2, ns: 80_000 },
            cache_hit: { count: 0, ns: 0 },
          },
          batch_stats: [],
        },
      ],
    });
  });

  it("reports zeros for a version that has had no request, and keeps versions apart", () => {
    const statistics = new InferenceStatistics();
    statistics.record(success({ version: 2 }));

    const { model_stats: stats } = statistics.modelStats([{ name: "iris", versions: [1, 2] }]);

    expect(
      stats.map((stat) => [stat.version, stat.execution_count, stat.inference_stats.success.count]),
    ).toEqual([
      ["1", 0, 0],
      ["2", 1, 1],
    ]);
    expect(stats[0]?.last_inference).toBe(0);
  });

  it("counts a request whose model version was never resolved under its reason only", () => {
    const statistics = new InferenceStatistics();
    statistics.record(failure(404, { model: undefined, version: undefined, backend: undefined }));

    expect(
      statistics.modelStats([{ name: "iris", versions: [1] }]).model_stats[0]?.inference_stats.fail,
    ).toEqual({
      count: 0,
      ns: 0,
    });
    const scraped = samples(statistics.prometheus());
    expect(scraped.get(`${PROMETHEUS.unresolvedFailure}{reason="caller_error"}`)).toBe(1);
    expect([...scraped.keys()].some((key) => key.includes('model="'))).toBe(false);
  });
});

describe("InferenceStatistics: Prometheus text", () => {
  it("writes Triton's counters with model and version labels, failures by reason, durations in µs", () => {
    const statistics = new InferenceStatistics();
    statistics.record(success({ coldStart: true, artifactFetchUs: 700, sessionCreateUs: 900 }));
    statistics.record(success());
    statistics.record(failure(400));
    statistics.record(failure(503));
    statistics.record(failure(503, { model: "mlp", version: 3 }));

    const text = statistics.prometheus();
    const scraped = samples(text);

    const iris = 'model="iris",version="1"';
    expect(scraped.get(`nv_inference_request_success{${iris}}`)).toBe(2);
    expect(scraped.get(`nv_inference_request_failure{${iris},reason="caller_error"}`)).toBe(1);
    expect(scraped.get(`nv_inference_request_failure{${iris},reason="not_ready"}`)).toBe(1);
    expect(scraped.get(`nv_inference_request_failure{${iris},reason="internal"}`)).toBe(0);
    expect(scraped.get(`nv_inference_request_failure{model="mlp",version="3",reason="not_ready"}`)).toBe(1);
    expect(scraped.get(`nv_inference_request_success{model="mlp",version="3"}`)).toBe(0);
    expect(scraped.get(`nv_inference_count{${iris}}`)).toBe(6);
    expect(scraped.get(`nv_inference_exec_count{${iris}}`)).toBe(2);
    expect(scraped.get(`nv_inference_request_duration_us{${iris}}`)).toBe(2000);
    expect(scraped.get(`nv_inference_queue_duration_us{${iris}}`)).toBe(40);
    expect(scraped.get(`nv_inference_compute_input_duration_us{${iris}}`)).toBe(60);
    expect(scraped.get(`nv_inference_compute_infer_duration_us{${iris}}`)).toBe(1000);
    expect(scraped.get(`nv_inference_compute_output_duration_us{${iris}}`)).toBe(80);
    expect(scraped.get(`maas_registry_duration_us{${iris}}`)).toBe(20);
    expect(scraped.get(`maas_artifact_fetch_duration_us{${iris}}`)).toBe(700);
    expect(scraped.get(`maas_session_create_duration_us{${iris}}`)).toBe(900);
    expect(scraped.get(`maas_cold_start_total{${iris}}`)).toBe(1);
    expect(scraped.get(`maas_request_bytes_total{${iris}}`)).toBe(300);
    expect(scraped.get(`maas_response_bytes_total{${iris}}`)).toBe(520);
    // Every family is introduced by its HELP and TYPE lines, before its samples.
    for (const name of Object.values(PROMETHEUS).filter((name) => text.includes(`${name}{`))) {
      const help = text.indexOf(`# HELP ${name} `);
      const type = text.indexOf(`# TYPE ${name} counter\n`);
      expect([help >= 0, type > help, text.indexOf(`\n${name}{`) > type]).toEqual([true, true, true]);
    }
    expect(text.endsWith("\n")).toBe(true);
  });

  it("writes the exposition exactly, one family after another", () => {
    const statistics = new InferenceStatistics();
    statistics.record(success({ totalUs: 1234.6 }));

    const text = statistics.prometheus();

    expect(text).toContain(
      [
        "# HELP nv_inference_request_success Number of successful inference requests, all batch sizes",
        "# TYPE nv_inference_request_success counter",
        'nv_inference_request_success{model="iris",version="1"} 1',
        "# HELP nv_inference_request_failure Number of failed inference requests, all batch sizes",
        "# TYPE nv_inference_request_failure counter",
        'nv_inference_request_failure{model="iris",version="1",reason="caller_error"} 0',
        'nv_inference_request_failure{model="iris",version="1",reason="not_ready"} 0',
        'nv_inference_request_failure{model="iris",version="1",reason="throttled"} 0',
        'nv_inference_request_failure{model="iris",version="1",reason="timeout"} 0',
        'nv_inference_request_failure{model="iris",version="1",reason="internal"} 0',
      ].join("\n"),
    );
    expect(text).toContain(
      [
        "# TYPE nv_inference_request_duration_us counter",
        'nv_inference_request_duration_us{model="iris",version="1"} 1235',
      ].join("\n"),
    );
  });

  it("writes HELP and TYPE lines with no samples before any request", () => {
    const text = new InferenceStatistics().prometheus();

    expect(text).toContain(
      "# TYPE nv_inference_request_success counter\n# HELP nv_inference_request_failure",
    );
  });
});

describe("inference metric", () => {
  it.each([
    [200, "success", undefined],
    [400, "failure", "caller_error"],
    [404, "failure", "caller_error"],
    [413, "failure", "caller_error"],
    [429, "failure", "throttled"],
    [503, "failure", "not_ready"],
    [504, "failure", "timeout"],
    [500, "failure", "internal"],
    [502, "failure", "internal"],
  ])("settles status %i as %s (%s)", (status, outcome, reason) => {
    const settled = newInferenceMetric();
    settleOutcome(settled, status);

    expect([settled.outcome, settled.reason]).toEqual([outcome, reason]);
  });

  it("measures a body's bytes, base64 without decoding it", () => {
    for (const bytes of [0, 1, 2, 3, 4, 5, 1000, 1001]) {
      const raw = Buffer.alloc(bytes, 7);
      expect(bodyBytes(raw.toString("base64"), true)).toBe(bytes);
    }
    expect(bodyBytes("ünï", false)).toBe(5);
    expect(bodyBytes(null, true)).toBe(0);
  });
});

describe("EMF metrics sink", () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it("writes a success on one line: by model, version and backend, and its latency by backend alone, in milliseconds", () => {
    const sink = new EmfMetricsSink();

    const [document, ...rest] = emitted(() => sink.record(success({ artifactFetchUs: 5000 })));

    expect(rest).toEqual([]);
    const [byRequest, byBackend, ...more] = directives(document!);
    expect(more).toEqual([]);
    expect(byRequest?.Namespace).toBe(METRICS_NAMESPACE);
    expect(byRequest?.Dimensions).toEqual([["model", "version", "backend"]]);
    expect(byBackend).toEqual({
      Namespace: METRICS_NAMESPACE,
      Dimensions: [["backend"]],
      Metrics: [{ Name: "RequestLatency", Unit: "Milliseconds" }],
    });
    expect(document).toMatchObject({
      model: "iris",
      version: "1",
      backend: "lambda",
      InferenceRequests: 1,
      InferenceSuccess: 1,
      RequestLatency: 1,
      RegistryLatency: 0.01,
      QueueLatency: 0.02,
      InputDecodeLatency: 0.03,
      RunLatency: 0.5,
      OutputEncodeLatency: 0.04,
      ArtifactFetchLatency: 5,
      RequestBytes: 100,
      ResponseBytes: 200,
    });
    expect(document).not.toHaveProperty("SessionCreateLatency");
    expect(document).not.toHaveProperty("service");
    // Every metric a directive names has its value on the line: CloudWatch drops a line otherwise.
    for (const { Metrics } of directives(document!))
      for (const { Name } of Metrics as { Name: string }[])
        expect(typeof document![Name], Name).toBe("number");
    expect(byRequest?.Metrics).toContainEqual({ Name: "ArtifactFetchLatency", Unit: "Milliseconds" });
    expect(byRequest?.Metrics).not.toContainEqual({ Name: "SessionCreateLatency", Unit: "Milliseconds" });
    expect(byRequest?.Metrics).toContainEqual({ Name: "RequestBytes", Unit: "Bytes" });
  });

  it("writes a failure on one line, its count under its reason too, and nothing carries over", () => {
    const sink = new EmfMetricsSink();

    const documents = emitted(() => {
      sink.record(failure(400));
      sink.record(success());
    });

    expect(documents.map((document) => directives(document).map((one) => one.Dimensions))).toEqual([
      [[["model", "version", "backend"]], [["model", "version", "backend", "reason"]]],
      [[["model", "version", "backend"]], [["backend"]]],
    ]);
    expect(documents[0]).toMatchObject({
      InferenceRequests: 1,
      RequestBytes: 50,
      reason: "caller_error",
      InferenceFailure: 1,
    });
    expect(documents[0]).not.toHaveProperty("RequestLatency");
    expect(directives(documents[0]!)[0]?.Metrics).not.toContainEqual({
      Name: "InferenceFailure",
      Unit: "Count",
    });
    expect(directives(documents[0]!)[1]?.Metrics).toEqual([{ Name: "InferenceFailure", Unit: "Count" }]);
    expect(documents[1]).not.toHaveProperty("reason");
    expect(documents[1]).not.toHaveProperty("InferenceFailure");
    expect(documents[1]).toMatchObject({ InferenceSuccess: 1, InferenceRequests: 1 });
  });

  it("writes ColdStart once, by function name, in an on-demand environment", () => {
    const sink = new EmfMetricsSink({ functionName: "maas-inference-fn", initializationType: "on-demand" });

    const documents = emitted(() => {
      sink.record(success({ coldStart: true }));
      sink.record(success({ coldStart: true }));
    });

    const coldStarts = documents.filter((document) => "ColdStart" in document);
    expect(coldStarts).toHaveLength(1);
    expect(coldStarts[0]).toMatchObject({ ColdStart: 1, function_name: "maas-inference-fn" });
    expect(documents.filter((document) => "InferenceSuccess" in document)).toHaveLength(2);
    expect(coldStarts[0]).not.toHaveProperty("model");
  });

  it("writes a cold start's init duration by function name, on a line of its own", () => {
    const sink = new EmfMetricsSink({ functionName: "maas-inference-fn" });

    const documents = emitted(() => {
      sink.record(success({ coldStart: true, initUs: 180_500 }));
      sink.record(success());
    });

    const inits = documents.filter((document) => "InitDuration" in document);
    expect(inits).toHaveLength(1);
    expect(inits[0]).toMatchObject({ InitDuration: 180.5, function_name: "maas-inference-fn" });
    expect(directive(inits[0]!).Dimensions).toEqual([["function_name"]]);
    expect(directive(inits[0]!).Metrics).toEqual([{ Name: "InitDuration", Unit: "Milliseconds" }]);
  });

  it("counts a request whose model version was never resolved by reason alone", () => {
    const sink = new EmfMetricsSink();

    const documents = emitted(() =>
      sink.record(failure(404, { model: undefined, version: undefined, backend: undefined })),
    );

    expect(documents).toHaveLength(1);
    expect(directive(documents[0]!).Dimensions).toEqual([["reason"]]);
    expect(documents[0]).toMatchObject({ reason: "caller_error", InferenceFailure: 1 });
  });
});

describe("EMF metrics sink: provisioned environments", () => {
  it("does not count a provisioned environment's start as a cold start", () => {
    const sink = new EmfMetricsSink({
      functionName: "maas-inference-fn",
      initializationType: "provisioned-concurrency",
    });

    const documents = emitted(() => sink.record(success({ coldStart: true, initUs: 90_000 })));

    expect(documents.filter((document) => "ColdStart" in document)).toEqual([]);
    expect(documents.filter((document) => "InitDuration" in document)).toHaveLength(1);
  });
});
