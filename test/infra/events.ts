import { createHash, randomUUID } from "node:crypto";
import type { APIGatewayProxyEvent, APIGatewayProxyEventHeaders, SQSEvent } from "aws-lambda";

const ACCOUNT = "000000000000";
const REGION = "us-east-1";
const STAGE = "prod";

export interface ProxyRequest {
  readonly method: string;
  readonly path: string;
  /** The API Gateway resource that matched, e.g. `/v2/{proxy+}`. */
  readonly resource: string;
  /** Bytes only with `base64`. */
  readonly body?: string | Uint8Array;
  readonly headers?: Record<string, string>;
  /** `apiKeyId` for the inference key, `userArn` for a SigV4 caller. */
  readonly identity?: { apiKeyId?: string; userArn?: string };
  /** Send the body base64-encoded, as API Gateway does for binary media types. */
  readonly base64?: boolean;
}

/** The event API Gateway's REST proxy integration (payload v1) sends, as deployed by InferenceApi. */
export function proxyEvent(request: ProxyRequest): APIGatewayProxyEvent {
  const headers: APIGatewayProxyEventHeaders = {
    Host: "abc123.execute-api.us-east-1.amazonaws.com",
    "User-Agent": "maas-smoke",
    "X-Amzn-Trace-Id": `Root=1-${Date.now().toString(16)}-${randomUUID().replaceAll("-", "").slice(0, 24)}`,
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    ...(request.body !== undefined ? { "Content-Type": "application/json" } : {}),
    ...request.headers,
  };
  const proxy = request.resource.endsWith("{proxy+}")
    ? { proxy: request.path.replace(/^\/(v2|admin)\//, "") }
    : null;
  const now = new Date();
  return {
    resource: request.resource,
    path: request.path,
    httpMethod: request.method,
    headers,
    multiValueHeaders: Object.fromEntries(
      Object.entries(headers).map(([name, value]) => [name, [value ?? ""]]),
    ),
    queryStringParameters: null,
    multiValueQueryStringParameters: null,
    pathParameters: proxy,
    stageVariables: null,
    body:
      request.body === undefined
        ? null
        : request.base64
          ? Buffer.from(request.body).toString("base64")
          : String(request.body),
    isBase64Encoded: request.base64 ?? false,
    requestContext: {
      accountId: ACCOUNT,
      apiId: "abc123",
      authorizer: null,
      domainName: "abc123.execute-api.us-east-1.amazonaws.com",
      domainPrefix: "abc123",
      extendedRequestId: randomUUID(),
      httpMethod: request.method,
      path: `/${STAGE}${request.path}`,
      protocol: "HTTP/1.1",
      requestId: randomUUID(),
      requestTime: now.toUTCString(),
      requestTimeEpoch: now.getTime(),
      resourceId: "res123",
      resourcePath: request.resource,
      stage: STAGE,
      identity: {
        accessKey: null,
        accountId: request.identity?.userArn ? ACCOUNT : null,
        apiKey: null,
        apiKeyId: request.identity?.apiKeyId ?? null,
        caller: null,
        clientCert: null,
        cognitoAuthenticationProvider: null,
        cognitoAuthenticationType: null,
        cognitoIdentityId: null,
        cognitoIdentityPoolId: null,
        principalOrgId: null,
        sourceIp: "203.0.113.7",
        user: null,
        userAgent: "maas-smoke",
        userArn: request.identity?.userArn ?? null,
      },
    },
  };
}

export interface UploadedObject {
  readonly bucket: string;
  readonly key: string;
  readonly size: number;
  readonly eTag: string;
}

/** The body S3 puts on the queue for an ObjectCreated event (keys URL-encoded, '+' for spaces). */
export function s3ObjectCreatedBody(object: UploadedObject): string {
  return JSON.stringify({
    Records: [
      {
        eventVersion: "2.1",
        eventSource: "aws:s3",
        awsRegion: REGION,
        eventTime: new Date().toISOString(),
        eventName: "ObjectCreated:CompleteMultipartUpload",
        userIdentity: { principalId: "AWS:AIDAEXAMPLE" },
        requestParameters: { sourceIPAddress: "203.0.113.7" },
        responseElements: {
          "x-amz-request-id": "C3D13FE58DE4C810",
          "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
        },
        s3: {
          s3SchemaVersion: "1.0",
          configurationId: "RegisterOnModelUpload",
          bucket: {
            name: object.bucket,
            ownerIdentity: { principalId: "A3NL1KOZZKExample" },
            arn: `arn:aws:s3:::${object.bucket}`,
          },
          object: {
            key: encodeURIComponent(object.key).replaceAll("%2F", "/").replaceAll("%20", "+"),
            size: object.size,
            eTag: object.eTag,
            versionId: "096fKKXTRTtl3on89fVO.nfljtsv6qko",
            sequencer: "0055AED6DCD90281E5",
          },
        },
      },
    ],
  });
}

/** What S3 sends once when a notification configuration is saved. */
export function s3TestEventBody(bucket: string): string {
  return JSON.stringify({
    Service: "Amazon S3",
    Event: "s3:TestEvent",
    Time: new Date().toISOString(),
    Bucket: bucket,
    RequestId: "5582815E1AEA5ADF",
    HostId: "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
  });
}

/** An SQS event source batch, one record per body. */
export function sqsEvent(queueName: string, bodies: readonly string[]): SQSEvent {
  return {
    Records: bodies.map((body) => ({
      messageId: randomUUID(),
      receiptHandle: `AQEB${randomUUID().replaceAll("-", "")}`,
      body,
      attributes: {
        ApproximateReceiveCount: "1",
        SentTimestamp: String(Date.now()),
        SenderId: "AIDAIENQZJOLO23YVJ4VO",
        ApproximateFirstReceiveTimestamp: String(Date.now()),
      },
      messageAttributes: {},
      md5OfBody: createHash("md5").update(body).digest("hex"),
      eventSource: "aws:sqs",
      eventSourceARN: `arn:aws:sqs:${REGION}:${ACCOUNT}:${queueName}`,
      awsRegion: REGION,
    })),
  };
}
