import { Logger } from "@aws-lambda-powertools/logger";
import type { APIGatewayProxyEvent, APIGatewayProxyResult } from "aws-lambda";
import { bodyText, errorResponse, header, json, type ProxyHandler } from "#aws/api-gateway.ts";
import { MaasError } from "#core/errors.ts";
import type { InferenceService } from "#core/inference-service.ts";
import { matchV2Route, type V2Route } from "#core/routes.ts";
import { loadInferenceConfig } from "./config.ts";
import { createInferenceParts, defaultClients } from "./service.ts";

export type { ProxyHandler };

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
