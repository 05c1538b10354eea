import type { Logger } from "@aws-lambda-powertools/logger";
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from "aws-lambda";
import { MaasError, MethodNotAllowedError, redactInternals, retryAfterSeconds } from "#core/errors.ts";
import { withSourceMappedStack } from "./stack-map.ts";

/** API Gateway REST proxy integration (payload v1) helpers shared by the HTTP-facing functions. */

export type ProxyHandler = (event: APIGatewayProxyEvent, context: Context) => Promise<APIGatewayProxyResult>;

const JSON_HEADERS = { "content-type": "application/json" } as const;

export function json(
  statusCode: number,
  body: unknown,
  headers: Record<string, string> = {},
): APIGatewayProxyResult {
  return jsonText(statusCode, body === undefined ? "" : JSON.stringify(body), headers);
}

/** A response whose body is already JSON text. */
export function jsonText(
  statusCode: number,
  body: string,
  headers: Record<string, string> = {},
): APIGatewayProxyResult {
  return { statusCode, headers: { ...JSON_HEADERS, ...headers }, body };
}

/** A request header by its lower-case name; API Gateway's REST events keep the client's casing. */
export function header(event: APIGatewayProxyEvent, name: string): string | undefined {
  const headers = event.headers ?? {};
  const exact = headers[name];
  if (exact !== undefined) return exact;
  for (const key in headers) {
    if (key.length === name.length && key.toLowerCase() === name) return headers[key];
  }
  return undefined;
}

export function bodyText(event: APIGatewayProxyEvent): string {
  if (event.body == null) return "";
  return event.isBase64Encoded ? Buffer.from(event.body, "base64").toString("utf8") : event.body;
}

/**
 * Typed errors become their status and message, redacted of paths, source locations and stack lines;
 * anything else a bare 500. Details (a 4xx's cause: onnxruntime's full message) only in the logs.
 */
export function errorResponse(error: unknown, logger: Logger): APIGatewayProxyResult {
  if (error instanceof MaasError) {
    if (error.status >= 500)
      logger.error(error.message, { code: error.code, cause: withSourceMappedStack(error.cause) });
    else if (error.cause !== undefined)
      logger.warn(error.message, { code: error.code, cause: String(error.cause) });
    const headers: Record<string, string> =
      error instanceof MethodNotAllowedError ? { allow: error.allow.join(", ") } : {};
    const retryAfter = retryAfterSeconds(error);
    if (retryAfter !== undefined) headers["retry-after"] = String(Math.max(1, Math.ceil(retryAfter)));
    return json(error.status, { error: redactInternals(error.message) }, headers);
  }
  logger.error("unhandled error", withSourceMappedStack(error as Error));
  return json(500, { error: "internal error" });
}
