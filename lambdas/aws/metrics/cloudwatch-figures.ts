import type { GetMetricDataCommandInput, GetMetricDataCommandOutput } from "@aws-sdk/client-cloudwatch";
import {
  type FigureSeries,
  type FigureVersion,
  figureSeries,
  MINUTE_MS,
  type ModelFigures,
  minuteGrid,
} from "#core/metrics/figures.ts";
import { METRIC_DIMENSIONS, METRICS, METRICS_NAMESPACE } from "#core/metrics/names.ts";

/** What the figures need of CloudWatch: a CloudWatchClient sending GetMetricDataCommand, or a test's recorder. */
export interface MetricDataReader {
  getMetricData(input: GetMetricDataCommandInput): Promise<GetMetricDataCommandOutput>;
}

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

  constructor(reader: MetricDataReader) {
    this.#reader = reader;
  }

  async series(
    model: string,
    from: Date,
    to: Date,
    allVersions: readonly FigureVersion[],
  ): Promise<FigureSeries> {
    const grid = minuteGrid(from, to);
    const versions = allVersions.slice(-MAX_VERSIONS);
    const values = grid.length === 0 ? new Map() : await this.#read(model, versions, grid);
    // Each version's series, looked up once rather than by id in every minute.
    const perVersion = versions.map((_, index) => ({
      requests: values.get(`r${index}`),
      p50: values.get(`p50_${index}`),
      p90: values.get(`p90_${index}`),
      p99: values.get(`p99_${index}`),
    }));
    const errors = values.get("errors");
    return figureSeries(model, grid, (minute) => {
      let requests = 0;
      const weighted = { p50: 0, p90: 0, p99: 0 };
      let weight = 0;
      for (const series of perVersion) {
        const count = series.requests?.get(minute) ?? 0;
        requests += count;
        const p50 = series.p50?.get(minute);
        if (p50 === undefined || count === 0) continue;
        weight += count;
        weighted.p50 += p50 * count;
        weighted.p90 += (series.p90?.get(minute) ?? p50) * count;
        weighted.p99 += (series.p99?.get(minute) ?? p50) * count;
      }
      const mean = (key: keyof typeof weighted) => (weight === 0 ? null : weighted[key] / weight);
      return {
        requests,
        errors: errors?.get(minute) ?? 0,
        p50: mean("p50"),
        p90: mean("p90"),
        p99: mean("p99"),
      };
    });
  }

  /** Every query's values by id, then by minute start (epoch ms), across GetMetricData's pages. */
  async #read(
    model: string,
    versions: readonly FigureVersion[],
    grid: readonly number[],
  ): Promise<Map<string, Map<number, number>>> {
    const dimensions = (version: FigureVersion) => [
      { Name: METRIC_DIMENSIONS.model, Value: model },
      { Name: METRIC_DIMENSIONS.version, Value: String(version.version) },
      { Name: METRIC_DIMENSIONS.backend, Value: version.target },
    ];
    const stat = (id: string, metric: string, statistic: string, version: FigureVersion) => ({
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
