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
import { MaasError } from "#core/errors.ts";
import type { InferenceService } from "#core/v2/inference-service.ts";
import { matchV2Route, type V2Route } from "#core/v2/routes.ts";
import { inferResponseJson } from "#core/v2/tensor-codec.ts";
import { INFERENCE_ENV, loadInferenceConfig } from "./config.ts";
import { createInferenceParts, defaultClients } from "./service.ts";

export type { ProxyHandler };

/** Builds the API Gateway (REST, proxy integration) handler around an inference service. */
export interface InferenceHandlerOptions {
  /** Origins whose browsers may read responses (`*` for any); from MAAS_CORS_ORIGINS. */
  readonly corsOrigins?: readonly string[];
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

/** A comma-separated environment list. */
function parseList(value: string | undefined): string[] {
  return (value ?? "")
    .split(",")
    .map((origin) => origin.trim())
    .filter((origin) => origin.length > 0);
}

export function createInferenceHandler(
  service: InferenceService,
  logger: Logger,
  options: InferenceHandlerOptions = {},
): ProxyHandler {
  const corsOrigins = options.corsOrigins ?? [];
  async function answer(route: V2Route, event: APIGatewayProxyEvent, context: Context, log: AccessLog) {
    switch (route.kind) {
      case "server-metadata":
        return json(200, service.serverMetadata());
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
      case "infer": {
        if (header(event, "inference-header-content-length") !== undefined) {
          throw new MaasError(
            415,
            "unsupported_media_type",
            "the binary tensor extension is not supported; send JSON",
          );
        }
        const { response, version, backend, variant } = await service.infer(
          route.model,
          route.version,
          bodyText(event),
          // A second to spare: the 504 must reach API Gateway before Lambda's own timeout ends the call.
          Date.now() + context.getRemainingTimeInMillis() - 1_000,
        );
        log.version = version.version;
        log.backend = backend;
        log.variant = variant;
        return jsonText(200, inferResponseJson(response), {
          "x-maas-backend": backend,
          "x-maas-model-version": String(version.version),
          "x-maas-variant": variant,
        });
      }
    }
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
    try {
      const route = matchV2Route(event.httpMethod, event.path);
      if ("model" in route) {
        log.model = route.model;
        if (route.version !== undefined) log.reference = route.version;
      }
      result = await answer(route, event, context, log);
    } catch (error) {
      logger.addContext(context);
      result = errorResponse(error, logger);
    }
    if (corsOrigins.length > 0) result.headers = { ...result.headers, ...corsHeaders(event, corsOrigins) };
    log.status = result.statusCode;
    log.latencyMs = Math.round((performance.now() - started) * 1000) / 1000;
    // The access log line is written once the response is on its way, not before it: Lambda's runtime
    // posts the response and then queues its next poll behind this, so the line is always written
    // before the environment can freeze. Formatting it was a tenth of a warm request.
    setImmediate(() => {
      logger.addContext(context);
      logger.info("request", log);
    });
    return result;
  };
}

const defaultLogger = new Logger({ serviceName: "maas-inference" });
let defaultHandler: ProxyHandler | undefined;

function createDefaultHandler(): { handler: ProxyHandler; service: InferenceService; preload: string[] } {
  // zod compiles each object schema on its first parse, which only pays off over many parses; the
  // function parses its configuration once and registry records now and then (requests take a
  // hand-checked fast path). About 10 ms of a cold start.
  z.config({ jitless: true });
  const config = loadInferenceConfig(process.env);
  const { service } = createInferenceParts(config, defaultClients(), defaultLogger);
  const handler = createInferenceHandler(service, defaultLogger, {
    corsOrigins: parseList(config.MAAS_CORS_ORIGINS),
  });
  return { handler, service, preload: parseList(config.MAAS_PRELOAD_MODELS) };
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
