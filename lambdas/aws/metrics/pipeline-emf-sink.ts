import { METRIC_DIMENSIONS, METRICS, type MetricSpec } from "#core/metrics/names.ts";
import type { PipelineMetric, PipelineMetricsSink } from "#core/metrics/pipeline-metric.ts";
import { type EmfOutput, EmfShapes, stdoutEmf } from "./emf.ts";

export interface EmfPipelineMetricsSinkOptions {
  /** @default stdout */
  readonly output?: EmfOutput;
}

/** Each kind's count and duration. */
const FIGURES: Record<PipelineMetric["kind"], { count: MetricSpec; duration: MetricSpec }> = {
  registration: { count: METRICS.registrations, duration: METRICS.registrationDuration },
  optimization: { count: METRICS.optimizations, duration: METRICS.optimizationDuration },
  job: { count: METRICS.jobs, duration: METRICS.jobDuration },
};

type ShapeKey = `${PipelineMetric["kind"]} ${"model" | ""} ${"version" | ""} ${"queue" | ""}`;

const shapes = new EmfShapes((key: ShapeKey) => {
  const [kind, hasModel, hasVersion, hasQueue] = key.split(" ") as [
    PipelineMetric["kind"],
    string,
    string,
    string,
  ];
  const { count, duration } = FIGURES[kind];
  return [
    {
      dimensions: [
        ...(hasModel ? [METRIC_DIMENSIONS.model] : []),
        ...(hasVersion ? [METRIC_DIMENSIONS.version] : []),
        METRIC_DIMENSIONS.outcome,
      ],
      metrics: [count, duration, ...(hasQueue ? [METRICS.jobQueueWait] : [])],
    },
  ];
});

/**
 * The worker functions' outcomes as CloudWatch metrics, one EMF log line (emf.ts) per upload, optimize
 * message or job message, with the dimensions model, version and outcome (outcome alone where the
 * message named no model). No per-caller or per-job dimension: each model × version × outcome is one
 * custom metric, billed monthly.
 */
export class EmfPipelineMetricsSink implements PipelineMetricsSink {
  readonly #output: EmfOutput;

  constructor(options: EmfPipelineMetricsSinkOptions = {}) {
    this.#output = options.output ?? stdoutEmf;
  }

  record(metric: Readonly<PipelineMetric>): void {
    const { count, duration } = FIGURES[metric.kind];
    const queued = metric.kind === "job" && metric.queueUs !== undefined;
    const key: ShapeKey = `${metric.kind} ${metric.model === undefined ? "" : "model"} ${metric.version === undefined ? "" : "version"} ${queued ? "queue" : ""}`;
    this.#output(
      shapes.get(key).line({
        ...(metric.model === undefined ? {} : { model: metric.model }),
        ...(metric.version === undefined ? {} : { version: String(metric.version) }),
        outcome: metric.outcome,
        [count.name]: 1,
        [duration.name]: metric.durationUs / 1000,
        ...(queued ? { [METRICS.jobQueueWait.name]: (metric.queueUs as number) / 1000 } : {}),
      }),
    );
  }
}
