import { Metrics, MetricUnit } from "@aws-lambda-powertools/metrics";
import { METRICS_NAMESPACE, type MetricSpec } from "#core/metrics/names.ts";

/**
 * A Powertools Metrics writer in the service's namespace with no default dimension: Powertools adds
 * `service` to every dimension set, and the contract is the vocabulary's dimensions only.
 * `serviceName` unset: Powertools' own (`POWERTOOLS_SERVICE_NAME`).
 */
export function serviceMetrics(serviceName?: string): Metrics {
  const metrics = new Metrics({
    namespace: METRICS_NAMESPACE,
    ...(serviceName === undefined ? {} : { serviceName }),
  });
  metrics.clearDefaultDimensions();
  return metrics;
}

/** Adds one figure of the vocabulary, in its unit. */
export function addMetric(metrics: Metrics, spec: MetricSpec, value: number): void {
  metrics.addMetric(spec.name, MetricUnit[spec.unit], value);
}
