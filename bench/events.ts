import type { APIGatewayProxyEvent } from "aws-lambda";

/** An API Gateway (REST, proxy) infer request, as the benches hand it to the handler. */
function proxyInferEvent(
  model: string,
  body: string,
  headers: Record<string, string>,
  isBase64Encoded: boolean,
): APIGatewayProxyEvent {
  return {
    httpMethod: "POST",
    path: `/v2/models/${model}/infer`,
    resource: "/{proxy+}",
    headers,
    multiValueHeaders: {},
    queryStringParameters: null,
    multiValueQueryStringParameters: null,
    pathParameters: { proxy: `v2/models/${model}/infer` },
    stageVariables: null,
    isBase64Encoded,
    body,
    requestContext: {} as APIGatewayProxyEvent["requestContext"],
  };
}

/** An infer request with a JSON body. */
export function inferEvent(model: string, body: unknown): APIGatewayProxyEvent {
  return proxyInferEvent(model, JSON.stringify(body), { "content-type": "application/json" }, false);
}

/** An infer request whose body arrives as API Gateway sends it with binary media types `*\/*`: base64. */
export function bytesInferEvent(
  model: string,
  body: Uint8Array,
  headers: Record<string, string>,
): APIGatewayProxyEvent {
  const base64 = Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("base64");
  return proxyInferEvent(model, base64, headers, true);
}
