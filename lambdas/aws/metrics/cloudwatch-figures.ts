import type { GetMetricDataCommandInput, GetMetricDataCommandOutput } from "@aws-sdk/client-cloudwatch";
import { type FigureSeries, MINUTE_MS, type ModelFigures, minuteGrid } from "#core/metrics/figures.ts";
import { METRIC_DIMENSIONS, METRICS, METRICS_NAMESPACE } from "#core/metrics/names.ts";

/** What the figures need of CloudWatch: a CloudWatchClient sending GetMetricDataCommand, or a test's recorder. */
export interface MetricDataReader {
  getMetricData(input: GetMetricDataCommandInput): Promise<GetMetricDataCommandOutput>;
}

/** A model's versions and where each runs: the `version` and `backend` dimensions of its series. */
export type VersionLister = (model: string) => Promise<readonly { version: number; target: string }[]>;

/** Versions charted per model, the newest: each costs four of GetMetricData's 500 queries a call. */
const MAX_VERSIONS = 20;

/**
 * The console's figures in AWS, from the metrics the inference function already emits (EMF):
 * InferenceRequests and RequestLatency per version (model, version, backend), InferenceFailure under
 * every reason through one SEARCH. Latency percentiles of several versions in one minute are their
 * request-weighted mean: exact when one version serves, which is the common case (CloudWatch cannot
 * merge percentiles of different series).
 */
export class CloudWatchFigures implements ModelFigures {
  readonly #reader: MetricDataReader;
  readonly #versions: VersionLister;

  constructor(reader: MetricDataReader, versions: VersionLister) {
    this.#reader = reader;
    this.#versions = versions;
  }

  async series(model: string, from: Date, to: Date): Promise<FigureSeries> {
    const grid = minuteGrid(from, to);
    const versions = (await this.#versions(model)).slice(-MAX_VERSIONS);
    const values = grid.length === 0 ? new Map() : await this.#read(model, versions, grid);
    const at = (id: string, minute: number) => values.get(id)?.get(minute);
    const requests: number[] = [];
    const errors: number[] = [];
    const latency = {
      p50: [] as (number | null)[],
      p90: [] as (number | null)[],
      p99: [] as (number | null)[],
    };
    for (const minute of grid) {
      let total = 0;
      const weighted = { p50: 0, p90: 0, p99: 0 };
      let weight = 0;
      versions.forEach((_, index) => {
        const count = at(`r${index}`, minute) ?? 0;
        total += count;
        const p50 = at(`p50_${index}`, minute);
        if (p50 === undefined || count === 0) return;
        weight += count;
        weighted.p50 += p50 * count;
        weighted.p90 += (at(`p90_${index}`, minute) ?? p50) * count;
        weighted.p99 += (at(`p99_${index}`, minute) ?? p50) * count;
      });
      requests.push(total);
      errors.push(at("errors", minute) ?? 0);
      for (const key of ["p50", "p90", "p99"] as const)
        latency[key].push(weight === 0 ? null : weighted[key] / weight);
    }
    return {
      model,
      stepSeconds: 60,
      timestamps: grid.map((minute) => minute / 1000),
      requests,
      errors,
      latencyMs: latency,
    };
  }

  /** Every query's values by id, then by minute start (epoch ms), across GetMetricData's pages. */
  async #read(
    model: string,
    versions: readonly { version: number; target: string }[],
    grid: readonly number[],
  ): Promise<Map<string, Map<number, number>>> {
    const dimensions = (version: { version: number; target: string }) => [
      { Name: METRIC_DIMENSIONS.model, Value: model },
      { Name: METRIC_DIMENSIONS.version, Value: String(version.version) },
      { Name: METRIC_DIMENSIONS.backend, Value: version.target },
    ];
    const stat = (
      id: string,
      metric: string,
      statistic: string,
      version: { version: number; target: string },
    ) => ({
      Id: id,
      MetricStat: {
        Metric: { Namespace: METRICS_NAMESPACE, MetricName: metric, Dimensions: dimensions(version) },
        Period: 60,
        Stat: statistic,
      },
      ReturnData: true,
    });
    const failures = `SEARCH('{${METRICS_NAMESPACE},${[METRIC_DIMENSIONS.backend, METRIC_DIMENSIONS.model, METRIC_DIMENSIONS.reason, METRIC_DIMENSIONS.version].join(",")}} MetricName="${METRICS.failures.name}" ${METRIC_DIMENSIONS.model}="${model}"', 'Sum', 60)`;
    const queries: NonNullable<GetMetricDataCommandInput["MetricDataQueries"]> = [
      { Id: "failures", Expression: failures, ReturnData: false },
      { Id: "errors", Expression: "SUM(failures)", Period: 60, ReturnData: true },
      ...versions.flatMap((version, index) => [
        stat(`r${index}`, METRICS.requests.name, "Sum", version),
        stat(`p50_${index}`, METRICS.latency.name, "p50", version),
        stat(`p90_${index}`, METRICS.latency.name, "p90", version),
        stat(`p99_${index}`, METRICS.latency.name, "p99", version),
      ]),
    ];
    const values = new Map<string, Map<number, number>>();
    let nextToken: string | undefined;
    do {
      const page = await this.#reader.getMetricData({
        MetricDataQueries: queries,
        StartTime: new Date(grid[0] as number),
        EndTime: new Date((grid.at(-1) as number) + MINUTE_MS),
        ScanBy: "TimestampAscending",
        NextToken: nextToken,
      });
      for (const result of page.MetricDataResults ?? []) {
        if (result.Id === undefined) continue;
        const series = values.get(result.Id) ?? new Map<number, number>();
        values.set(result.Id, series);
        (result.Timestamps ?? []).forEach((timestamp, i) => {
          const value = result.Values?.[i];
          if (value !== undefined) series.set(timestamp.getTime(), value);
        });
      }
      nextToken = page.NextToken;
    } while (nextToken !== undefined);
    return values;
  }
}
