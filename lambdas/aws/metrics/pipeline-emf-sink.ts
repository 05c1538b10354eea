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

const shapes = new EmfShapes();

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
    const dimensions = {
      ...(metric.model === undefined ? {} : { [METRIC_DIMENSIONS.model]: metric.model }),
      ...(metric.version === undefined ? {} : { [METRIC_DIMENSIONS.version]: String(metric.version) }),
      [METRIC_DIMENSIONS.outcome]: metric.outcome,
    };
    const metrics = [count, duration, ...(queued ? [METRICS.jobQueueWait] : [])];
    const shape = shapes.get(`${Object.keys(dimensions)} ${metrics.map((spec) => spec.name)}`, () => [
      { dimensions: Object.keys(dimensions), metrics },
    ]);
    this.#output(
      shape.line({
        ...dimensions,
        [count.name]: 1,
        [duration.name]: metric.durationUs / 1000,
        ...(queued ? { [METRICS.jobQueueWait.name]: (metric.queueUs as number) / 1000 } : {}),
      }),
    );
  }
}
