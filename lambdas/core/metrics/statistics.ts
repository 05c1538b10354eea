import type { InferenceMetric, MetricsSink } from "./inference-metric.ts";
import { FAILURE_REASONS, type FailureReason, PROMETHEUS } from "./names.ts";
import { type PrometheusFamily, renderPrometheus } from "./prometheus.ts";

/** The name server metadata lists among its extensions while statistics are kept. */
export const STATISTICS_EXTENSION = "statistics";

/** Triton's `$duration_stat`: how many times, and their total in nanoseconds. */
export interface DurationStat {
  readonly count: number;
  readonly ns: number;
}

/** Triton's statistics extension `$model_stat` (docs/protocol/extension_statistics.md). */
export interface ModelStat {
  readonly name: string;
  readonly version: string;
  readonly last_inference: number;
  readonly inference_count: number;
  readonly execution_count: number;
  readonly inference_stats: {
    readonly success: DurationStat;
    readonly fail: DurationStat;
    readonly queue: DurationStat;
    readonly compute_input: DurationStat;
    readonly compute_infer: DurationStat;
    readonly compute_output: DurationStat;
    readonly cache_hit: DurationStat;
  };
  readonly batch_stats: readonly never[];
}

/** `GET /v2/models[/<m>[/versions/<v>]]/stats`: `$stats_model_response`. */
export interface StatisticsResponse {
  readonly model_stats: readonly ModelStat[];
}

/** Which versions a statistics request covers: each model with its versions. */
export type StatisticsScope = readonly { readonly name: string; readonly versions: readonly number[] }[];

/** One model version's counters since this process started; durations summed in µs. */
class VersionCounters {
  successCount = 0;
  successUs = 0;
  failUs = 0;
  queueUs = 0;
  computeInputUs = 0;
  computeInferUs = 0;
  computeOutputUs = 0;
  registryUs = 0;
  artifactFetchUs = 0;
  sessionCreateUs = 0;
  inferenceCount = 0;
  executionCount = 0;
  lastInference = 0;
  requestBytes = 0;
  responseBytes = 0;
  coldStarts = 0;
  readonly failures = zeroByReason();

  /** Failures of every reason. */
  get failCount(): number {
    return FAILURE_REASONS.reduce((sum, reason) => sum + this.failures[reason], 0);
  }
}

function zeroByReason(): Record<FailureReason, number> {
  return Object.fromEntries(FAILURE_REASONS.map((reason) => [reason, 0])) as Record<FailureReason, number>;
}

const ZERO = new VersionCounters();

function duration(count: number, us: number): DurationStat {
  return { count, ns: Math.round(us * 1000) };
}

/**
 * In-memory counters per model and version, as Triton keeps them: the statistics extension's JSON and
 * Prometheus text with Triton's metric names. Successes count their phases (queue, compute input, infer
 * and output), as Triton's do; failures their count and duration, by reason. Bounded by the versions
 * the registry resolved: a request for an unknown name counts only under its reason.
 */
export class InferenceStatistics implements MetricsSink {
  readonly #models = new Map<string, Map<number, VersionCounters>>();
  readonly #unresolved = zeroByReason();

  record(metric: Readonly<InferenceMetric>): void {
    if (metric.model === undefined || metric.version === undefined) {
      if (metric.reason !== undefined) this.#unresolved[metric.reason]++;
      return;
    }
    const counters = this.#counters(metric.model, metric.version);
    counters.requestBytes += metric.requestBytes;
    counters.responseBytes += metric.responseBytes;
    if (metric.coldStart) counters.coldStarts++;
    if (metric.outcome === "failure") {
      counters.failUs += metric.totalUs;
      counters.failures[metric.reason ?? "internal"]++;
      return;
    }
    counters.successCount++;
    counters.successUs += metric.totalUs;
    counters.queueUs += metric.queueUs;
    counters.computeInputUs += metric.inputDecodeUs;
    counters.computeInferUs += metric.inferUs;
    counters.computeOutputUs += metric.outputEncodeUs;
    counters.registryUs += metric.registryUs;
    counters.artifactFetchUs += metric.artifactFetchUs;
    counters.sessionCreateUs += metric.sessionCreateUs;
    counters.inferenceCount += metric.batchSize;
    counters.executionCount++;
    counters.lastInference = Math.max(counters.lastInference, metric.timestamp);
  }

  /** The statistics extension's response for `scope`; versions with no requests yet report zeros, as Triton's do. */
  modelStats(scope: StatisticsScope): StatisticsResponse {
    const stats: ModelStat[] = [];
    for (const { name, versions } of scope) {
      for (const version of versions) stats.push(modelStat(name, version, this.#get(name, version) ?? ZERO));
    }
    return { model_stats: stats };
  }

  /** Every counter as Prometheus text exposition (version 0.0.4), Triton's names with `model` and `version` labels. */
  prometheus(): string {
    const entries: { labels: string; counters: VersionCounters }[] = [];
    for (const [name, versions] of this.#models) {
      for (const [version, counters] of versions)
        entries.push({ labels: `model="${escapeLabel(name)}",version="${version}"`, counters });
    }
    const counter = (
      name: string,
      help: string,
      value: (counters: VersionCounters) => number,
    ): PrometheusFamily => ({
      name,
      help,
      type: "counter",
      samples: entries.map(({ labels, counters }) => ({ labels, value: Math.round(value(counters)) })),
    });
    return renderPrometheus([
      counter(
        PROMETHEUS.success,
        "Number of successful inference requests, all batch sizes",
        (c) => c.successCount,
      ),
      {
        name: PROMETHEUS.failure,
        help: "Number of failed inference requests, all batch sizes",
        type: "counter",
        samples: entries.flatMap(({ labels, counters }) =>
          FAILURE_REASONS.map((reason) => ({
            labels: `${labels},reason="${reason}"`,
            value: counters.failures[reason],
          })),
        ),
      },
      counter(
        PROMETHEUS.inferenceCount,
        "Number of inferences performed (a batch of n counts n)",
        (c) => c.inferenceCount,
      ),
      counter(PROMETHEUS.execCount, "Number of model executions performed", (c) => c.executionCount),
      counter(
        PROMETHEUS.requestDuration,
        "Cumulative inference request duration in microseconds",
        (c) => c.successUs,
      ),
      counter(
        PROMETHEUS.queueDuration,
        "Cumulative inference queuing duration in microseconds",
        (c) => c.queueUs,
      ),
      counter(
        PROMETHEUS.computeInput,
        "Cumulative compute input duration in microseconds",
        (c) => c.computeInputUs,
      ),
      counter(
        PROMETHEUS.computeInfer,
        "Cumulative compute inference duration in microseconds",
        (c) => c.computeInferUs,
      ),
      counter(
        PROMETHEUS.computeOutput,
        "Cumulative inference compute output duration in microseconds",
        (c) => c.computeOutputUs,
      ),
      counter(
        PROMETHEUS.registryDuration,
        "Cumulative model registry lookup duration in microseconds",
        (c) => c.registryUs,
      ),
      counter(
        PROMETHEUS.artifactFetchDuration,
        "Cumulative model artifact fetch duration in microseconds, requests that loaded the model",
        (c) => c.artifactFetchUs,
      ),
      counter(
        PROMETHEUS.sessionCreateDuration,
        "Cumulative onnxruntime session creation duration in microseconds, requests that loaded the model",
        (c) => c.sessionCreateUs,
      ),
      counter(
        PROMETHEUS.coldStarts,
        "Number of environments whose first inference request this model version served",
        (c) => c.coldStarts,
      ),
      counter(PROMETHEUS.requestBytes, "Bytes of inference request bodies", (c) => c.requestBytes),
      counter(PROMETHEUS.responseBytes, "Bytes of inference response bodies", (c) => c.responseBytes),
      {
        name: PROMETHEUS.unresolvedFailure,
        help: "Number of inference requests that failed before a model version was resolved (unknown model, version or alias; registry unreachable)",
        type: "counter",
        samples: FAILURE_REASONS.map((reason) => ({
          labels: `reason="${reason}"`,
          value: this.#unresolved[reason],
        })),
      },
    ]);
  }

  #get(name: string, version: number): VersionCounters | undefined {
    return this.#models.get(name)?.get(version);
  }

  #counters(name: string, version: number): VersionCounters {
    let versions = this.#models.get(name);
    if (versions === undefined) {
      versions = new Map();
      this.#models.set(name, versions);
    }
    let counters = versions.get(version);
    if (counters === undefined) {
      counters = new VersionCounters();
      versions.set(version, counters);
    }
    return counters;
  }
}

function modelStat(name: string, version: number, c: VersionCounters): ModelStat {
  return {
    name,
    version: String(version),
    last_inference: c.lastInference,
    inference_count: c.inferenceCount,
    execution_count: c.executionCount,
    inference_stats: {
      success: duration(c.successCount, c.successUs),
      fail: duration(c.failCount, c.failUs),
      queue: duration(c.successCount, c.queueUs),
      compute_input: duration(c.successCount, c.computeInputUs),
      compute_infer: duration(c.successCount, c.computeInferUs),
      compute_output: duration(c.successCount, c.computeOutputUs),
      // No response cache: never a hit.
      cache_hit: duration(0, 0),
    },
    batch_stats: [],
  };
}

/** A label value as the text format escapes it: backslash, double quote and line feed. */
function escapeLabel(value: string): string {
  return value.replace(/[\\"\n]/g, (char) => (char === "\n" ? "\\n" : `\\${char}`));
}
