import type { APIGatewayProxyEvent } from "aws-lambda";

/** An API Gateway (REST, proxy) infer request with a JSON body, as the benches hand it to the handler. */
export function inferEvent(model: string, body: unknown): APIGatewayProxyEvent {
  return {
    httpMethod: "POST",
    path: `/v2/models/${model}/infer`,
    resource: "/{proxy+}",
    headers: { "content-type": "application/json" },
    multiValueHeaders: {},
    queryStringParameters: null,
    multiValueQueryStringParameters: null,
    pathParameters: { proxy: `v2/models/${model}/infer` },
    stageVariables: null,
    isBase64Encoded: false,
    body: JSON.stringify(body),
    requestContext: {} as APIGatewayProxyEvent["requestContext"],
  };
}
