import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { text } from "node:stream/consumers";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AwsHttpClient, AwsHttpError, type AwsHttpOptions, type AwsService } from "#aws/http/aws-http.ts";
import { S3HttpArtifactSource, s3ObjectUrl } from "#aws/s3/http-source.ts";
import { closeServer, listenLocally } from "../support/local-http.ts";
import { rejectionOf } from "../support/rejection.ts";

type Reply = (request: IncomingMessage, response: ServerResponse) => void;

const CREDENTIALS = { accessKeyId: "AKIDTEST", secretAccessKey: "secret" };
const ENV = {
  AWS_REGION: "eu-central-1",
  AWS_ACCESS_KEY_ID: "AKIDENV",
  AWS_SECRET_ACCESS_KEY: "env-secret",
};

let server: Server;
let endpoint: string;
/** Answers for the next requests, in order; the last one repeats. */
let replies: Reply[] = [];
let received: { method: string; url: string; headers: IncomingMessage["headers"]; body: string }[] = [];

beforeAll(async () => {
  ({ server, endpoint } = await listenLocally(async (request, response) => {
    const body = await text(request);
    received.push({ method: request.method ?? "", url: request.url ?? "", headers: request.headers, body });
    const reply = replies.length > 1 ? replies.shift() : replies[0];
    reply?.(request, response);
  }));
});

afterEach(() => {
  replies = [];
  received = [];
});

afterAll(() => closeServer(server));

const json =
  (status: number, body: unknown): Reply =>
  (_, response) => {
    response.writeHead(status, { "content-type": "application/x-amz-json-1.0" }).end(JSON.stringify(body));
  };
const dynamoError = (status: number, code: string, message = `${code} happened`) =>
  json(status, { __type: `com.amazonaws.dynamodb.v20120810#${code}`, message });
const s3Error =
  (status: number, code: string): Reply =>
  (_, response) => {
    response
      .writeHead(status, { "content-type": "application/xml" })
      .end(
        `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${code} here</Message></Error>`,
      );
  };
const hangUp: Reply = (request) => request.socket.destroy();
const never: Reply = () => {};

function client(service: AwsService, options: AwsHttpOptions = {}, sleeps: number[] = []) {
  return new AwsHttpClient(service, {
    region: "us-east-1",
    credentials: CREDENTIALS,
    endpoint,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    random: () => 1,
    ...options,
  });
}

const getItem = (dynamo: AwsHttpClient) =>
  dynamo.json({
    operation: "GetItem",
    method: "POST",
    url: dynamo.endpoint,
    headers: { "content-type": "application/x-amz-json-1.0", "x-amz-target": "DynamoDB_20120810.GetItem" },
    body: '{"TableName":"t"}',
  });

const getObject = (s3: AwsHttpClient, key = "models/a b/model.onnx") =>
  s3.stream({ operation: "GetObject", method: "GET", url: s3ObjectUrl(s3, "maas-models", key) });

const failure = (promise: Promise<unknown>) => rejectionOf(promise, AwsHttpError);

describe("AwsHttpClient requests", () => {
  it("sends a signed DynamoDB request and parses its JSON answer", async () => {
    replies = [json(200, { Item: { pk: { S: "iris" } } })];

    const response = await getItem(client("dynamodb"));

    expect(response).toMatchObject({ status: 200, body: { Item: { pk: { S: "iris" } } } });
    const [sent] = received;
    expect(sent?.method).toBe("POST");
    expect(sent?.body).toBe('{"TableName":"t"}');
    expect(sent?.headers["x-amz-target"]).toBe("DynamoDB_20120810.GetItem");
    expect(sent?.headers["content-length"]).toBe("17");
    expect(sent?.headers.authorization).toMatch(
      /^AWS4-HMAC-SHA256 Credential=AKIDTEST\/\d{8}\/us-east-1\/dynamodb\/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=[0-9a-f]{64}$/,
    );
  });

  it("streams an S3 object from a path-style URL with each key segment encoded once", async () => {
    replies = [(_, response) => response.writeHead(200).end("onnx-bytes")];

    const response = await getObject(client("s3"));

    expect(await text(response.body)).toBe("onnx-bytes");
    expect(received[0]?.url).toBe("/maas-models/models/a%20b/model.onnx");
    expect(received[0]?.headers["x-amz-content-sha256"]).toBe("UNSIGNED-PAYLOAD");
  });
});

describe("AwsHttpClient onSent", () => {
  it("is called once the request is written, while the service has not answered, through the S3 source", async () => {
    // The server answers only after onSent has run: without the call, the request would time out.
    let calls = 0;
    let sent!: () => void;
    const wasSent = new Promise<void>((resolve) => {
      sent = resolve;
    });
    replies = [(_, response) => void wasSent.then(() => response.writeHead(200).end("onnx-bytes"))];
    const source = new S3HttpArtifactSource(client("s3", { timeoutMs: 2_000 }));

    const body = await source.open(
      { bucket: "maas-models", key: "m/1/model.onnx", sha256: "", bytes: 10 },
      () => {
        calls += 1;
        sent();
      },
    );

    expect(await text(body)).toBe("onnx-bytes");
    expect(calls).toBe(1);
  });
});

describe("AwsHttpClient retries", () => {
  it("retries a 500 and returns the 200 that follows, after a full-jitter wait", async () => {
    const sleeps: number[] = [];
    replies = [dynamoError(500, "InternalServerError"), json(200, {})];

    const response = await getItem(client("dynamodb", {}, sleeps));

    expect(response.status).toBe(200);
    expect(received).toHaveLength(2);
    expect(sleeps).toEqual([100]);
  });

  it("does not retry a 400 that is a caller's mistake, and carries its code and message", async () => {
    replies = [dynamoError(400, "ValidationException", "One or more parameter values were invalid")];

    const error = await failure(getItem(client("dynamodb")));

    expect(received).toHaveLength(1);
    expect(error).toMatchObject({ status: 400, code: "ValidationException", retryable: false });
    expect(error.message).toContain("One or more parameter values were invalid");
  });

  it.each(["ThrottlingException", "ProvisionedThroughputExceededException", "RequestLimitExceeded"])(
    "retries DynamoDB's %s (a 400) up to 3 attempts, backing off exponentially",
    async (code) => {
      const sleeps: number[] = [];
      replies = [dynamoError(400, code)];

      const error = await failure(getItem(client("dynamodb", {}, sleeps)));

      expect(received).toHaveLength(3);
      expect(sleeps).toEqual([100, 200]);
      expect(error).toMatchObject({ status: 400, code, retryable: true });
      expect(error.message).toMatch(/after 3 attempts/);
    },
  );

  it("retries S3's SlowDown and a 429, then succeeds", async () => {
    replies = [
      s3Error(503, "SlowDown"),
      s3Error(429, "TooManyRequests"),
      (_, r) => r.writeHead(200).end("ok"),
    ];

    const response = await getObject(client("s3"));

    expect(await text(response.body)).toBe("ok");
    expect(received).toHaveLength(3);
  });

  it("caps the backoff", async () => {
    const sleeps: number[] = [];
    replies = [dynamoError(503, "ServiceUnavailable")];

    await failure(
      getItem(client("dynamodb", { maxAttempts: 4, backoff: { baseMs: 100, capMs: 250 } }, sleeps)),
    );

    expect(sleeps).toEqual([100, 200, 250]);
  });

  it("retries a connection reset by the server", async () => {
    replies = [hangUp, json(200, { Items: [] })];

    const response = await getItem(client("dynamodb"));

    expect(response.body).toEqual({ Items: [] });
    expect(received).toHaveLength(2);
  });

  it("gives up on a server that does not answer, with a timeout error after every attempt timed out", async () => {
    replies = [never];
    const started = performance.now();

    const error = await failure(getItem(client("dynamodb", { timeoutMs: 100 })));

    expect(received).toHaveLength(3);
    expect(error).toMatchObject({ status: undefined, code: "TimeoutError", retryable: true });
    expect(error.message).toMatch(/no response within 100 ms \(after 3 attempts\)/);
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it("fails a body that stalls after the headers instead of hanging its reader", async () => {
    replies = [(_, response) => response.writeHead(200).write("first bytes")];
    const response = await getObject(client("s3", { timeoutMs: 100 }));

    const error = await failure(text(response.body));

    expect(error).toMatchObject({ code: "TimeoutError" });
    expect(error.message).toMatch(/stalled for 100 ms/);
  });
});

describe("AwsHttpClient errors", () => {
  it("maps a missing S3 object to 404 NoSuchKey, not retried", async () => {
    replies = [s3Error(404, "NoSuchKey")];

    const error = await failure(getObject(client("s3")));

    expect(received).toHaveLength(1);
    expect(error).toMatchObject({ status: 404, code: "NoSuchKey", retryable: false });
    expect(error.message).toContain("NoSuchKey here");
  });

  it("names a bodiless 404 NotFound and a bodiless 403 UnknownError", async () => {
    replies = [(_, r) => r.writeHead(404).end(), (_, r) => r.writeHead(403).end()];

    const notFound = await failure(getObject(client("s3")));
    const forbidden = await failure(getObject(client("s3")));

    expect(notFound).toMatchObject({ status: 404, code: "NotFound" });
    expect(forbidden).toMatchObject({ status: 403, code: "UnknownError", retryable: false });
  });

  it("does not retry a refused connection as a throttle would be", async () => {
    const closed = createServer();
    await new Promise<void>((listening) => closed.listen(0, "127.0.0.1", listening));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((done) => closed.close(done));
    const sleeps: number[] = [];

    const error = await failure(
      getItem(client("dynamodb", { endpoint: `http://127.0.0.1:${port}` }, sleeps)),
    );

    expect(error).toMatchObject({ status: undefined, code: "ECONNREFUSED", retryable: true });
    expect(sleeps).toHaveLength(2);
  });
});

describe("AwsHttpClient configuration", () => {
  it("takes region and credentials from the environment and resolves the regional endpoints", () => {
    const s3 = new AwsHttpClient("s3", {}, ENV);
    const dynamo = new AwsHttpClient("dynamodb", {}, { ...ENV, AWS_REGION: "cn-northwest-1" });

    expect(s3.region).toBe("eu-central-1");
    expect(s3.endpoint.href).toBe("https://s3.eu-central-1.amazonaws.com/");
    expect(s3.customEndpoint).toBe(false);
    expect(dynamo.endpoint.href).toBe("https://dynamodb.cn-northwest-1.amazonaws.com.cn/");
  });

  it("prefers AWS_ENDPOINT_URL_<SERVICE> to AWS_ENDPOINT_URL, and explicit options to both", () => {
    const env = {
      ...ENV,
      AWS_ENDPOINT_URL: "http://localhost:1111",
      AWS_ENDPOINT_URL_DYNAMODB: "http://localhost:2222",
    };

    expect(new AwsHttpClient("dynamodb", {}, env).endpoint.port).toBe("2222");
    expect(new AwsHttpClient("s3", {}, env).endpoint.port).toBe("1111");
    expect(new AwsHttpClient("s3", { endpoint: "http://localhost:3333" }, env).endpoint.port).toBe("3333");
    expect(new AwsHttpClient("s3", {}, env).customEndpoint).toBe(true);
  });

  it("falls back to AWS_DEFAULT_REGION", () => {
    const { AWS_REGION: _, ...env } = ENV;

    expect(new AwsHttpClient("s3", {}, { ...env, AWS_DEFAULT_REGION: "ap-south-1" }).region).toBe(
      "ap-south-1",
    );
  });

  it("refuses to start without a region or credentials, naming the variables", () => {
    const { AWS_REGION: _, ...noRegion } = ENV;
    const { AWS_SECRET_ACCESS_KEY: __, ...noSecret } = ENV;

    expect(() => new AwsHttpClient("s3", {}, noRegion)).toThrow(/no AWS region for s3: set AWS_REGION/);
    expect(() => new AwsHttpClient("dynamodb", {}, noSecret)).toThrow(
      /no AWS credentials for dynamodb: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/,
    );
  });
});

describe("s3ObjectUrl", () => {
  const aws = new AwsHttpClient("s3", {}, ENV);

  it("addresses a DNS-compatible bucket on AWS by virtual host", () => {
    expect(s3ObjectUrl(aws, "maas-models", "models/iris/1/model.onnx").href).toBe(
      "https://maas-models.s3.eu-central-1.amazonaws.com/models/iris/1/model.onnx",
    );
  });

  it("puts a dotted bucket in the path, where TLS still matches the certificate", () => {
    expect(s3ObjectUrl(aws, "my.models", "k(1)+ü").href).toBe(
      "https://s3.eu-central-1.amazonaws.com/my.models/k%281%29%2B%C3%BC",
    );
  });

  it("puts the bucket in the path on a configured endpoint, keeping its base path", () => {
    const local = new AwsHttpClient("s3", { endpoint: "http://127.0.0.1:4566/s3/" }, ENV);

    expect(s3ObjectUrl(local, "maas-models", "a/b").href).toBe("http://127.0.0.1:4566/s3/maas-models/a/b");
  });

  it("refuses keys whose dot segments a URL would resolve away", () => {
    expect(() => s3ObjectUrl(aws, "maas-models", "models/../secret")).toThrow(/'\.' or '\.\.' segments/);
  });
});
