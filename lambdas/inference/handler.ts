import { Logger } from "@aws-lambda-powertools/logger";
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from "aws-lambda";
import * as z from "zod/mini";
import {
  bodyText,
  errorResponse,
  header,
  json,
  jsonText,
  type ProxyHandler,
} from "#aws/lambda/api-gateway.ts";
import { EmfMetricsSink } from "#aws/metrics/emf-sink.ts";
import { XRayRequestTracing } from "#aws/tracing/xray.ts";
import type { PayloadCapture } from "#core/capture/payload-capture.ts";
import { MaasError, ResponseTooLargeError } from "#core/errors.ts";
import type { AsyncInference } from "#core/jobs/async-inference.ts";
import {
  bodyBytes,
  type InferenceMetric,
  type MetricsSink,
  newInferenceMetric,
  settleOutcome,
} from "#core/metrics/inference-metric.ts";
import type { RequestTrace, RequestTracing, Span } from "#core/metrics/span.ts";
import { InferenceStatistics, STATISTICS_EXTENSION } from "#core/metrics/statistics.ts";
import type { CaptureSettings } from "#core/model.ts";
import {
  embeddingsResponse,
  modelsResponse,
  openAiError,
  parseEmbeddingsRequest,
} from "#core/tasks/openai.ts";
import {
  BINARY_CONTENT_TYPE,
  type EncodedResponse,
  encodeInferResponse,
  HEADER_LENGTH_HEADER,
  type InferBody,
  parseHeaderLength,
} from "#core/v2/binary-data.ts";
import type { InferenceService } from "#core/v2/inference-service.ts";
import { matchV2Route, type V2Route } from "#core/v2/routes.ts";
import { INFERENCE_ENV, loadInferenceConfig } from "./config.ts";
import { createInferenceParts, defaultClients } from "./service.ts";

export type { ProxyHandler };

/** When this module (and every import before it) had loaded: a cold start's initialization, as the process saw it. */
const MODULE_LOADED_MS = performance.now();

/** Builds the API Gateway (REST, proxy integration) handler around an inference service. */
export interface InferenceHandlerOptions {
  /** Origins whose browsers may read responses (`*` for any); from MAAS_CORS_ORIGINS. */
  readonly corsOrigins?: readonly string[];
  /** Asynchronous inference; without it its routes answer 501. */
  readonly jobs?: AsyncInference;
  /** Gets each synchronous infer request's metric once its response has been handed back. */
  readonly metrics?: MetricsSink;
  /**
   * Counts every infer request too, and answers the statistics extension (`.../stats`) from its
   * counters; without it those routes answer 501.
   */
  readonly statistics?: InferenceStatistics;
  /** Traces sampled infer requests (X-Ray in Lambda): their phases and AWS calls, sent after the response. */
  readonly tracing?: RequestTracing;
  /**
   * Answers `x-maas-timing: 1` on an infer request with a `server-timing` header of its phases (the
   * local stack; a deployment leaves it off, so callers cannot time the service's internals).
   */
  readonly serverTiming?: boolean;
  /** Captures sampled exchanges of the versions that opt in; without it none are. */
  readonly capture?: PayloadCapture;
}

/** RFC 7240's `Prefer: respond-async`, among other preferences. */
function prefersAsync(event: APIGatewayProxyEvent): boolean {
  return /(^|[,;\s])respond-async($|[,;\s=])/i.test(header(event, "prefer") ?? "");
}

/** The API key that called, as API Gateway identifies it: a job is readable with that key only. */
function callerKey(event: APIGatewayProxyEvent): string | undefined {
  return event.requestContext?.identity?.apiKeyId ?? undefined;
}

/** Allow-origin headers for a request's Origin, as API Gateway's proxy integration leaves CORS to us. */
function corsHeaders(event: APIGatewayProxyEvent, origins: readonly string[]): Record<string, string> {
  if (origins.length === 0) return {};
  if (origins.includes("*")) return { "access-control-allow-origin": "*" };
  const origin = header(event, "origin");
  if (origin === undefined || !origins.includes(origin)) return { vary: "Origin" };
  return { "access-control-allow-origin": origin, vary: "Origin" };
}

/**
 * The access log line's fields, all present from the start (one object shape per request; Powertools
 * leaves out the undefined ones). Never tensor contents.
 */
type AccessLog = {
  method: string;
  path: string;
  model: string | undefined;
  reference: string | undefined;
  version: number | undefined;
  backend: string | undefined;
  variant: string | undefined;
  status: number;
  latencyMs: number;
};

/** The request header that asks for `server-timing` (when the handler answers it). */
const TIMING_HEADER = "x-maas-timing";

/** `server-timing` (W3C Server Timing): the request's phases in milliseconds, in the order they run. */
export function serverTiming(metric: InferenceMetric): string {
  const phases: [string, number][] = [
    ["registry", metric.registryUs],
    ["fetch", metric.artifactFetchUs],
    ["session", metric.sessionCreateUs],
    ["decode", metric.inputDecodeUs],
    ["queue", metric.queueUs],
    ["infer", metric.inferUs],
    ["encode", metric.outputEncodeUs],
    ["total", metric.totalUs],
  ];
  return phases.map(([name, us]) => `${name};dur=${(us / 1000).toFixed(3)}`).join(", ");
}

/** A comma-separated environment list. */
function parseList(value: string | undefined): string[] {
  return (value ?? "")
    .split(",")
    .map((origin) => origin.trim())
    .filter((origin) => origin.length > 0);
}

/**
 * The infer body: JSON text, or, with `Inference-Header-Content-Length`, the bytes of a JSON header and
 * binary tensor data. API Gateway hands every body over base64-encoded (binary media types `*\/*`).
 */
function inferBody(event: APIGatewayProxyEvent): InferBody {
  const headerLength = header(event, HEADER_LENGTH_HEADER);
  if (headerLength === undefined) return bodyText(event);
  const bytes = Buffer.from(event.body ?? "", event.isBase64Encoded ? "base64" : "utf8");
  return { bytes, headerLength: parseHeaderLength(headerLength, bytes.length) };
}

/**
 * A response with binary outputs goes back base64-encoded, which API Gateway decodes: Lambda's payload
 * limit applies to the base64 text, so the limit is checked on it.
 */
function inferResult(
  encoded: EncodedResponse,
  limit: number | undefined,
  headers: Record<string, string>,
): APIGatewayProxyResult {
  if ("json" in encoded) return jsonText(200, encoded.json, headers);
  const body = encoded.bytes.toString("base64");
  if (limit !== undefined && body.length > limit)
    throw new ResponseTooLargeError(
      `the response is ${encoded.bytes.length} bytes, ${body.length} as the base64 that Lambda returns; it would`,
      limit,
    );
  return {
    statusCode: 200,
    headers: {
      ...headers,
      "content-type": BINARY_CONTENT_TYPE,
      [HEADER_LENGTH_HEADER]: String(encoded.headerLength),
    },
    body,
    isBase64Encoded: true,
  };
}

export function createInferenceHandler(
  service: InferenceService,
  logger: Logger,
  options: InferenceHandlerOptions = {},
): ProxyHandler {
  const corsOrigins = options.corsOrigins ?? [];
  const asyncJobs = (): AsyncInference => {
    if (options.jobs !== undefined) return options.jobs;
    throw new MaasError(
      501,
      "not_implemented",
      "asynchronous inference is not configured in this deployment (MAAS_JOBS_TABLE, MAAS_JOBS_QUEUE_URL, MAAS_ASYNC_BUCKET)",
    );
  };
  const statistics = options.statistics;
  const metricsSink = options.metrics;
  const tracing = options.tracing;
  const payloadCapture = options.capture;
  const serverMetadata = () => {
    const metadata = service.serverMetadata();
    return statistics === undefined
      ? metadata
      : { ...metadata, extensions: [...metadata.extensions, STATISTICS_EXTENSION] };
  };
  async function stats(route: Extract<V2Route, { kind: "stats" }>) {
    if (statistics === undefined)
      throw new MaasError(501, "not_implemented", "statistics are not kept in this deployment");
    return statistics.modelStats(await service.statisticsScope(route.model, route.version));
  }
  /** Whether the next infer request is this environment's first. */
  let coldStart = true;

  async function answer(route: V2Route, event: APIGatewayProxyEvent) {
    switch (route.kind) {
      case "server-metadata":
        return json(200, serverMetadata());
      case "live":
        return json(200, { live: true });
      case "ready":
        return json(200, await service.ready());
      case "list-models":
        return json(200, await service.listModels());
      case "model-metadata":
        return json(200, await service.modelMetadata(route.model, route.version));
      case "model-ready":
        return json(200, await service.modelReady(route.model, route.version));
      case "upload":
        return json(200, await asyncJobs().upload(bodyText(event)));
      case "job":
        return json(200, await asyncJobs().status(route.id, callerKey(event)));
      case "stats":
        return json(200, await stats(route));
      case "openai-embeddings": {
        const request = parseEmbeddingsRequest(bodyText(event));
        const { embedding, tokenCount } = await service.embed(request.model, request.version, request.texts);
        return json(200, embeddingsResponse(request.model, embedding, tokenCount, request.format));
      }
      case "openai-models":
        return json(200, modelsResponse(await service.featureExtractionModels()));
      case "infer": {
        // Synchronous infer requests go to inferNow; this one asked for a job.
        const job = await asyncJobs().submit(route.model, route.version, inferBody(event), callerKey(event));
        return json(202, job, { location: `/v2/jobs/${job.id}`, "preference-applied": "respond-async" });
      }
    }
  }

  /** A synchronous infer request, its phases measured into `metric`. */
  async function inferNow(
    route: Extract<V2Route, { kind: "infer" }>,
    event: APIGatewayProxyEvent,
    context: Context,
    log: AccessLog,
    metric: InferenceMetric,
  ): Promise<{ result: APIGatewayProxyResult; capture: CaptureSettings | undefined }> {
    const decoding = performance.now();
    const body = inferBody(event);
    const decoded = performance.now();
    metric.inputDecodeUs = (decoded - decoding) * 1000;
    metric.spans?.push({ name: "body decode", start: decoding, end: decoded });
    const { response, version, backend, variant, binaryOutputs } = await service.infer(
      route.model,
      route.version,
      body,
      // A second to spare: the 504 must reach API Gateway before Lambda's own timeout ends the call.
      Date.now() + context.getRemainingTimeInMillis() - 1_000,
      metric,
    );
    log.version = version.version;
    log.backend = backend;
    log.variant = variant;
    const encoding = performance.now();
    const result = inferResult(encodeInferResponse(response, binaryOutputs), response.maxBytes, {
      "x-maas-backend": backend,
      "x-maas-model-version": String(version.version),
      "x-maas-variant": variant,
    });
    const encoded = performance.now();
    metric.outputEncodeUs = (encoded - encoding) * 1000;
    metric.spans?.push({ name: "output encode", start: encoding, end: encoded });
    return { result, capture: payloadCapture?.sampled(version.capture) ? version.capture : undefined };
  }

  return async (event, context) => {
    const started = performance.now();
    const log: AccessLog = {
      method: event.httpMethod,
      path: event.path,
      model: undefined,
      reference: undefined,
      version: undefined,
      backend: undefined,
      variant: undefined,
      status: 0,
      latencyMs: 0,
    };
    let result: APIGatewayProxyResult;
    let metric: InferenceMetric | undefined;
    let trace: RequestTrace | undefined;
    let capture: CaptureSettings | undefined;
    try {
      const route = matchV2Route(event.httpMethod, event.path);
      if ("model" in route) {
        log.model = route.model;
        if (route.version !== undefined) log.reference = route.version;
      }
      if (route.kind === "infer" && !prefersAsync(event)) {
        metric = newInferenceMetric();
        metric.coldStart = coldStart;
        if (coldStart) metric.initUs = MODULE_LOADED_MS * 1000;
        coldStart = false;
        trace = tracing?.begin();
        metric.spans = trace?.spans;
        ({ result, capture } = await inferNow(route, event, context, log, metric));
      } else {
        result = await answer(route, event);
      }
    } catch (error) {
      logger.addContext(context);
      result = errorResponse(error, logger);
      // OpenAI's clients read their own error shape.
      if (event.path.startsWith("/v1/")) {
        const { error: message } = JSON.parse(result.body) as { error: string };
        result.body = JSON.stringify(openAiError(result.statusCode, message));
      }
    }
    if (corsOrigins.length > 0) result.headers = { ...result.headers, ...corsHeaders(event, corsOrigins) };
    const elapsedMs = performance.now() - started;
    log.status = result.statusCode;
    log.latencyMs = Math.round(elapsedMs * 1000) / 1000;
    if (metric !== undefined) {
      metric.totalUs = elapsedMs * 1000;
      if (options.serverTiming && header(event, TIMING_HEADER) === "1")
        result.headers = { ...result.headers, "server-timing": serverTiming(metric) };
    }
    if (trace !== undefined) tracing?.end(trace);
    // The access log line and the metric are written once the response is on its way, not before it:
    // Lambda's runtime posts the response and then queues its next poll behind this, so they are always
    // written before the environment can freeze. Formatting the line was a tenth of a warm request.
    setImmediate(() => {
      logger.addContext(context);
      logger.info("request", log);
      if (metric !== undefined) record(metric, event, result);
      if (trace !== undefined) sendTrace(trace, started, started + elapsedMs, metric, result.statusCode);
      if (capture !== undefined) offerCapture(capture, event, result, log);
    });
    return result;
  };

  function sendTrace(
    trace: RequestTrace,
    start: number,
    end: number,
    metric: InferenceMetric | undefined,
    status: number,
  ): void {
    try {
      tracing?.send(
        trace,
        { name: "infer", start, end },
        {
          status,
          ...(metric?.model === undefined ? {} : { model: metric.model }),
          ...(metric?.version === undefined ? {} : { version: metric.version }),
          ...(metric?.backend === undefined ? {} : { backend: metric.backend }),
        },
      );
    } catch (error) {
      logger.warn("trace not sent", { error: String(error) });
    }
  }

  /** A sampled exchange to its version's capture: JSON as text, binary tensor bodies as base64. */
  function offerCapture(
    settings: CaptureSettings,
    event: APIGatewayProxyEvent,
    result: APIGatewayProxyResult,
    log: AccessLog,
  ): void {
    if (payloadCapture === undefined || log.model === undefined || log.version === undefined) return;
    try {
      const requestHeaderLength = header(event, HEADER_LENGTH_HEADER);
      const responseHeaderLength = result.headers?.[HEADER_LENGTH_HEADER];
      const offered = payloadCapture.offer({
        model: log.model,
        version: log.version,
        backend: log.backend ?? "",
        variant: log.variant ?? "",
        settings,
        request:
          requestHeaderLength === undefined
            ? { body: bodyText(event), base64: false, headerLength: undefined }
            : {
                body: event.isBase64Encoded
                  ? (event.body ?? "")
                  : Buffer.from(event.body ?? "").toString("base64"),
                base64: true,
                headerLength: Number(requestHeaderLength),
              },
        response: {
          body: result.body,
          base64: result.isBase64Encoded === true,
          headerLength: responseHeaderLength === undefined ? undefined : Number(responseHeaderLength),
        },
        time: Date.now(),
      });
      if (!offered)
        logger.warn("capture buffer full: exchange dropped", { model: log.model, version: log.version });
    } catch (error) {
      logger.warn("capture failed", { error: String(error) });
    }
  }

  /** Completes the metric from the request and its response, then hands it to the sinks. */
  function record(metric: InferenceMetric, event: APIGatewayProxyEvent, result: APIGatewayProxyResult): void {
    settleOutcome(metric, result.statusCode);
    metric.requestBytes = bodyBytes(event.body, event.isBase64Encoded);
    metric.responseBytes = bodyBytes(result.body, result.isBase64Encoded);
    metric.timestamp = Date.now();
    try {
      statistics?.record(metric);
      metricsSink?.record(metric);
    } catch (error) {
      // A metric writer's fault must not become the function's: the response has gone already.
      logger.warn("metric not recorded", { error: String(error) });
    }
  }
}

const defaultLogger = new Logger({ serviceName: "maas-inference" });
let defaultHandler: ProxyHandler | undefined;

function createDefaultHandler(): { handler: ProxyHandler; service: InferenceService; preload: string[] } {
  // zod compiles each object schema on its first parse, which only pays off over many parses; the
  // function parses its configuration once and registry records now and then (requests take a
  // hand-checked fast path). About 10 ms of a cold start.
  z.config({ jitless: true });
  const config = loadInferenceConfig(process.env);
  const tracing = lambdaTracing(process.env);
  const onCall = tracing === undefined ? {} : { onCall: (span: Span) => tracing.recordCall(span) };
  const clients = defaultClients({ s3: onCall, dynamo: onCall });
  const { service, jobs, capture } = createInferenceParts(config, clients, defaultLogger);
  const handler = createInferenceHandler(service, defaultLogger, {
    corsOrigins: parseList(config.MAAS_CORS_ORIGINS),
    ...(jobs === undefined ? {} : { jobs }),
    // CloudWatch through EMF; the statistics extension answers for this environment's requests only.
    metrics: new EmfMetricsSink({ functionName: process.env.AWS_LAMBDA_FUNCTION_NAME }),
    statistics: new InferenceStatistics(),
    ...(tracing === undefined ? {} : { tracing }),
    ...(capture === undefined ? {} : { capture }),
  });
  return { handler, service, preload: parseList(config.MAAS_PRELOAD_MODELS) };
}

/**
 * X-Ray, when the function has active tracing (Lambda then sets AWS_XRAY_DAEMON_ADDRESS) and
 * Powertools' POWERTOOLS_TRACE_ENABLED does not turn it off.
 */
function lambdaTracing(env: Record<string, string | undefined>): XRayRequestTracing | undefined {
  if (env.AWS_XRAY_DAEMON_ADDRESS === undefined || env.POWERTOOLS_TRACE_ENABLED === "false") return undefined;
  return new XRayRequestTracing({ daemonAddress: env.AWS_XRAY_DAEMON_ADDRESS, env });
}

/** The Lambda entry point: wired from the environment on first use, then reused while warm. */
export const handler: ProxyHandler = (event, context) => {
  defaultHandler ??= createDefaultHandler().handler;
  return defaultHandler(event, context);
};

// Provisioned environments initialize before traffic: load the named models now, so no request waits.
if (
  process.env.AWS_LAMBDA_INITIALIZATION_TYPE === "provisioned-concurrency" &&
  process.env[INFERENCE_ENV.names.preloadModels]
) {
  const created = createDefaultHandler();
  defaultHandler = created.handler;
  for (const outcome of await created.service.preload(created.preload)) {
    if (outcome.error === undefined) defaultLogger.info("preloaded", outcome);
    else defaultLogger.warn("preload failed", outcome);
  }
}
