import { Logger } from "@aws-lambda-powertools/logger";
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from "aws-lambda";
import { MaasError, MethodNotAllowedError } from "#core/errors.ts";
import type { InferenceService } from "#core/inference-service.ts";
import { matchV2Route, type V2Route } from "#core/routes.ts";
import { loadInferenceConfig } from "./config.ts";
import { createInferenceParts, defaultClients } from "./service.ts";

export type ProxyHandler = (event: APIGatewayProxyEvent, context: Context) => Promise<APIGatewayProxyResult>;

const JSON_HEADERS = { "content-type": "application/json" } as const;

function json(
  statusCode: number,
  body: unknown,
  headers: Record<string, string> = {},
): APIGatewayProxyResult {
  return { statusCode, headers: { ...JSON_HEADERS, ...headers }, body: JSON.stringify(body) };
}

function header(event: APIGatewayProxyEvent, name: string): string | undefined {
  const headers = event.headers ?? {};
  return headers[name] ?? Object.entries(headers).find(([key]) => key.toLowerCase() === name)?.[1];
}

function bodyText(event: APIGatewayProxyEvent): string {
  if (event.body == null) return "";
  return event.isBase64Encoded ? Buffer.from(event.body, "base64").toString("utf8") : event.body;
}

/** Builds the API Gateway (REST, proxy integration) handler around an inference service. */
export function createInferenceHandler(service: InferenceService, logger: Logger): ProxyHandler {
  async function answer(route: V2Route, event: APIGatewayProxyEvent, log: Record<string, unknown>) {
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
        const { response, version, backend } = await service.infer(
          route.model,
          route.version,
          bodyText(event),
        );
        log.version = version.version;
        log.backend = backend;
        return json(200, response, {
          "x-maas-backend": backend,
          "x-maas-model-version": String(version.version),
        });
      }
    }
  }

  return async (event, context) => {
    const started = performance.now();
    logger.addContext(context);
    const log: Record<string, unknown> = { method: event.httpMethod, path: event.path };
    let result: APIGatewayProxyResult;
    try {
      const route = matchV2Route(event.httpMethod, event.path);
      if ("model" in route) {
        log.model = route.model;
        if (route.version !== undefined) log.reference = route.version;
      }
      result = await answer(route, event, log);
    } catch (error) {
      result = errorResponse(error, logger);
    }
    log.status = result.statusCode;
    log.latencyMs = Math.round((performance.now() - started) * 1000) / 1000;
    logger.info("request", log);
    return result;
  };
}

function errorResponse(error: unknown, logger: Logger): APIGatewayProxyResult {
  if (error instanceof MaasError) {
    if (error.status >= 500) logger.error(error.message, { code: error.code, cause: error.cause });
    const headers: Record<string, string> =
      error instanceof MethodNotAllowedError ? { allow: error.allow.join(", ") } : {};
    return json(error.status, { error: error.message }, headers);
  }
  // Unknown failures stay in the logs: a client never sees a stack trace or a raw SDK error.
  logger.error("unhandled error", error as Error);
  return json(500, { error: "internal error" });
}

const defaultLogger = new Logger({ serviceName: "maas-inference" });
let defaultHandler: ProxyHandler | undefined;

/** The Lambda entry point: wired from the environment on first use, then reused while warm. */
export const handler: ProxyHandler = (event, context) => {
  defaultHandler ??= createInferenceHandler(
    createInferenceParts(loadInferenceConfig(process.env), defaultClients()).service,
    defaultLogger,
  );
  return defaultHandler(event, context);
};
