import { PROMETHEUS } from "./names.ts";
import type { PipelineMetric, PipelineMetricsSink } from "./pipeline-metric.ts";
import { escapeLabel, type PrometheusFamily, renderPrometheus } from "./prometheus.ts";

interface Series {
  readonly kind: PipelineMetric["kind"];
  /** Rendered labels: model, version and outcome (outcome alone where the step named no model). */
  readonly labels: string;
  count: number;
  durationUs: number;
  /** Runs that waited on the queue, and how long in all (jobs only). */
  queued: number;
  queueUs: number;
}

/**
 * The local stack's counters of registration, optimization and job outcomes, from the same metric
 * events the workers write as EMF in AWS; `GET /metrics` serves them beside the inference counters.
 * One series per model, version and outcome: a version is registered and optimized about once, so the
 * series grow with the versions published, not with traffic.
 */
export class PipelineStatistics implements PipelineMetricsSink {
  readonly #series = new Map<string, Series>();

  record(metric: Readonly<PipelineMetric>): void {
    const labels = [
      ...(metric.model === undefined ? [] : [`model="${escapeLabel(metric.model)}"`]),
      ...(metric.version === undefined ? [] : [`version="${metric.version}"`]),
      `outcome="${metric.outcome}"`,
    ].join(",");
    const key = `${metric.kind} ${labels}`;
    let series = this.#series.get(key);
    if (series === undefined) {
      series = { kind: metric.kind, labels, count: 0, durationUs: 0, queued: 0, queueUs: 0 };
      this.#series.set(key, series);
    }
    series.count++;
    series.durationUs += metric.durationUs;
    if (metric.kind === "job" && metric.queueUs !== undefined) {
      series.queued++;
      series.queueUs += metric.queueUs;
    }
  }

  /** Every counter as Prometheus text exposition (version 0.0.4), `maas_` names with model, version and outcome labels. */
  prometheus(): string {
    const all = [...this.#series.values()];
    const family = (
      name: string,
      help: string,
      kind: PipelineMetric["kind"],
      value: (series: Series) => number,
      include: (series: Series) => boolean = () => true,
    ): PrometheusFamily => ({
      name,
      help,
      type: "counter",
      samples: all
        .filter((series) => series.kind === kind && include(series))
        .map((series) => ({ labels: series.labels, value: Math.round(value(series)) })),
    });
    return renderPrometheus([
      family(
        PROMETHEUS.registrations,
        "Number of model uploads registration handled, by outcome",
        "registration",
        (s) => s.count,
      ),
      family(
        PROMETHEUS.registrationDuration,
        "Cumulative registration duration in microseconds, by outcome",
        "registration",
        (s) => s.durationUs,
      ),
      family(
        PROMETHEUS.optimizations,
        "Number of optimize messages handled, by outcome",
        "optimization",
        (s) => s.count,
      ),
      family(
        PROMETHEUS.optimizationDuration,
        "Cumulative optimization duration in microseconds, by outcome",
        "optimization",
        (s) => s.durationUs,
      ),
      family(
        PROMETHEUS.jobs,
        "Number of asynchronous job messages handled, by outcome",
        "job",
        (s) => s.count,
      ),
      family(
        PROMETHEUS.jobDuration,
        "Cumulative asynchronous job run duration in microseconds, by outcome",
        "job",
        (s) => s.durationUs,
      ),
      family(
        PROMETHEUS.jobQueueDuration,
        "Cumulative time asynchronous jobs waited on their queue before a run, in microseconds (runs that started)",
        "job",
        (s) => s.queueUs,
        (s) => s.queued > 0,
      ),
    ]);
  }
}
