import type { InferenceMetric, MetricsSink } from "#core/metrics/inference-metric.ts";
import { METRIC_DIMENSIONS, METRICS } from "#core/metrics/names.ts";
import { type EmfOutput, EmfShape, stdoutEmf } from "./emf.ts";

export interface EmfMetricsSinkOptions {
  /** The `function_name` dimension of the cold start metrics; unset, they have none. */
  readonly functionName?: string | undefined;
  /** @default stdout */
  readonly output?: EmfOutput;
  /**
   * Lambda's `AWS_LAMBDA_INITIALIZATION_TYPE`: a provisioned environment's start is not a cold start
   * a caller waited for, so it is not counted (as Powertools counts them).
   * @default process.env.AWS_LAMBDA_INITIALIZATION_TYPE
   */
  readonly initializationType?: string | undefined;
}

const { model, version, backend, reason } = METRIC_DIMENSIONS;
const REQUEST = [model, version, backend];

/** A success's line: the request's figures by model, version and backend, its latency by backend too. */
function successDirectives(fetched: boolean, created: boolean) {
  return [
    {
      dimensions: REQUEST,
      metrics: [
        METRICS.requests,
        METRICS.requestBytes,
        METRICS.responseBytes,
        METRICS.successes,
        METRICS.latency,
        METRICS.registryLatency,
        METRICS.queueLatency,
        METRICS.inputDecodeLatency,
        METRICS.runLatency,
        METRICS.outputEncodeLatency,
        // Only the requests that loaded the model: a zero here would drag every percentile down.
        ...(fetched ? [METRICS.artifactFetchLatency] : []),
        ...(created ? [METRICS.sessionCreateLatency] : []),
      ],
    },
    // What the latency alarm watches: an alarm cannot watch a SEARCH over models.
    { dimensions: [backend], metrics: [METRICS.latency] },
  ];
}
/** The four success shapes, by whether the request fetched the artifact and created the session. */
const SUCCESS_SHAPES = [false, true].flatMap((fetched) =>
  [false, true].map((created) => new EmfShape(successDirectives(fetched, created))),
);

/** A failure's line: the request by model, version and backend, its count under its reason as well. */
const failureShape = new EmfShape([
  { dimensions: REQUEST, metrics: [METRICS.requests, METRICS.requestBytes, METRICS.responseBytes] },
  { dimensions: [...REQUEST, reason], metrics: [METRICS.failures] },
]);
/** A request whose model version was never resolved: its reason alone. */
const unresolvedShape = new EmfShape([{ dimensions: [reason], metrics: [METRICS.failures] }]);

/**
 * Infer requests as CloudWatch metrics, written as one EMF log line per request (emf.ts), after the
 * response: a success's figures by model, version and backend and its latency by backend alone, or a
 * failure's count by model, version, backend and reason. A request whose model version was never
 * resolved counts under reason alone. An environment's first request adds a line for its cold start and
 * init duration by function name. No per-caller dimension: every model × version × backend (× reason)
 * is one custom metric, billed monthly.
 */
export class EmfMetricsSink implements MetricsSink {
  readonly #output: EmfOutput;
  readonly #coldStart: EmfShape;
  readonly #init: EmfShape;
  readonly #functionName: string | undefined;
  #coldStartCounted: boolean;

  constructor(options: EmfMetricsSinkOptions = {}) {
    this.#output = options.output ?? stdoutEmf;
    this.#functionName = options.functionName;
    const initialization = options.initializationType ?? process.env.AWS_LAMBDA_INITIALIZATION_TYPE;
    this.#coldStartCounted = initialization === "provisioned-concurrency";
    const dimensions = this.#functionName === undefined ? [] : ["function_name"];
    this.#coldStart = new EmfShape([{ dimensions, metrics: [METRICS.coldStarts] }]);
    this.#init = new EmfShape([{ dimensions, metrics: [METRICS.initDuration] }]);
  }

  record(metric: Readonly<InferenceMetric>): void {
    if (metric.coldStart) this.#recordColdStart(metric.initUs);
    if (metric.model === undefined || metric.version === undefined || metric.backend === undefined) {
      if (metric.reason === undefined) return;
      this.#output(unresolvedShape.line({ [reason]: metric.reason, [METRICS.failures.name]: 1 }));
      return;
    }
    if (metric.outcome !== "success") {
      this.#output(
        failureShape.line({
          [model]: metric.model,
          [version]: String(metric.version),
          [backend]: metric.backend,
          [reason]: metric.reason ?? "internal",
          [METRICS.requests.name]: 1,
          [METRICS.requestBytes.name]: metric.requestBytes,
          [METRICS.responseBytes.name]: metric.responseBytes,
          [METRICS.failures.name]: 1,
        }),
      );
      return;
    }
    const fetched = metric.artifactFetchUs > 0;
    const created = metric.sessionCreateUs > 0;
    const shape = SUCCESS_SHAPES[(fetched ? 2 : 0) + (created ? 1 : 0)] as EmfShape;
    this.#output(
      shape.line({
        [model]: metric.model,
        [version]: String(metric.version),
        [backend]: metric.backend,
        [METRICS.requests.name]: 1,
        [METRICS.requestBytes.name]: metric.requestBytes,
        [METRICS.responseBytes.name]: metric.responseBytes,
        [METRICS.successes.name]: 1,
        [METRICS.latency.name]: metric.totalUs / 1000,
        [METRICS.registryLatency.name]: metric.registryUs / 1000,
        [METRICS.queueLatency.name]: metric.queueUs / 1000,
        [METRICS.inputDecodeLatency.name]: metric.inputDecodeUs / 1000,
        [METRICS.runLatency.name]: metric.inferUs / 1000,
        [METRICS.outputEncodeLatency.name]: metric.outputEncodeUs / 1000,
        ...(fetched ? { [METRICS.artifactFetchLatency.name]: metric.artifactFetchUs / 1000 } : {}),
        ...(created ? { [METRICS.sessionCreateLatency.name]: metric.sessionCreateUs / 1000 } : {}),
      }),
    );
  }

  /** The environment's cold start, once, and how long its initialization took, on lines of their own. */
  #recordColdStart(initUs: number): void {
    const functionName: Record<string, string> =
      this.#functionName === undefined ? {} : { function_name: this.#functionName };
    if (!this.#coldStartCounted) {
      this.#coldStartCounted = true;
      this.#output(this.#coldStart.line({ ...functionName, [METRICS.coldStarts.name]: 1 }));
    }
    if (initUs > 0)
      this.#output(this.#init.line({ ...functionName, [METRICS.initDuration.name]: initUs / 1000 }));
  }
}
