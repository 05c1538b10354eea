import { Duration } from "aws-cdk-lib";
import type { RestApi } from "aws-cdk-lib/aws-apigateway";
import {
  AlarmStatusWidget,
  Dashboard,
  GraphWidget,
  type IAlarm,
  type IMetric,
  type IWidget,
  type MetricOptions,
  Stats,
  TextWidget,
} from "aws-cdk-lib/aws-cloudwatch";
import type { IFunction } from "aws-cdk-lib/aws-lambda";
import type { IQueue } from "aws-cdk-lib/aws-sqs";
import { Construct } from "constructs";
import { FAILURE_REASONS, METRIC_DIMENSIONS, METRICS, METRICS_NAMESPACE } from "#core/metrics/names.ts";
import { apiErrorRate, type MaasMetric, searchMetric } from "./maas-metrics.ts";

/** A work queue and the dead-letter queue its failures end in. */
export interface QueueWithDeadLetters {
  readonly queue: IQueue;
  readonly deadLetterQueue: IQueue;
}

/** What the dashboard reads from a SageMaker endpoint (`ModelEndpoint`). */
export interface EndpointDashboardMetrics {
  /** A metric of the endpoint's variant in `AWS/SageMaker`. */
  metric(metricName: string, props?: MetricOptions): IMetric;
  /** A metric of the endpoint's hosts in `/aws/sagemaker/Endpoints`. */
  metricHost(metricName: string, props?: MetricOptions): IMetric;
}

export interface MaasDashboardProps {
  /** The service's functions, by a short name: Lambda's invocations, errors, throttles, duration, concurrency. */
  readonly functions: Readonly<Record<string, IFunction>>;
  /** The service's queues, by a short name: SQS's depth and age of each and of its dead-letter queue. */
  readonly queues: Readonly<Record<string, QueueWithDeadLetters>>;
  /** API Gateway's requests, 4xx, 5xx and latency. */
  readonly api: RestApi;
  /**
   * The SageMaker endpoint: its invocations, errors, latency and hosts.
   * @default - no endpoint row beyond the GPU container's own figures
   */
  readonly endpoint?: EndpointDashboardMetrics;
  /**
   * Alarms whose state the first row shows.
   * @default [] (no alarm row)
   */
  readonly alarms?: readonly IAlarm[];
  /** @default - a name CloudFormation generates */
  readonly dashboardName?: string;
  /**
   * Aggregation period of every graph (a whole number of minutes).
   * @default Duration.minutes(5)
   */
  readonly period?: Duration;
  /**
   * Time range the dashboard opens on.
   * @default Duration.hours(3)
   */
  readonly defaultInterval?: Duration;
  /**
   * Percentiles of every latency, size and duration graph; Lambda's duration shows the last.
   * @default ["p50", "p90", "p99"]
   */
  readonly percentiles?: readonly string[];
}

/** The phases of one request, in the order they run (`RequestLatency` is their end to end). */
const LATENCY_PHASES: readonly MaasMetric[] = [
  METRICS.registryLatency,
  METRICS.queueLatency,
  METRICS.artifactFetchLatency,
  METRICS.sessionCreateLatency,
  METRICS.inputDecodeLatency,
  METRICS.runLatency,
  METRICS.outputEncodeLatency,
];

const GRID_WIDTH = 24;
const GRAPH_HEIGHT = 6;
const PERCENTILE = /^p(\d{1,2}(\.\d+)?|100)$/;

/**
 * The service's CloudWatch dashboard, one row per concern under a text header: alarms; requests;
 * failures by class; end-to-end latency; latency by phase; cold starts; payload sizes; the GPU endpoint
 * (container batching, and SageMaker's own figures when there is an endpoint); publishing (registrations
 * and optimizations); queues and dead-letter queues; API Gateway; Lambda per function. The service's own
 * figures (`lambdas/core/metrics/names.ts`) are SEARCH expressions over its namespace, one line per
 * model, version and backend, so that a model published after the deploy shows up by itself.
 */
export class MaasDashboard extends Construct {
  public readonly dashboard: Dashboard;

  constructor(scope: Construct, id: string, props: MaasDashboardProps) {
    super(scope, id);
    const period = props.period ?? Duration.minutes(5);
    const percentiles = props.percentiles ?? ["p50", "p90", "p99"];
    validate(period, percentiles);
    const highest = percentiles.at(-1) as string;

    this.dashboard = new Dashboard(this, "Dashboard", {
      dashboardName: props.dashboardName,
      defaultInterval: props.defaultInterval ?? Duration.hours(3),
    });
    const row = (title: string, about: string, widgets: IWidget[]) => {
      this.dashboard.addWidgets(
        new TextWidget({ markdown: `## ${title}\n${about}`, width: GRID_WIDTH, height: 2 }),
      );
      this.dashboard.addWidgets(...widgets);
    };
    const sum = (metric: MaasMetric, label?: string) =>
      searchMetric(metric, { statistic: Stats.SUM, period, label });
    const spread = (metric: MaasMetric) =>
      percentiles.map((statistic) => searchMetric(metric, { statistic, period, label: statistic }));
    const graph = (title: string, left: IMetric[], width: number, options: Partial<GraphOptions> = {}) =>
      new GraphWidget({
        title,
        left,
        right: options.right,
        width,
        height: GRAPH_HEIGHT,
        leftYAxis: options.unit ? { label: options.unit, showUnits: false, min: 0 } : { min: 0 },
        rightYAxis: options.rightUnit ? { label: options.rightUnit, showUnits: false, min: 0 } : undefined,
      });
    const ms = { unit: "ms" };
    const perModel = `One line per ${[METRIC_DIMENSIONS.model, METRIC_DIMENSIONS.version, METRIC_DIMENSIONS.backend].join(", ")} (SEARCH over \`${METRICS_NAMESPACE}\`: new models appear without a deploy).`;

    const alarms = props.alarms ?? [];
    if (alarms.length > 0) {
      row("Alarms", "Every alarm of the service; each one's description says what to do.", [
        new AlarmStatusWidget({
          title: "Alarms",
          alarms: [...alarms],
          width: GRID_WIDTH,
          height: 2 + Math.ceil(alarms.length / 4),
        }),
      ]);
    }

    row("Requests", perModel, [
      graph("Inference requests", [sum(METRICS.requests)], 8),
      graph("Successes", [sum(METRICS.successes)], 8),
      graph("Failures (every reason)", [sum(METRICS.failures)], 8),
    ]);

    row(
      "Failures by class",
      `\`${METRICS.failures.name}\` by its \`${METRIC_DIMENSIONS.reason}\`: caller_error (4xx), not_ready (503), throttled (429), timeout (504), internal (other 5xx).`,
      [
        graph(
          "Failures by class",
          FAILURE_REASONS.map((reason) =>
            searchMetric(METRICS.failures, {
              statistic: Stats.SUM,
              period,
              label: reason,
              where: { [METRIC_DIMENSIONS.reason]: reason },
            }),
          ),
          GRID_WIDTH,
        ),
      ],
    );

    const percentileWidth = Math.max(6, Math.floor(GRID_WIDTH / percentiles.length));
    row(
      "Latency",
      `End to end (\`${METRICS.latency.name}\`), from the request's arrival to its answer; ${perModel}`,
      percentiles.map((statistic) =>
        graph(
          `Request latency ${statistic}`,
          [searchMetric(METRICS.latency, { statistic, period, label: statistic })],
          percentileWidth,
          ms,
        ),
      ),
    );

    row(
      "Latency by phase",
      "Where a request's time goes: registry lookup, waiting for the model, artifact fetch and session create (cold models), input decode, run, output encode.",
      LATENCY_PHASES.map((phase) => graph(phase.name, spread(phase), 8, ms)),
    );

    row(
      "Cold starts",
      `New execution environments (\`${METRICS.coldStarts.name}\`) and the time their initialization took (\`${METRICS.initDuration.name}\`).`,
      [
        graph("Cold starts", [sum(METRICS.coldStarts)], 12),
        graph("Init duration", spread(METRICS.initDuration), 12, ms),
      ],
    );

    row("Payloads", `Request and response body sizes; ${perModel}`, [
      graph("Request bytes", spread(METRICS.requestBytes), 12, { unit: "bytes" }),
      graph("Response bytes", spread(METRICS.responseBytes), 12, { unit: "bytes" }),
    ]);

    const endpoint = props.endpoint;
    row(
      "GPU endpoint",
      endpoint
        ? "The serving container's dynamic batching, then SageMaker's invocations, latency (microseconds) and host utilization."
        : "The serving container's dynamic batching (empty: this deployment has no GPU endpoint).",
      [
        graph(
          "Batch size",
          [
            searchMetric(METRICS.batchSize, { statistic: Stats.AVERAGE, period, label: "average" }),
            searchMetric(METRICS.batchSize, { statistic: Stats.MAXIMUM, period, label: "max" }),
          ],
          12,
        ),
        graph("Batch queue delay", spread(METRICS.batchQueueDelay), 12, ms),
        ...(endpoint ? endpointGraphs(endpoint, period, percentiles) : []),
      ],
    );

    row(
      "Publishing",
      `Registrations and optimizations by \`${METRIC_DIMENSIONS.outcome}\`, and how long each took.`,
      [
        graph("Registrations", [sum(METRICS.registrations)], 6),
        graph("Registration duration", spread(METRICS.registrationDuration), 6, ms),
        graph("Optimizations", [sum(METRICS.optimizations)], 6),
        graph("Optimization duration", spread(METRICS.optimizationDuration), 6, ms),
      ],
    );

    row(
      "Asynchronous jobs",
      `Job runs by \`${METRIC_DIMENSIONS.outcome}\` (succeeded, failed, retried, dead-lettered, skipped), how long each ran, and how long it waited in the queue.`,
      [
        graph("Job runs", [sum(METRICS.jobs)], 8),
        graph("Job duration", spread(METRICS.jobDuration), 8, ms),
        graph("Job queue wait", spread(METRICS.jobQueueWait), 8, ms),
      ],
    );

    row(
      "Queues",
      "SQS's own figures: messages waiting and in flight, the age of the oldest, and what reached each dead-letter queue.",
      Object.entries(props.queues).map(([name, { queue, deadLetterQueue }]) => {
        const max = { period, statistic: Stats.MAXIMUM };
        return graph(
          `${name} queue`,
          [
            queue.metricApproximateNumberOfMessagesVisible({ ...max, label: "waiting" }),
            queue.metricApproximateNumberOfMessagesNotVisible({ ...max, label: "in flight" }),
            deadLetterQueue.metricApproximateNumberOfMessagesVisible({
              ...max,
              label: "dead letters waiting",
            }),
            deadLetterQueue.metricNumberOfMessagesReceived({
              period,
              statistic: Stats.SUM,
              label: "dead letters received",
            }),
          ],
          8,
          {
            right: [queue.metricApproximateAgeOfOldestMessage({ ...max, label: "oldest message age" })],
            rightUnit: "seconds",
          },
        );
      }),
    );

    const apiSum = { period, statistic: Stats.SUM };
    row("API Gateway", "Every route of the REST API, as API Gateway counts it.", [
      graph(
        "Requests and errors",
        [
          props.api.metricCount({ ...apiSum, label: "requests" }),
          props.api.metricClientError({ ...apiSum, label: "4xx" }),
          props.api.metricServerError({ ...apiSum, label: "5xx" }),
        ],
        8,
      ),
      graph("5xx rate", [apiErrorRate(props.api, period, "5xx (% of requests)")], 8, { unit: "%" }),
      graph(
        "Latency",
        percentiles.flatMap((statistic) => [
          props.api.metricLatency({ period, statistic, label: `${statistic} total` }),
          props.api.metricIntegrationLatency({ period, statistic, label: `${statistic} integration` }),
        ]),
        8,
        ms,
      ),
    ]);

    const functions = Object.entries(props.functions);
    const perFunction = (metricOf: (fn: IFunction, options: MetricOptions) => IMetric, statistic: string) =>
      functions.map(([name, fn]) => metricOf(fn, { period, statistic, label: name }));
    row("Lambda", "Each function, as Lambda counts it: errors are crashes and timeouts, not 4xx answers.", [
      graph(
        "Invocations",
        perFunction((fn, o) => fn.metricInvocations(o), Stats.SUM),
        8,
      ),
      graph(
        "Errors",
        perFunction((fn, o) => fn.metricErrors(o), Stats.SUM),
        8,
      ),
      graph(
        "Throttles",
        perFunction((fn, o) => fn.metricThrottles(o), Stats.SUM),
        8,
      ),
      graph(
        `Duration ${highest}`,
        perFunction((fn, o) => fn.metricDuration(o), highest),
        12,
        ms,
      ),
      graph(
        "Concurrent executions",
        perFunction((fn, o) => fn.metric("ConcurrentExecutions", o), Stats.MAXIMUM),
        12,
      ),
    ]);
  }
}

interface GraphOptions {
  readonly unit: string;
  readonly right: IMetric[];
  readonly rightUnit: string;
}

/** SageMaker's figures of the endpoint: invocations and errors, latency, host utilization. */
function endpointGraphs(
  endpoint: EndpointDashboardMetrics,
  period: Duration,
  percentiles: readonly string[],
): IWidget[] {
  const counted = (metricName: string, label: string) =>
    endpoint.metric(metricName, { period, statistic: Stats.SUM, label });
  const host = (metricName: string, label: string) =>
    endpoint.metricHost(metricName, { period, statistic: Stats.AVERAGE, label });
  const axis = (label: string) => ({ label, showUnits: false, min: 0 });
  return [
    new GraphWidget({
      title: "SageMaker invocations",
      left: [
        counted("Invocations", "invocations"),
        counted("Invocation4XXErrors", "4xx"),
        counted("Invocation5XXErrors", "5xx"),
        counted("InvocationModelErrors", "model errors"),
      ],
      width: 8,
      height: GRAPH_HEIGHT,
      leftYAxis: axis("count"),
    }),
    new GraphWidget({
      title: "SageMaker latency",
      left: percentiles.flatMap((statistic) => [
        endpoint.metric("ModelLatency", { period, statistic, label: `${statistic} model` }),
        endpoint.metric("OverheadLatency", { period, statistic, label: `${statistic} overhead` }),
      ]),
      width: 8,
      height: GRAPH_HEIGHT,
      leftYAxis: axis("µs"),
    }),
    new GraphWidget({
      title: "SageMaker hosts",
      left: [
        host("CPUUtilization", "CPU"),
        host("MemoryUtilization", "memory"),
        host("GPUUtilization", "GPU"),
        host("GPUMemoryUtilization", "GPU memory"),
        host("DiskUtilization", "disk"),
      ],
      width: 8,
      height: GRAPH_HEIGHT,
      leftYAxis: axis("%"),
    }),
  ];
}

function validate(period: Duration, percentiles: readonly string[]): void {
  const seconds = period.toSeconds();
  if (seconds < 60 || seconds % 60 !== 0) {
    throw new Error(`period must be a whole number of minutes, got ${seconds} s`);
  }
  if (percentiles.length === 0) throw new Error("percentiles must name at least one percentile");
  for (const percentile of percentiles) {
    if (!PERCENTILE.test(percentile)) {
      throw new Error(`percentiles: '${percentile}' is not a percentile statistic (p50, p99, p99.9)`);
    }
  }
}
