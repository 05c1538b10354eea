import { Duration } from "aws-cdk-lib";
import type { RestApi } from "aws-cdk-lib/aws-apigateway";
import {
  MathExpression,
  Metric,
  type MetricOptions,
  SearchExpression,
  Stats,
} from "aws-cdk-lib/aws-cloudwatch";
import { METRIC_DIMENSIONS, METRICS_NAMESPACE, type MetricSpec } from "#core/metrics/names.ts";
import type { ServingTarget } from "#core/model.ts";

/**
 * Powertools' service name of each function that emits metrics (`POWERTOOLS_SERVICE_NAME`): the name its
 * logs and its cold start metric carry.
 */
export const METRICS_SERVICES = {
  inference: "maas-inference",
  jobs: "maas-jobs",
  register: "maas-register",
  optimize: "maas-optimize",
} as const;

/** One figure of `lambdas/core/metrics/names.ts`. */
export type MaasMetric = MetricSpec;

/** What Powertools Metrics reads: the namespace its EMF lines go to and the service they are counted under. */
export function metricsEnvironment(service: string): Record<string, string> {
  return { POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE, POWERTOOLS_SERVICE_NAME: service };
}

/**
 * `metric` of one backend, every model and version together: the series with the `backend` dimension
 * alone, which an alarm can watch (an alarm cannot watch a SEARCH, and the per-model series come and go).
 */
export function backendMetric(metric: MaasMetric, backend: ServingTarget, props?: MetricOptions): Metric {
  return new Metric({
    namespace: METRICS_NAMESPACE,
    metricName: metric.name,
    dimensionsMap: { [METRIC_DIMENSIONS.backend]: backend },
    period: Duration.minutes(5),
    ...props,
  });
}

export interface SearchOptions {
  /** A CloudWatch statistic: `Sum`, `Average`, `Maximum`, `p99`... */
  readonly statistic: string;
  readonly period: Duration;
  /** Prefixed to each series' own label (its dimension values). @default - the series' label alone */
  readonly label?: string;
  /** Dimension values the series must have (exact match), e.g. `{ reason: "throttled" }`. @default {} */
  readonly where?: Readonly<Record<string, string>>;
}

/**
 * Every series of `metric` in the service's namespace, whatever its dimensions: a partial-match SEARCH
 * (no `{namespace,dimension...}` schema, which would match one exact dimension set only), so that a new
 * model, version or backend shows up without a deploy.
 */
export function searchMetric(metric: MaasMetric, options: SearchOptions): SearchExpression {
  const terms = [
    `Namespace="${METRICS_NAMESPACE}"`,
    `MetricName="${metric.name}"`,
    ...Object.entries(options.where ?? {}).map(([name, value]) => `${name}="${value}"`),
  ];
  return new SearchExpression({
    expression: `SEARCH('${terms.join(" ")}', '${options.statistic}', ${options.period.toSeconds()})`,
    label: options.label,
    period: options.period,
  });
}

/** The share of the API's requests answered 5xx, in percent, over `period`: what the dashboard graphs and the alarm watches. */
export function apiErrorRate(api: RestApi, period: Duration, label: string): MathExpression {
  const sum = { period, statistic: Stats.SUM };
  return new MathExpression({
    expression: "100 * errors / requests",
    usingMetrics: { errors: api.metricServerError(sum), requests: api.metricCount(sum) },
    label,
    period,
  });
}
