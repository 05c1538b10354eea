/** A model's last hour (or more) per minute: requests, errors and latency percentiles, as uPlot charts. */
import { useEffect, useRef, useState } from "preact/hooks";
import uPlot from "uplot";
import type { Api } from "../api.ts";
import { ErrorMessage, Loading, useResource } from "../components.tsx";
import type { Figures } from "../schemas.ts";
import { formatMs } from "../tensors.ts";

const WINDOWS = [15, 60, 180] as const;
const CHART_HEIGHT = 200;

interface SeriesSpec {
  readonly label: string;
  readonly stroke: string;
  readonly values: readonly (number | null)[];
  /** Drawn as points too: a minute with a value between two without has no line to draw. */
  readonly points?: boolean;
}

function Chart({
  title,
  unit,
  timestamps,
  series,
}: {
  title: string;
  unit: string;
  timestamps: readonly number[];
  series: readonly SeriesSpec[];
}) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const data = [
    timestamps as number[],
    ...series.map((s) => s.values as (number | null)[]),
  ] as uPlot.AlignedData;
  // Built once per set of series; the data flows in through setData below.
  useEffect(() => {
    const element = box.current;
    if (element === null) return;
    const chart = new uPlot(
      {
        width: Math.max(240, element.clientWidth),
        height: CHART_HEIGHT,
        scales: { x: { time: true }, y: { range: (_u, min, max) => [Math.min(0, min), Math.max(1, max)] } },
        axes: [{}, { label: unit, size: 56 }],
        series: [
          {},
          ...series.map((s) => ({
            label: s.label,
            stroke: s.stroke,
            width: 2,
            spanGaps: false,
            points: { show: s.points ?? false, size: 5, fill: s.stroke },
          })),
        ],
      },
      data,
      element,
    );
    plot.current = chart;
    const observer = new ResizeObserver(() =>
      chart.setSize({ width: Math.max(240, element.clientWidth), height: CHART_HEIGHT }),
    );
    observer.observe(element);
    return () => {
      observer.disconnect();
      chart.destroy();
      plot.current = null;
    };
  }, [series.length, unit]);
  useEffect(() => {
    plot.current?.setData(data);
  });
  return (
    <figure class="chart">
      <figcaption>{title}</figcaption>
      <div ref={box} role="img" aria-label={`${title}, per minute; the figures are summarised above`} />
    </figure>
  );
}

function total(values: readonly number[]): number {
  return values.reduce((sum, value) => sum + value, 0);
}

function lastValue(values: readonly (number | null)[]): number | null {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i]!;
  return null;
}

function Summary({ figures, minutes }: { figures: Figures; minutes: number }) {
  const requests = total(figures.requests);
  const errors = total(figures.errors);
  const p50 = lastValue(figures.latencyMs.p50);
  const p99 = lastValue(figures.latencyMs.p99);
  return (
    <dl class="facts inline-facts" aria-label="Summary">
      <dt>Requests ({minutes} min)</dt>
      <dd>{requests}</dd>
      <dt>Errors</dt>
      <dd>
        {errors}
        {requests > 0 ? ` (${((errors / requests) * 100).toFixed(1)}%)` : ""}
      </dd>
      <dt>Latest p50</dt>
      <dd>{p50 === null ? "–" : formatMs(p50)}</dd>
      <dt>Latest p99</dt>
      <dd>{p99 === null ? "–" : formatMs(p99)}</dd>
    </dl>
  );
}

export function FiguresPanel({ api, model }: { api: Api; model: string }) {
  const [minutes, setMinutes] = useState<number>(60);
  const figures = useResource(() => api.figures(model, minutes), `${model}/${minutes}`, 15_000);
  const data = figures.data;
  return (
    <section class="panel" aria-labelledby="figures-title">
      <div class="title-row">
        <h2 id="figures-title">Figures</h2>
        <label class="inline">
          Window
          <select value={minutes} onChange={(event) => setMinutes(Number(event.currentTarget.value))}>
            {WINDOWS.map((window) => (
              <option key={window} value={window}>
                last {window} minutes
              </option>
            ))}
          </select>
        </label>
      </div>
      <p class="muted">All versions of {model}, per minute; refreshed every 15 s.</p>
      <ErrorMessage error={figures.error} title="The figures could not be read" />
      {data === undefined && figures.loading && <Loading what="figures" />}
      {data !== undefined && (
        <>
          <Summary figures={data} minutes={minutes} />
          <div class="charts">
            <Chart
              title="Requests per minute"
              unit="requests"
              timestamps={data.timestamps}
              series={[
                { label: "requests", stroke: "#2563eb", values: data.requests },
                { label: "errors", stroke: "#dc2626", values: data.errors },
              ]}
            />
            <Chart
              title="Latency of successful requests"
              unit="ms"
              timestamps={data.timestamps}
              series={[
                { label: "p50", stroke: "#059669", values: data.latencyMs.p50, points: true },
                { label: "p90", stroke: "#d97706", values: data.latencyMs.p90, points: true },
                { label: "p99", stroke: "#7c3aed", values: data.latencyMs.p99, points: true },
              ]}
            />
          </div>
        </>
      )}
    </section>
  );
}
