import type { Metrics } from "@aws-lambda-powertools/metrics";
import type { InferenceMetric, MetricsSink } from "#core/metrics/inference-metric.ts";
import { METRIC_DIMENSIONS, METRICS } from "#core/metrics/names.ts";
import { addMetric, serviceMetrics } from "./powertools-metrics.ts";

export interface EmfMetricsSinkOptions {
  /** The `function_name` dimension of the cold start metric; unset, it has none. */
  readonly functionName?: string | undefined;
  /** @default "maas-inference" */
  readonly serviceName?: string;
}

/**
 * Infer requests as CloudWatch metrics, written by Powertools Metrics as EMF log lines: one line per
 * request with the dimensions model, version and backend; a success adds its latency under backend alone
 * (what an alarm watches: it cannot watch a SEARCH over models), a failure its count under model,
 * version, backend and reason. A request whose model version was never resolved counts under reason
 * alone. Lines, not dimension sets: Powertools warns on every line whose sets share a key. Each line is
 * flushed as it is written, after the response, so nothing carries over to the next invocation. No
 * per-caller dimension: every model × version × backend (× reason) is one custom metric, billed monthly.
 */
export class EmfMetricsSink implements MetricsSink {
  readonly #metrics: Metrics;
  readonly #functionName: string | undefined;

  constructor(options: EmfMetricsSinkOptions = {}) {
    this.#metrics = serviceMetrics(options.serviceName ?? "maas-inference");
    this.#functionName = options.functionName;
  }

  record(metric: Readonly<InferenceMetric>): void {
    const metrics = this.#metrics;
    // Powertools' own first-invocation flag: one ColdStart per environment, by function name.
    if (metric.coldStart) {
      metrics.captureColdStartMetric(this.#functionName);
      if (metric.initUs > 0) {
        if (this.#functionName !== undefined) metrics.addDimension("function_name", this.#functionName);
        addMetric(metrics, METRICS.initDuration, metric.initUs / 1000);
        metrics.publishStoredMetrics();
      }
    }
    if (metric.model === undefined || metric.version === undefined || metric.backend === undefined) {
      if (metric.reason === undefined) return;
      metrics.addDimension(METRIC_DIMENSIONS.reason, metric.reason);
      addMetric(metrics, METRICS.failures, 1);
      metrics.publishStoredMetrics();
      return;
    }
    const version = String(metric.version);
    metrics.addDimension(METRIC_DIMENSIONS.model, metric.model);
    metrics.addDimension(METRIC_DIMENSIONS.version, version);
    metrics.addDimension(METRIC_DIMENSIONS.backend, metric.backend);
    addMetric(metrics, METRICS.requests, 1);
    addMetric(metrics, METRICS.requestBytes, metric.requestBytes);
    addMetric(metrics, METRICS.responseBytes, metric.responseBytes);
    if (metric.outcome === "success") {
      addMetric(metrics, METRICS.successes, 1);
      addMetric(metrics, METRICS.latency, metric.totalUs / 1000);
      addMetric(metrics, METRICS.registryLatency, metric.registryUs / 1000);
      addMetric(metrics, METRICS.queueLatency, metric.queueUs / 1000);
      addMetric(metrics, METRICS.inputDecodeLatency, metric.inputDecodeUs / 1000);
      addMetric(metrics, METRICS.runLatency, metric.inferUs / 1000);
      addMetric(metrics, METRICS.outputEncodeLatency, metric.outputEncodeUs / 1000);
      // Only the requests that loaded the model: a zero here would drag every percentile down.
      if (metric.artifactFetchUs > 0)
        addMetric(metrics, METRICS.artifactFetchLatency, metric.artifactFetchUs / 1000);
      if (metric.sessionCreateUs > 0)
        addMetric(metrics, METRICS.sessionCreateLatency, metric.sessionCreateUs / 1000);
      metrics.publishStoredMetrics();
      metrics.addDimension(METRIC_DIMENSIONS.backend, metric.backend);
      addMetric(metrics, METRICS.latency, metric.totalUs / 1000);
      metrics.publishStoredMetrics();
      return;
    }
    metrics.publishStoredMetrics();
    // The failure under its reason, on a line of its own: a reason on the line above would split every
    // metric there by reason too.
    metrics.addDimension(METRIC_DIMENSIONS.model, metric.model);
    metrics.addDimension(METRIC_DIMENSIONS.version, version);
    metrics.addDimension(METRIC_DIMENSIONS.backend, metric.backend);
    metrics.addDimension(METRIC_DIMENSIONS.reason, metric.reason ?? "internal");
    addMetric(metrics, METRICS.failures, 1);
    metrics.publishStoredMetrics();
  }
}
