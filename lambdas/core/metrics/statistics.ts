import type { InferenceMetric, MetricsSink } from "./inference-metric.ts";
import { FAILURE_REASONS, type FailureReason, PROMETHEUS } from "./names.ts";
import { escapeLabel, type PrometheusFamily, renderPrometheus } from "./prometheus.ts";

/** The name server metadata lists among its extensions while statistics are kept. */
export const STATISTICS_EXTENSION = "statistics";

/** Triton's `$duration_stat`: how many times, and their total in nanoseconds. */
export interface DurationStat {
  readonly count: number;
  readonly ns: number;
}

/** Triton's `$batch_stats`: the executions of one batch size and their compute phases. */
export interface BatchStat {
  readonly batch_size: number;
  readonly count: number;
  readonly compute_input: DurationStat;
  readonly compute_infer: DurationStat;
  readonly compute_output: DurationStat;
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
  readonly batch_stats: readonly BatchStat[];
}

/** `GET /v2/models[/<m>[/versions/<v>]]/stats`: `$stats_model_response`. */
export interface StatisticsResponse {
  readonly model_stats: readonly ModelStat[];
}

/** Which versions a statistics request covers: each model with its versions. */
export type StatisticsScope = readonly { readonly name: string; readonly versions: readonly number[] }[];

/** One run of a batching server's model: the requests it merged counted once, as Triton's executions are. */
export interface BatchExecution {
  readonly model: string;
  readonly version: number;
  /** Inferences in the run: the rows of every request it merged. */
  readonly batchSize: number;
  /** How long its oldest request waited for batch-mates before the run began, in µs. */
  readonly queueUs: number;
  /** Stacking the requests' inputs, in µs. */
  readonly computeInputUs: number;
  readonly computeInferUs: number;
  /** Splitting the outputs back into each request's rows, in µs. */
  readonly computeOutputUs: number;
}

export interface InferenceStatisticsOptions {
  /**
   * Runs are batched and reported through recordExecution, so that N requests merged into one run count
   * one execution of N inferences; a request's success then counts neither.
   * @default false - each successful request is one execution of its own batch size (the inference function)
   */
  readonly batched?: boolean;
}

/** One batch size's executions; durations summed in µs. */
class BatchSizeCounters {
  count = 0;
  computeInputUs = 0;
  computeInferUs = 0;
  computeOutputUs = 0;
}

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
  batchQueueUs = 0;
  readonly failures = zeroByReason();
  readonly batches = new Map<number, BatchSizeCounters>();

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
 * the registry resolved: a request for an unknown name counts only under its reason. A batching server
 * (`batched`) reports its runs too, with their batch sizes (Triton's `batch_stats`).
 */
export class InferenceStatistics implements MetricsSink {
  readonly #models = new Map<string, Map<number, VersionCounters>>();
  readonly #unresolved = zeroByReason();
  readonly #batched: boolean;

  constructor(options: InferenceStatisticsOptions = {}) {
    this.#batched = options.batched ?? false;
  }

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
    if (!this.#batched) {
      counters.inferenceCount += metric.batchSize;
      counters.executionCount++;
    }
    counters.lastInference = Math.max(counters.lastInference, metric.timestamp);
  }

  /** A batching server's run that produced outputs (a failed run counts none, as in Triton). */
  recordExecution(execution: Readonly<BatchExecution>): void {
    const counters = this.#counters(execution.model, execution.version);
    counters.executionCount++;
    counters.inferenceCount += execution.batchSize;
    counters.batchQueueUs += execution.queueUs;
    let size = counters.batches.get(execution.batchSize);
    if (size === undefined) {
      size = new BatchSizeCounters();
      counters.batches.set(execution.batchSize, size);
    }
    size.count++;
    size.computeInputUs += execution.computeInputUs;
    size.computeInferUs += execution.computeInferUs;
    size.computeOutputUs += execution.computeOutputUs;
  }

  /** Every model version counted so far, as a scope (a server with no registry lists these). */
  recorded(): StatisticsScope {
    return Array.from(this.#models, ([name, versions]) => ({ name, versions: [...versions.keys()] }));
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
      ...(this.#batched ? batchFamilies(entries, counter) : []),
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

/** A batching server's families: its runs by batch size, and how long their oldest requests waited. */
function batchFamilies(
  entries: readonly { labels: string; counters: VersionCounters }[],
  counter: (name: string, help: string, value: (counters: VersionCounters) => number) => PrometheusFamily,
): PrometheusFamily[] {
  return [
    {
      name: PROMETHEUS.batchExecutions,
      help: "Number of model executions by batch size (inferences in the run)",
      type: "counter",
      samples: entries.flatMap(({ labels, counters }) =>
        [...counters.batches.keys()]
          .sort((a, b) => a - b)
          .map((size) => ({
            labels: `${labels},batch_size="${size}"`,
            value: counters.batches.get(size)!.count,
          })),
      ),
    },
    counter(
      PROMETHEUS.batchQueueDuration,
      "Cumulative time each execution's oldest request waited for batch-mates, in microseconds",
      (c) => c.batchQueueUs,
    ),
  ];
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
    batch_stats: [...c.batches]
      .sort(([a], [b]) => a - b)
      .map(([size, batch]) => ({
        batch_size: size,
        count: batch.count,
        compute_input: duration(batch.count, batch.computeInputUs),
        compute_infer: duration(batch.count, batch.computeInferUs),
        compute_output: duration(batch.count, batch.computeOutputUs),
      })),
  };
}
