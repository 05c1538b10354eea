/**
 * `npm run bench:emf`: the inference function's metric lines per served request, written by this
 * project's EMF writer (lambdas/aws/metrics/emf-sink.ts) against Powertools Metrics writing the same
 * figures, in one run: alternating blocks of the same records (a success, and one failure in ten) into a
 * discarding stream, the time per request and the ratio. Powertools is the baseline the hand-written
 * writer must beat by more than the noise to exist (STYLE.md); it writes what the sink wrote before.
 *   BENCH_EMF_RECORDS (default 20000) per block, BENCH_EMF_ROUNDS (default 6) blocks per writer.
 */
import { Metrics, MetricUnit } from "@aws-lambda-powertools/metrics";
import { EmfMetricsSink } from "#aws/metrics/emf-sink.ts";
import type { InferenceMetric } from "#core/metrics/inference-metric.ts";
import { METRIC_DIMENSIONS, METRICS, METRICS_NAMESPACE, type MetricSpec } from "#core/metrics/names.ts";
import { median, printTable } from "./stats.ts";

const RECORDS = Number(process.env.BENCH_EMF_RECORDS ?? 20_000);
const ROUNDS = Number(process.env.BENCH_EMF_ROUNDS ?? 6);

const base = {
  model: "iris",
  version: 3,
  backend: "lambda" as const,
  coldStart: false,
  initUs: 0,
  totalUs: 512,
  registryUs: 11,
  queueUs: 6,
  inputDecodeUs: 24,
  inferUs: 301,
  outputEncodeUs: 33,
  artifactFetchUs: 0,
  sessionCreateUs: 0,
  requestBytes: 137,
  responseBytes: 260,
  timestamp: Date.now(),
};
const success = { ...base, outcome: "success", reason: undefined } as unknown as InferenceMetric;
const failure = { ...base, outcome: "failure", reason: "caller_error" } as unknown as InferenceMetric;

/** What the sink did with Powertools before: two lines a success, two a failure. */
class PowertoolsSink {
  readonly #metrics = new Metrics({ namespace: METRICS_NAMESPACE, serviceName: "maas-inference" });
  constructor() {
    this.#metrics.clearDefaultDimensions();
  }
  record(metric: InferenceMetric): void {
    const m = this.#metrics;
    const add = (spec: MetricSpec, value: number) => m.addMetric(spec.name, MetricUnit[spec.unit], value);
    const dimensions = () => {
      m.addDimension(METRIC_DIMENSIONS.model, metric.model as string);
      m.addDimension(METRIC_DIMENSIONS.version, String(metric.version));
      m.addDimension(METRIC_DIMENSIONS.backend, metric.backend as string);
    };
    dimensions();
    add(METRICS.requests, 1);
    add(METRICS.requestBytes, metric.requestBytes);
    add(METRICS.responseBytes, metric.responseBytes);
    if (metric.outcome === "success") {
      add(METRICS.successes, 1);
      add(METRICS.latency, metric.totalUs / 1000);
      add(METRICS.registryLatency, metric.registryUs / 1000);
      add(METRICS.queueLatency, metric.queueUs / 1000);
      add(METRICS.inputDecodeLatency, metric.inputDecodeUs / 1000);
      add(METRICS.runLatency, metric.inferUs / 1000);
      add(METRICS.outputEncodeLatency, metric.outputEncodeUs / 1000);
      m.publishStoredMetrics();
      m.addDimension(METRIC_DIMENSIONS.backend, metric.backend as string);
      add(METRICS.latency, metric.totalUs / 1000);
      m.publishStoredMetrics();
      return;
    }
    m.publishStoredMetrics();
    dimensions();
    m.addDimension(METRIC_DIMENSIONS.reason, metric.reason ?? "internal");
    add(METRICS.failures, 1);
    m.publishStoredMetrics();
  }
}

function block(sink: { record(metric: InferenceMetric): void }): number {
  const start = performance.now();
  for (let i = 0; i < RECORDS; i++) sink.record(i % 10 === 9 ? failure : success);
  return ((performance.now() - start) * 1000) / RECORDS;
}

function main() {
  let bytes = 0;
  const write = process.stdout.write.bind(process.stdout);
  // Both write to stdout, as in Lambda; here it is discarded (and counted) so the terminal costs nothing.
  process.stdout.write = ((chunk: string | Uint8Array) => {
    bytes += chunk.length;
    return true;
  }) as typeof process.stdout.write;
  const sinks = { powertools: new PowertoolsSink(), "hand-written": new EmfMetricsSink() };
  const times: Record<keyof typeof sinks, number[]> = { powertools: [], "hand-written": [] };
  const bytesOf: Record<keyof typeof sinks, number> = { powertools: 0, "hand-written": 0 };
  try {
    for (const sink of Object.values(sinks)) block(sink);
    for (let round = 0; round < ROUNDS; round++) {
      const order = (
        round % 2 === 0 ? ["powertools", "hand-written"] : ["hand-written", "powertools"]
      ) as (keyof typeof sinks)[];
      for (const name of order) {
        const before = bytes;
        times[name].push(block(sinks[name]));
        bytesOf[name] = (bytes - before) / RECORDS;
      }
    }
  } finally {
    process.stdout.write = write;
  }
  const baseline = median(times.powertools);
  printTable(
    ["writer", "µs per request (p50 of blocks)", "bytes per request", "vs Powertools"],
    (Object.keys(sinks) as (keyof typeof sinks)[]).map((name) => [
      name,
      median(times[name]).toFixed(2),
      bytesOf[name].toFixed(0),
      (median(times[name]) / baseline).toFixed(3),
    ]),
  );
  console.log(`${ROUNDS} alternating blocks × ${RECORDS} requests per writer; 1 request in 10 a failure`);
}

main();
