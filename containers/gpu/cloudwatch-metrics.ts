/**
 * The container's metrics in CloudWatch. SageMaker ships stdout to CloudWatch Logs without the EMF
 * header, so EMF lines there are not reliably turned into metrics: the container calls PutMetricData
 * itself, with the names and dimensions of the inference function's EMF (names.ts), aggregated in memory
 * as Values/Counts (which keeps percentiles, unlike statistic sets) and sent once a minute, off the
 * request path. Values are kept to 3 significant digits, so that a minute's distinct values stay few.
 */
import type { Dimension, MetricDatum, PutMetricDataCommandInput } from "@aws-sdk/client-cloudwatch";
import type { InferenceMetric, MetricsSink } from "#core/metrics/inference-metric.ts";
import { METRIC_DIMENSIONS, METRICS, METRICS_NAMESPACE, type MetricSpec } from "#core/metrics/names.ts";
import type { BatchExecution } from "#core/metrics/statistics.ts";

/** What the publisher needs of CloudWatch: a CloudWatchClient sending PutMetricDataCommand, or a test's recorder. */
export interface MetricDataSender {
  putMetricData(input: PutMetricDataCommandInput): Promise<unknown>;
}

export interface CloudWatchMetricsOptions {
  readonly sender: MetricDataSender;
  /** @default 60_000 */
  readonly intervalMs?: number;
  /** Series (a metric and its dimension values) held between sends; samples of more are dropped and counted. @default 1000 */
  readonly maxSeries?: number;
  /** Distinct values per series held between sends; further ones are dropped and counted. @default 600 */
  readonly maxValuesPerSeries?: number;
  /** @default nothing */
  readonly log?: (message: string, fields?: Record<string, unknown>) => void;
  /** @default Date.now */
  readonly now?: () => number;
}

interface Series {
  readonly spec: MetricSpec;
  readonly dimensions: readonly Dimension[];
  /** Value -> how many times it occurred since the last send. */
  readonly values: Map<number, number>;
}

/** PutMetricData's limits: 150 values per metric, 1000 metrics per request; values kept well under 1 MB. */
const VALUES_PER_DATUM = 150;
const DATA_PER_REQUEST = 1000;
const VALUES_PER_REQUEST = 10_000;
const SIGNIFICANT_DIGITS = 3;

/**
 * Aggregates infer requests and batch executions per series, and sends them every `intervalMs`: at most
 * one send at a time, two windows in memory at most, each bounded by `maxSeries` x `maxValuesPerSeries`.
 * Recording never throws; a failed send is logged and its window dropped (metrics, not a ledger).
 */
export class CloudWatchMetrics implements MetricsSink {
  readonly #sender: MetricDataSender;
  readonly #maxSeries: number;
  readonly #maxValues: number;
  readonly #log: NonNullable<CloudWatchMetricsOptions["log"]>;
  readonly #now: () => number;
  readonly #timer: NodeJS.Timeout;
  #series = new Map<string, Series>();
  #windowStart: number;
  #dropped = 0;
  #sending: Promise<void> | undefined;

  constructor(options: CloudWatchMetricsOptions) {
    this.#sender = options.sender;
    this.#maxSeries = options.maxSeries ?? 1000;
    this.#maxValues = options.maxValuesPerSeries ?? 600;
    this.#log = options.log ?? (() => undefined);
    this.#now = options.now ?? Date.now;
    this.#windowStart = this.#now();
    this.#timer = setInterval(() => {
      // A send still under way: this window keeps filling (bounded) until the next tick.
      if (this.#sending === undefined) void this.flush();
    }, options.intervalMs ?? 60_000);
    this.#timer.unref();
  }

  /** Samples held now (a bound check for tests and /ping). */
  get heldSamples(): number {
    let held = 0;
    for (const series of this.#series.values()) held += series.values.size;
    return held;
  }

  record(metric: Readonly<InferenceMetric>): void {
    if (metric.model === undefined || metric.version === undefined || metric.backend === undefined) {
      // No model label for a name a caller made up; by backend too, apart from the inference function's.
      if (metric.reason !== undefined && metric.backend !== undefined)
        this.#add(
          METRICS.failures,
          [dimension("backend", metric.backend), dimension("reason", metric.reason)],
          1,
        );
      return;
    }
    const labels = [
      dimension("model", metric.model),
      dimension("version", String(metric.version)),
      dimension("backend", metric.backend),
    ];
    this.#add(METRICS.requests, labels, 1);
    this.#add(METRICS.requestBytes, labels, metric.requestBytes);
    this.#add(METRICS.responseBytes, labels, metric.responseBytes);
    if (metric.outcome === "failure") {
      this.#add(METRICS.failures, [...labels, dimension("reason", metric.reason ?? "internal")], 1);
      return;
    }
    this.#add(METRICS.successes, labels, 1);
    this.#add(METRICS.latency, labels, metric.totalUs / 1000);
    this.#add(METRICS.queueLatency, labels, metric.queueUs / 1000);
    this.#add(METRICS.inputDecodeLatency, labels, metric.inputDecodeUs / 1000);
    this.#add(METRICS.runLatency, labels, metric.inferUs / 1000);
    this.#add(METRICS.outputEncodeLatency, labels, metric.outputEncodeUs / 1000);
    // Only the requests that loaded the model: a zero here would drag every percentile down.
    if (metric.artifactFetchUs > 0)
      this.#add(METRICS.artifactFetchLatency, labels, metric.artifactFetchUs / 1000);
    if (metric.sessionCreateUs > 0)
      this.#add(METRICS.sessionCreateLatency, labels, metric.sessionCreateUs / 1000);
  }

  /** One batch run: its size and how long its oldest request waited, under the model's dimensions. */
  recordExecution(execution: Readonly<BatchExecution>, backend: string): void {
    const labels = [
      dimension("model", execution.model),
      dimension("version", String(execution.version)),
      dimension("backend", backend),
    ];
    this.#add(METRICS.batchSize, labels, execution.batchSize);
    this.#add(METRICS.batchQueueDelay, labels, execution.queueUs / 1000);
  }

  /** Sends what the window holds and starts the next; resolves once sent or logged as failed, never rejects. */
  flush(): Promise<void> {
    const previous = this.#sending ?? Promise.resolve();
    const series = this.#series;
    const dropped = this.#dropped;
    const timestamp = new Date(this.#windowStart);
    this.#series = new Map();
    this.#dropped = 0;
    this.#windowStart = this.#now();
    const sending = previous.then(() => this.#send(series, dropped, timestamp));
    this.#sending = sending;
    void sending.finally(() => {
      if (this.#sending === sending) this.#sending = undefined;
    });
    return sending;
  }

  /** Stops the timer and sends what is held (SageMaker's SIGTERM). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
  }

  #add(spec: MetricSpec, dimensions: readonly Dimension[], value: number): void {
    if (!Number.isFinite(value)) return;
    let key = spec.name;
    for (const { Name, Value } of dimensions) key += `\u0000${Name}=${Value}`;
    let series = this.#series.get(key);
    if (series === undefined) {
      if (this.#series.size >= this.#maxSeries) {
        this.#dropped++;
        return;
      }
      series = { spec, dimensions, values: new Map() };
      this.#series.set(key, series);
    }
    const rounded = value === 0 ? 0 : Number(value.toPrecision(SIGNIFICANT_DIGITS));
    const count = series.values.get(rounded);
    if (count === undefined && series.values.size >= this.#maxValues) {
      this.#dropped++;
      return;
    }
    series.values.set(rounded, (count ?? 0) + 1);
  }

  async #send(series: Map<string, Series>, dropped: number, timestamp: Date): Promise<void> {
    if (dropped > 0) this.#log("metric samples dropped: the in-memory bound was reached", { dropped });
    for (const data of putRequests(series.values(), timestamp)) {
      try {
        await this.#sender.putMetricData({ Namespace: METRICS_NAMESPACE, MetricData: data });
      } catch (error) {
        this.#log("metrics not sent to CloudWatch", { error: String(error), data: data.length });
      }
    }
  }
}

function dimension(name: keyof typeof METRIC_DIMENSIONS, value: string): Dimension {
  return { Name: METRIC_DIMENSIONS[name], Value: value };
}

/**
 * The PutMetricData requests for a window: a series' values in datums of at most 150, the n-th datum of
 * every series in the n-th round (one series never twice in a request), rounds cut to the request limits.
 */
function putRequests(series: Iterable<Series>, timestamp: Date): MetricDatum[][] {
  const rounds: MetricDatum[][] = [];
  for (const { spec, dimensions, values } of series) {
    const entries = [...values];
    for (let start = 0, round = 0; start < entries.length; start += VALUES_PER_DATUM, round++) {
      const chunk = entries.slice(start, start + VALUES_PER_DATUM);
      if (round === rounds.length) rounds.push([]);
      rounds[round]!.push({
        MetricName: spec.name,
        Dimensions: [...dimensions],
        Timestamp: timestamp,
        Unit: spec.unit,
        Values: chunk.map(([value]) => value),
        Counts: chunk.map(([, count]) => count),
      });
    }
  }
  const requests: MetricDatum[][] = [];
  for (const round of rounds) {
    let request: MetricDatum[] = [];
    let values = 0;
    for (const datum of round) {
      const size = datum.Values?.length ?? 0;
      if (request.length >= DATA_PER_REQUEST || values + size > VALUES_PER_REQUEST) {
        requests.push(request);
        request = [];
        values = 0;
      }
      request.push(datum);
      values += size;
    }
    if (request.length > 0) requests.push(request);
  }
  return requests;
}
