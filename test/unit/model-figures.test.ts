import { describe, expect, it } from "vitest";
import { MINUTE_MS, MinuteFigures, minuteGrid, quantile } from "#core/metrics/figures.ts";
import { type InferenceMetric, newInferenceMetric } from "#core/metrics/inference-metric.ts";
import { mulberry32 } from "#core/tensor/seeded-random.ts";

const T0 = Date.UTC(2026, 11, 7, 12, 0, 0);

function metric(at: number, totalMs: number, changes: Partial<InferenceMetric> = {}): InferenceMetric {
  return {
    ...newInferenceMetric(),
    model: "iris",
    version: 1,
    backend: "lambda",
    timestamp: at,
    totalUs: totalMs * 1000,
    ...changes,
  };
}

const minutes = (from: number, count: number) => ({
  from: new Date(from),
  to: new Date(from + count * MINUTE_MS),
});

describe("minuteGrid", () => {
  it("covers whole minutes from the start's minute up to, not including, the end's", () => {
    expect(minuteGrid(new Date(T0 + 30_000), new Date(T0 + 3 * MINUTE_MS + 1))).toEqual([
      T0,
      T0 + MINUTE_MS,
      T0 + 2 * MINUTE_MS,
    ]);
  });

  it("is empty when the end is in the start's minute", () => {
    expect(minuteGrid(new Date(T0), new Date(T0 + 59_999))).toEqual([]);
  });
});

describe("quantile", () => {
  it("takes the nearest rank, as CloudWatch's percentile statistics do", () => {
    const sorted = Array.from({ length: 100 }, (_, i) => i + 1);

    expect([quantile(sorted, 0.5), quantile(sorted, 0.9), quantile(sorted, 0.99)]).toEqual([50, 90, 99]);
    expect(quantile([7], 0.99)).toBe(7);
    expect(quantile([], 0.5)).toBeNull();
  });
});

describe("MinuteFigures", () => {
  it("counts each minute's requests and failures and its successes' latency percentiles", async () => {
    const figures = new MinuteFigures();
    for (let ms = 1; ms <= 10; ms++) figures.record(metric(T0 + ms * 1000, ms));
    figures.record(metric(T0 + 20_000, 500, { outcome: "failure", reason: "caller_error" }));
    figures.record(metric(T0 + 2 * MINUTE_MS, 3));

    const { from, to } = minutes(T0, 3);
    const series = await figures.series("iris", from, to);

    expect(series).toEqual({
      model: "iris",
      stepSeconds: 60,
      timestamps: [T0 / 1000, T0 / 1000 + 60, T0 / 1000 + 120],
      requests: [11, 0, 1],
      errors: [1, 0, 0],
      latencyMs: { p50: [5, null, 3], p90: [9, null, 3], p99: [10, null, 3] },
    });
  });

  it("adds up every version of the model and keeps other models apart", async () => {
    const figures = new MinuteFigures();
    figures.record(metric(T0, 1, { version: 1 }));
    figures.record(metric(T0, 2, { version: 2 }));
    figures.record(metric(T0, 3, { model: "churn" }));

    const { from, to } = minutes(T0, 1);

    expect((await figures.series("iris", from, to)).requests).toEqual([2]);
    expect((await figures.series("churn", from, to)).requests).toEqual([1]);
    expect((await figures.series("unknown", from, to)).requests).toEqual([0]);
  });

  it("never makes a series of a name the registry did not resolve", async () => {
    const figures = new MinuteFigures();
    figures.record(
      metric(T0, 1, { model: undefined, version: undefined, outcome: "failure", reason: "caller_error" }),
    );

    expect((await figures.series("undefined", new Date(T0), new Date(T0 + MINUTE_MS))).requests).toEqual([0]);
  });

  it("forgets minutes older than its retention", async () => {
    const figures = new MinuteFigures({ retentionMinutes: 2 });
    figures.record(metric(T0, 1));
    figures.record(metric(T0 + MINUTE_MS, 1));
    figures.record(metric(T0 + 2 * MINUTE_MS, 1));

    const { from, to } = minutes(T0, 3);

    expect((await figures.series("iris", from, to)).requests).toEqual([0, 1, 1]);
  });

  it("counts every request of a busy minute while its percentiles come from a bounded sample", async () => {
    const figures = new MinuteFigures({
      samplesPerMinute: 100,
      random: mulberry32(1),
    });
    for (let i = 1; i <= 10_000; i++) figures.record(metric(T0 + (i % 60_000), i % 100));

    const series = await figures.series("iris", new Date(T0), new Date(T0 + MINUTE_MS));

    expect(series.requests).toEqual([10_000]);
    // Latencies are uniform over 0..99 ms: a fair sample of 100 puts the median near 50.
    expect(series.latencyMs.p50[0]).toBeGreaterThan(30);
    expect(series.latencyMs.p50[0]).toBeLessThan(70);
  });
});
