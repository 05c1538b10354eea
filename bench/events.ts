import type { APIGatewayProxyEvent, APIGatewayProxyResult } from "aws-lambda";
import * as z from "zod/mini";
import type { ProxyHandler } from "#lambdas/inference/handler.ts";
import { lambdaContext } from "../local/gateway.ts";

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

const outputSchema = z.object({
  name: z.string(),
  shape: z.array(z.number()),
  data: z.array(z.union([z.number(), z.string()])),
});
const inferResponseSchema = z.object({ outputs: z.array(outputSchema) });

/** One output of a handler's 200 infer response, by name. */
export function responseOutput(result: APIGatewayProxyResult, name: string): z.infer<typeof outputSchema> {
  const { outputs } = inferResponseSchema.parse(JSON.parse(result.body));
  const found = outputs.find((candidate) => candidate.name === name);
  if (found === undefined) throw new Error(`the response has no output '${name}'`);
  return found;
}

/** One call of the handler as Lambda makes it, timed without building its context; anything but a 200 throws. */
async function callTimed(
  handler: ProxyHandler,
  event: APIGatewayProxyEvent,
): Promise<{ result: APIGatewayProxyResult; ms: number }> {
  // Lambda hands the handler its context: building it is not the handler's time.
  const context = lambdaContext("bench", Date.now());
  const start = performance.now();
  const result = await handler(event, context);
  const ms = performance.now() - start;
  // The handler writes its log line after answering: let it finish outside the timing.
  await new Promise((logged) => setImmediate(logged));
  if (result.statusCode !== 200) throw new Error(`handler answered ${result.statusCode}: ${result.body}`);
  return { result, ms };
}

/** Calls the handler as Lambda would; anything but a 200 throws. */
export async function callHandler(
  handler: ProxyHandler,
  event: APIGatewayProxyEvent,
): Promise<APIGatewayProxyResult> {
  return (await callTimed(handler, event)).result;
}

/** `iterations` timed calls of the handler, in ms; anything but a 200 throws. */
export async function timeHandler(
  handler: ProxyHandler,
  event: APIGatewayProxyEvent,
  iterations: number,
): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < iterations; i++) times.push((await callTimed(handler, event)).ms);
  return times;
}
