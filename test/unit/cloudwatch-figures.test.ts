import type { GetMetricDataCommandInput, GetMetricDataCommandOutput } from "@aws-sdk/client-cloudwatch";
import { describe, expect, it } from "vitest";
import { CloudWatchFigures, type MetricDataReader } from "#aws/metrics/cloudwatch-figures.ts";

const T0 = Date.UTC(2026, 11, 7, 12, 0);
const minute = (n: number) => new Date(T0 + n * 60_000);

/** A CloudWatch that answers each query id from `series` (values by minute index), in two pages. */
function fakeCloudWatch(series: Record<string, Record<number, number>>) {
  const calls: GetMetricDataCommandInput[] = [];
  const reader: MetricDataReader = {
    async getMetricData(input) {
      calls.push(input);
      const results = Object.entries(series).map(([id, points]) => ({
        Id: id,
        Timestamps: Object.keys(points).map((n) => minute(Number(n))),
        Values: Object.values(points),
      }));
      // The first call answers half the queries and a token; the second the rest.
      const half = Math.ceil(results.length / 2);
      return (
        input.NextToken === undefined
          ? { MetricDataResults: results.slice(0, half), NextToken: "page-2" }
          : { MetricDataResults: results.slice(half) }
      ) as GetMetricDataCommandOutput;
    },
  };
  return { reader, calls };
}

describe("CloudWatchFigures", () => {
  it("asks for each version's requests and latency percentiles by its dimensions, and every failure reason through one SEARCH", async () => {
    const { reader, calls } = fakeCloudWatch({});
    const figures = new CloudWatchFigures(reader);

    await figures.series("iris", minute(0), minute(3), [
      { version: 1, target: "lambda" },
      { version: 2, target: "sagemaker" },
    ]);

    const queries = calls[0]?.MetricDataQueries ?? [];
    expect(queries.find((query) => query.Id === "failures")?.Expression).toBe(
      `SEARCH('{ServerlessMaaS,backend,model,reason,version} MetricName="InferenceFailure" model="iris"', 'Sum', 60)`,
    );
    expect(queries.find((query) => query.Id === "p99_1")?.MetricStat).toEqual({
      Metric: {
        Namespace: "ServerlessMaaS",
        MetricName: "RequestLatency",
        Dimensions: [
          { Name: "model", Value: "iris" },
          { Name: "version", Value: "2" },
          { Name: "backend", Value: "sagemaker" },
        ],
      },
      Period: 60,
      Stat: "p99",
    });
    expect(calls[0]).toMatchObject({
      StartTime: minute(0),
      EndTime: minute(3),
      ScanBy: "TimestampAscending",
    });
    expect(calls[1]?.NextToken).toBe("page-2");
  });

  it("sums requests over versions, weights their percentiles by requests, and leaves quiet minutes at zero and null", async () => {
    const { reader } = fakeCloudWatch({
      r0: { 0: 30, 1: 10 },
      r1: { 1: 30 },
      p50_0: { 0: 2, 1: 4 },
      p90_0: { 0: 3, 1: 5 },
      p99_0: { 0: 9, 1: 6 },
      p50_1: { 1: 8 },
      p90_1: { 1: 9 },
      p99_1: { 1: 10 },
      errors: { 1: 2 },
    });
    const figures = new CloudWatchFigures(reader);

    const series = await figures.series("iris", minute(0), minute(3), [
      { version: 1, target: "lambda" },
      { version: 2, target: "lambda" },
    ]);

    expect(series.timestamps).toEqual([0, 1, 2].map((n) => minute(n).getTime() / 1000));
    expect(series.requests).toEqual([30, 40, 0]);
    expect(series.errors).toEqual([0, 2, 0]);
    expect(series.latencyMs.p50).toEqual([2, (4 * 10 + 8 * 30) / 40, null]);
    expect(series.latencyMs.p99).toEqual([9, (6 * 10 + 10 * 30) / 40, null]);
  });

  it("does not call CloudWatch for an empty window", async () => {
    const { reader, calls } = fakeCloudWatch({});
    const figures = new CloudWatchFigures(reader);

    const series = await figures.series("iris", minute(5), minute(5), [{ version: 1, target: "lambda" }]);

    expect(series.requests).toEqual([]);
    expect(calls).toEqual([]);
  });
});
