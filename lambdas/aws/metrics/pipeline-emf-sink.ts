import type { Metrics } from "@aws-lambda-powertools/metrics";
import { METRIC_DIMENSIONS, METRICS, type MetricSpec } from "#core/metrics/names.ts";
import type { PipelineMetric, PipelineMetricsSink } from "#core/metrics/pipeline-metric.ts";
import { addMetric, serviceMetrics } from "./powertools-metrics.ts";

export interface EmfPipelineMetricsSinkOptions {
  /** @default - Powertools' own (`POWERTOOLS_SERVICE_NAME`); it is no dimension */
  readonly serviceName?: string;
}

/** Each kind's count and duration. */
const FIGURES: Record<PipelineMetric["kind"], { count: MetricSpec; duration: MetricSpec }> = {
  registration: { count: METRICS.registrations, duration: METRICS.registrationDuration },
  optimization: { count: METRICS.optimizations, duration: METRICS.optimizationDuration },
  job: { count: METRICS.jobs, duration: METRICS.jobDuration },
};

/**
 * The worker functions' outcomes as CloudWatch metrics, written by Powertools Metrics as EMF log lines:
 * one line per upload, optimize message or job message, with the dimensions model, version and outcome
 * (outcome alone where the message named no model), flushed as it is written so nothing carries over to
 * the next invocation. No per-caller or per-job dimension: each model × version × outcome is one custom
 * metric, billed monthly.
 */
export class EmfPipelineMetricsSink implements PipelineMetricsSink {
  readonly #metrics: Metrics;

  constructor(options: EmfPipelineMetricsSinkOptions = {}) {
    this.#metrics = serviceMetrics(options.serviceName);
  }

  record(metric: Readonly<PipelineMetric>): void {
    const metrics = this.#metrics;
    if (metric.model !== undefined) metrics.addDimension(METRIC_DIMENSIONS.model, metric.model);
    if (metric.version !== undefined) metrics.addDimension(METRIC_DIMENSIONS.version, String(metric.version));
    metrics.addDimension(METRIC_DIMENSIONS.outcome, metric.outcome);
    const { count, duration } = FIGURES[metric.kind];
    addMetric(metrics, count, 1);
    addMetric(metrics, duration, metric.durationUs / 1000);
    if (metric.kind === "job" && metric.queueUs !== undefined)
      addMetric(metrics, METRICS.jobQueueWait, metric.queueUs / 1000);
    metrics.publishStoredMetrics();
  }
}
