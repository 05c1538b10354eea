import type { InferenceMetric, MetricsSink } from "./inference-metric.ts";

/**
 * A model's figures per minute, for the console's charts (`GET /admin/models/<m>/figures`): what the
 * inference function measured, all versions and backends together. Locally from the stack's own
 * recorder (MinuteFigures); in AWS from CloudWatch (InferenceRequests, InferenceFailure, RequestLatency).
 */
export interface ModelFigures {
  /**
   * One point per whole minute from `from`'s minute up to, not including, `to`'s minute, oldest first
   * (`minuteGrid`). Minutes without requests count 0 and have no latency (null). `versions`: the model's
   * versions and where each runs, as the registry lists them (CloudWatch's series are per version).
   */
  series(model: string, from: Date, to: Date, versions: readonly FigureVersion[]): Promise<FigureSeries>;
}

/** A version's `version` and `backend` dimensions. */
export interface FigureVersion {
  readonly version: number;
  readonly target: string;
}

/** One minute's point of a FigureSeries. */
export interface FigurePoint {
  readonly requests: number;
  readonly errors: number;
  readonly p50: number | null;
  readonly p90: number | null;
  readonly p99: number | null;
}

/** Columns of equal length, one entry per minute: the shape charting libraries (uPlot) take as is. */
export interface FigureSeries {
  readonly model: string;
  /** Seconds between points. */
  readonly stepSeconds: 60;
  /** Each minute's start, in epoch seconds. */
  readonly timestamps: readonly number[];
  /** Infer requests that resolved to a version of the model, successes and failures. */
  readonly requests: readonly number[];
  /** Of those, the ones that failed, whatever the reason (caller mistakes included). */
  readonly errors: readonly number[];
  /** End-to-end latency of the minute's successful requests in milliseconds; null without any. */
  readonly latencyMs: {
    readonly p50: readonly (number | null)[];
    readonly p90: readonly (number | null)[];
    readonly p99: readonly (number | null)[];
  };
}

export const MINUTE_MS = 60_000;

/** The minute starts (epoch ms) a series covers: `from`'s minute up to, not including, `to`'s. */
export function minuteGrid(from: Date, to: Date): number[] {
  const first = Math.floor(from.getTime() / MINUTE_MS) * MINUTE_MS;
  const end = Math.floor(to.getTime() / MINUTE_MS) * MINUTE_MS;
  const minutes: number[] = [];
  for (let minute = first; minute < end; minute += MINUTE_MS) minutes.push(minute);
  return minutes;
}

/** The series of `model` over the minutes of `grid`, each minute's point from `point`. */
export function figureSeries(
  model: string,
  grid: readonly number[],
  point: (minute: number) => FigurePoint,
): FigureSeries {
  const points = grid.map(point);
  return {
    model,
    stepSeconds: 60,
    timestamps: grid.map((minute) => minute / 1000),
    requests: points.map((p) => p.requests),
    errors: points.map((p) => p.errors),
    latencyMs: {
      p50: points.map((p) => p.p50),
      p90: points.map((p) => p.p90),
      p99: points.map((p) => p.p99),
    },
  };
}

/** The value at quantile `q` of ascending `sorted` (nearest rank, as CloudWatch's pNN statistics). */
export function quantile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length)));
  return sorted[rank - 1]!;
}

export interface MinuteFiguresOptions {
  /** Minutes kept per model; older ones are dropped as new ones arrive. @default 1440 (a day) */
  readonly retentionMinutes?: number;
  /** Latencies kept per model and minute; past it a uniform sample of the minute's (reservoir). @default 512 */
  readonly samplesPerMinute?: number;
  /** For sampling past `samplesPerMinute`. @default Math.random */
  readonly random?: () => number;
}

/** One model's minute: counts, and a bounded sample of its successes' latencies. */
interface MinuteBucket {
  requests: number;
  errors: number;
  readonly latencies: number[];
}

/**
 * The local ModelFigures: a metrics sink beside the in-process statistics that keeps, per model, a
 * ring of minutes (counts exact, latency percentiles exact up to `samplesPerMinute` successes a minute
 * and sampled beyond), so a day of figures costs a bounded amount of memory whatever the traffic.
 */
export class MinuteFigures implements MetricsSink, ModelFigures {
  readonly #models = new Map<string, Map<number, MinuteBucket>>();
  readonly #retentionMinutes: number;
  readonly #samplesPerMinute: number;
  readonly #random: () => number;

  constructor(options: MinuteFiguresOptions = {}) {
    this.#retentionMinutes = options.retentionMinutes ?? 1440;
    this.#samplesPerMinute = options.samplesPerMinute ?? 512;
    this.#random = options.random ?? Math.random;
  }

  record(metric: Readonly<InferenceMetric>): void {
    // As the statistics: a name a caller made up is never a series.
    if (metric.model === undefined || metric.version === undefined) return;
    const minute = Math.floor(metric.timestamp / MINUTE_MS) * MINUTE_MS;
    const bucket = this.#bucket(metric.model, minute);
    bucket.requests++;
    if (metric.outcome === "failure") {
      bucket.errors++;
      return;
    }
    const ms = metric.totalUs / 1000;
    if (bucket.latencies.length < this.#samplesPerMinute) bucket.latencies.push(ms);
    else {
      // Reservoir sampling: every success of the minute is kept with the same chance.
      const slot = Math.floor(this.#random() * (bucket.requests - bucket.errors));
      if (slot < this.#samplesPerMinute) bucket.latencies[slot] = ms;
    }
  }

  async series(model: string, from: Date, to: Date): Promise<FigureSeries> {
    const minutes = this.#models.get(model);
    return figureSeries(model, minuteGrid(from, to), (minute) => {
      const bucket = minutes?.get(minute);
      const sorted = bucket === undefined ? [] : [...bucket.latencies].sort((a, b) => a - b);
      return {
        requests: bucket?.requests ?? 0,
        errors: bucket?.errors ?? 0,
        p50: quantile(sorted, 0.5),
        p90: quantile(sorted, 0.9),
        p99: quantile(sorted, 0.99),
      };
    });
  }

  #bucket(model: string, minute: number): MinuteBucket {
    let minutes = this.#models.get(model);
    if (minutes === undefined) {
      minutes = new Map();
      this.#models.set(model, minutes);
    }
    let bucket = minutes.get(minute);
    if (bucket === undefined) {
      bucket = { requests: 0, errors: 0, latencies: [] };
      minutes.set(minute, bucket);
      // Once a minute per model at most: drop what fell out of the retention window.
      const oldest = minute - this.#retentionMinutes * MINUTE_MS;
      for (const kept of minutes.keys()) if (kept <= oldest) minutes.delete(kept);
    }
    return bucket;
  }
}
