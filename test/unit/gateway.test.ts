import { request } from "node:http";
import { connect, createServer, type Server } from "node:net";
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from "aws-lambda";
import { afterEach, describe, expect, it } from "vitest";
import { type Gateway, type GatewayOptions, startGateway } from "../../local/gateway.ts";

const API_KEY = "inference-key";
const ADMIN_KEY = "admin-key";

interface Echo {
  event: APIGatewayProxyEvent;
  context: { functionName: string; awsRequestId: string; remainingMs: number };
}

async function echo(event: APIGatewayProxyEvent, context: Context): Promise<APIGatewayProxyResult> {
  const body: Echo = {
    event,
    context: {
      functionName: context.functionName,
      awsRequestId: context.awsRequestId,
      remainingMs: context.getRemainingTimeInMillis(),
    },
  };
  return { statusCode: 200, body: JSON.stringify(body) };
}

let gateway: Gateway | undefined;

async function start(overrides: Partial<GatewayOptions> = {}): Promise<Gateway> {
  gateway = await startGateway({
    port: 0,
    handler: echo,
    apiKey: API_KEY,
    adminKey: ADMIN_KEY,
    onHandlerError: () => {},
    ...overrides,
  });
  return gateway;
}

async function echoed(response: Response): Promise<Echo> {
  expect(response.status).toBe(200);
  return (await response.json()) as Echo;
}

afterEach(async () => {
  await gateway?.close();
  gateway = undefined;
});

describe("local API gateway: proxy event", () => {
  it("passes method, path, proxy parameter, query and headers the way API Gateway does", async () => {
    const { url } = await start({ stage: "prod" });

    const response = await fetch(`${url}/v2/models/mnist/infer?a=1&b=x%20y&a=2`, {
      method: "POST",
      headers: { "x-api-key": API_KEY, "Content-Type": "application/json", "X-Custom-Case": "kept" },
      body: '{"inputs":[]}',
    });

    const { event } = await echoed(response);
    expect(event.httpMethod).toBe("POST");
    expect(event.path).toBe("/v2/models/mnist/infer");
    expect(event.resource).toBe("/{proxy+}");
    expect(event.pathParameters).toEqual({ proxy: "v2/models/mnist/infer" });
    expect(event.queryStringParameters).toEqual({ a: "2", b: "x y" });
    expect(event.multiValueQueryStringParameters).toEqual({ a: ["1", "2"], b: ["x y"] });
    expect(event.headers["X-Custom-Case"]).toBe("kept");
    expect(event.multiValueHeaders["X-Custom-Case"]).toEqual(["kept"]);
    // Binary media types */*: API Gateway sends every body base64-encoded, JSON included.
    expect(event.isBase64Encoded).toBe(true);
    expect(Buffer.from(event.body ?? "", "base64").toString("utf8")).toBe('{"inputs":[]}');
    expect(event.stageVariables).toBeNull();
    expect(event.requestContext).toMatchObject({
      httpMethod: "POST",
      path: "/prod/v2/models/mnist/infer",
      stage: "prod",
      resourcePath: "/{proxy+}",
      identity: { apiKey: API_KEY, sourceIp: "127.0.0.1" },
    });
  });

  it("sets null query maps and a null body when the request has neither", async () => {
    const { url } = await start();

    const { event } = await echoed(await fetch(`${url}/v2/models`, { headers: { "x-api-key": API_KEY } }));

    expect(event.queryStringParameters).toBeNull();
    expect(event.multiValueQueryStringParameters).toBeNull();
    expect(event.body).toBeNull();
  });

  it("keeps the last value of a repeated header in headers and all of them in multiValueHeaders", async () => {
    const { url } = await start();

    // fetch folds repeated headers into one line, so send them with node:http.
    const raw = await rawRequest(`${url}/v2`, { "x-api-key": API_KEY, "X-Trace": ["first", "second"] });

    const rawEvent = (JSON.parse(raw.body) as Echo).event;
    expect(raw.status).toBe(200);
    expect(rawEvent.headers["X-Trace"]).toBe("second");
    expect(rawEvent.multiValueHeaders["X-Trace"]).toEqual(["first", "second"]);
  });

  it("gives every request its own requestId, shared by the Lambda context and the response header", async () => {
    const { url } = await start();

    const first = await fetch(`${url}/v2`, { headers: { "x-api-key": API_KEY } });
    const second = await fetch(`${url}/v2`, { headers: { "x-api-key": API_KEY } });

    const a = await echoed(first);
    const b = await echoed(second);
    expect(a.event.requestContext.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(a.event.requestContext.requestId).not.toBe(b.event.requestContext.requestId);
    expect(a.context.awsRequestId).toBe(a.event.requestContext.requestId);
    expect(first.headers.get("x-amzn-requestid")).toBe(a.event.requestContext.requestId);
  });

  it("hands the handler a Lambda context with the local function name and a 30 s budget", async () => {
    const { url } = await start();

    const { context } = await echoed(await fetch(`${url}/v2`, { headers: { "x-api-key": API_KEY } }));

    expect(context.functionName).toBe("maas-inference-local");
    expect(context.remainingMs).toBeGreaterThan(25_000);
    expect(context.remainingMs).toBeLessThanOrEqual(30_000);
  });

  it("passes a binary request body as base64", async () => {
    const { url } = await start();
    const bytes = Buffer.from([0, 1, 2, 250, 255]);

    const { event } = await echoed(
      await fetch(`${url}/v2/models/m/infer`, {
        method: "POST",
        headers: { "x-api-key": API_KEY, "content-type": "application/octet-stream" },
        body: bytes,
      }),
    );

    expect(event.isBase64Encoded).toBe(true);
    expect(Buffer.from(event.body ?? "", "base64")).toEqual(bytes);
  });
});

describe("local API gateway: responses", () => {
  it("decodes a base64 response body and sends the handler's headers", async () => {
    const bytes = Buffer.from([9, 8, 7, 0, 255]);
    const { url } = await start({
      handler: async () => ({
        statusCode: 201,
        headers: { "content-type": "application/octet-stream", "x-maas-backend": "lambda" },
        multiValueHeaders: { "x-multi": ["one", "two"] },
        body: bytes.toString("base64"),
        isBase64Encoded: true,
      }),
    });

    const response = await fetch(`${url}/v2/models/m/infer`, { headers: { "x-api-key": API_KEY } });

    expect(response.status).toBe(201);
    expect(response.headers.get("x-maas-backend")).toBe("lambda");
    expect(response.headers.get("x-multi")).toBe("one, two");
    expect(Buffer.from(await response.arrayBuffer())).toEqual(bytes);
  });

  it("defaults the response Content-Type to application/json", async () => {
    const { url } = await start({ handler: async () => ({ statusCode: 200, body: "{}" }) });

    const response = await fetch(`${url}/v2`, { headers: { "x-api-key": API_KEY } });

    expect(response.headers.get("content-type")).toBe("application/json");
  });

  it("answers 502 Internal server error when the handler throws, and keeps serving", async () => {
    let calls = 0;
    const { url } = await start({
      handler: async (event, context) => {
        calls += 1;
        if (calls === 1) throw new Error("boom");
        return echo(event, context);
      },
    });

    const failed = await fetch(`${url}/v2`, { headers: { "x-api-key": API_KEY } });
    const next = await fetch(`${url}/v2`, { headers: { "x-api-key": API_KEY } });

    expect(failed.status).toBe(502);
    expect(await failed.json()).toEqual({ message: "Internal server error" });
    expect(next.status).toBe(200);
  });

  it("answers 502 when the handler returns something that is not a proxy result", async () => {
    const { url } = await start({
      handler: async () => ({ body: "no status" }) as unknown as APIGatewayProxyResult,
    });

    const response = await fetch(`${url}/v2`, { headers: { "x-api-key": API_KEY } });

    expect(response.status).toBe(502);
  });

  it("answers 504 Endpoint request timed out when the handler outlives the integration timeout", async () => {
    const { url } = await start({
      integrationTimeoutMs: 50,
      handler: () => new Promise((resolve) => setTimeout(() => resolve({ statusCode: 200, body: "" }), 500)),
    });

    const response = await fetch(`${url}/v2`, { headers: { "x-api-key": API_KEY } });

    expect(response.status).toBe(504);
    expect(await response.json()).toEqual({ message: "Endpoint request timed out" });
  });
});

describe("local API gateway: access like a usage plan", () => {
  it.each(["/v2/health/live", "/v2/health/ready"])("serves GET %s without a key", async (path) => {
    const { url } = await start();

    const { event } = await echoed(await fetch(`${url}${path}`));

    expect(event.path).toBe(path);
    expect(event.requestContext.identity.apiKey).toBeNull();
  });

  it("answers 403 Forbidden to an inference route without a key", async () => {
    let invoked = false;
    const { url } = await start({
      handler: async () => {
        invoked = true;
        return { statusCode: 200, body: "" };
      },
    });

    const response = await fetch(`${url}/v2/models`);

    expect(response.status).toBe(403);
    expect(await response.json()).toEqual({ message: "Forbidden" });
    expect(invoked).toBe(false);
  });

  it("answers 403 Forbidden to a wrong key", async () => {
    const { url } = await start();

    const response = await fetch(`${url}/v2/models`, { headers: { "x-api-key": "guess" } });

    expect(response.status).toBe(403);
  });

  it("refuses the inference key on /admin/ routes", async () => {
    const { url } = await start();

    const response = await fetch(`${url}/admin/models/m/aliases`, { headers: { "x-api-key": API_KEY } });

    expect(response.status).toBe(403);
    expect(await response.json()).toEqual({ message: "Forbidden" });
  });

  it("opens /admin/ routes with the admin key", async () => {
    const { url } = await start();

    const { event } = await echoed(
      await fetch(`${url}/admin/models/m/aliases`, { headers: { "x-api-key": ADMIN_KEY } }),
    );

    expect(event.path).toBe("/admin/models/m/aliases");
  });

  it("refuses the admin key on inference routes", async () => {
    const { url } = await start();

    const response = await fetch(`${url}/v2/models`, { headers: { "x-api-key": ADMIN_KEY } });

    expect(response.status).toBe(403);
  });

  it("answers GET /metrics itself with the admin key, and refuses the inference key and no key", async () => {
    let invoked = false;
    const { url } = await start({
      metrics: () => '# TYPE up counter\nup{model="m"} 1\n',
      handler: async () => {
        invoked = true;
        return { statusCode: 200, body: "" };
      },
    });

    const admin = await fetch(`${url}/metrics`, { headers: { "x-api-key": ADMIN_KEY } });
    const inference = await fetch(`${url}/metrics`, { headers: { "x-api-key": API_KEY } });
    const anonymous = await fetch(`${url}/metrics`);
    const post = await fetch(`${url}/metrics`, { method: "POST", headers: { "x-api-key": ADMIN_KEY } });

    expect(admin.status).toBe(200);
    expect(admin.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(await admin.text()).toBe('# TYPE up counter\nup{model="m"} 1\n');
    expect([inference.status, await inference.json()]).toEqual([403, { message: "Forbidden" }]);
    expect(anonymous.status).toBe(403);
    expect([post.status, post.headers.get("allow")]).toEqual([405, "GET, HEAD"]);
    expect(invoked).toBe(false);
  });

  it("passes /metrics to the handler when it serves no metrics", async () => {
    const { url } = await start();

    const { event } = await echoed(await fetch(`${url}/metrics`, { headers: { "x-api-key": API_KEY } }));

    expect(event.path).toBe("/metrics");
  });

  it("answers 403 Missing Authentication Token for / (no resource matches it)", async () => {
    const { url } = await start();

    const response = await fetch(`${url}/`, { headers: { "x-api-key": API_KEY } });

    expect(response.status).toBe(403);
    expect(await response.json()).toEqual({ message: "Missing Authentication Token" });
  });
});

describe("local API gateway: request size", () => {
  it("answers 413 to a body over maxBodyBytes without invoking the handler", async () => {
    let invoked = false;
    const { url } = await start({
      maxBodyBytes: 1024,
      handler: async () => {
        invoked = true;
        return { statusCode: 200, body: "" };
      },
    });

    const response = await fetch(`${url}/v2/models/m/infer`, {
      method: "POST",
      headers: { "x-api-key": API_KEY },
      body: "x".repeat(1025),
    });

    expect(response.status).toBe(413);
    expect(await response.json()).toEqual({
      message: "Request Entity Too Large: the request is 1025 bytes; API Gateway takes at most 1024 bytes",
    });
    expect(invoked).toBe(false);
  });

  it("answers 413 to an oversized chunked upload before it ends, and keeps serving", async () => {
    const { url } = await start({ maxBodyBytes: 64 * 1024 });

    const status = await new Promise<number>((resolve, reject) => {
      const req = request(`${url}/v2/models/m/infer`, {
        method: "POST",
        headers: { "x-api-key": API_KEY, "content-type": "application/octet-stream" },
      });
      req.on("response", (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      // The gateway cuts the socket once it has answered; a write error after the 413 is expected.
      req.on("error", () => {});
      const chunk = Buffer.alloc(16 * 1024);
      let sent = 0;
      const pump = () => {
        // Never ends on its own: only the gateway's early 413 can settle this promise.
        while (sent < 256 && req.write(chunk)) sent += 1;
        if (sent >= 256) reject(new Error("the gateway read 4 MiB without answering 413"));
        else req.once("drain", pump);
      };
      pump();
    });
    const next = await fetch(`${url}/v2/health/live`);

    expect(status).toBe(413);
    expect(next.status).toBe(200);
  });
});

describe("local API gateway: Lambda and API Gateway payload limits", () => {
  it("answers 413 naming Lambda's 6 MB to a 7 MB JSON body, read by fetch without a network error", async () => {
    let invoked = false;
    const { url } = await start({
      handler: async () => {
        invoked = true;
        return { statusCode: 200, body: "" };
      },
    });
    const body = JSON.stringify({ inputs: [{ data: "7".repeat(7_000_000) }] });

    const response = await fetch(`${url}/v2/models/m/infer`, {
      method: "POST",
      headers: { "x-api-key": API_KEY, "content-type": "application/json" },
      body,
    });

    expect(response.status).toBe(413);
    expect(await response.json()).toEqual({
      message:
        `Request Entity Too Large: the body is ${body.length} bytes; ` +
        "Lambda takes at most 6 MB (6291456 bytes) per synchronous invocation. " +
        "Send tensors as binary data (Inference-Header-Content-Length), a quarter of their JSON, " +
        "or larger inputs through asynchronous inference (POST /v2/uploads, then infer with Prefer: respond-async)",
    });
    expect(invoked).toBe(false);
  });

  it("measures the event, so a 5 MB binary body whose base64 exceeds 6 MB is refused", async () => {
    const { url } = await start();

    const response = await fetch(`${url}/v2/models/m/infer`, {
      method: "POST",
      headers: { "x-api-key": API_KEY, "content-type": "application/octet-stream" },
      body: Buffer.alloc(5 * 1024 * 1024, 1),
    });

    expect(response.status).toBe(413);
    const { message } = (await response.json()) as { message: string };
    expect(message).toMatch(
      /^Request Entity Too Large: its Lambda event is \d+ bytes, the body base64-encoded; Lambda takes at most 6 MB/,
    );
  });

  it("answers 413 naming API Gateway's 10 MB to an 11 MB body without a broken pipe, and keeps serving", async () => {
    const { url } = await start();

    const response = await fetch(`${url}/v2/models/m/infer`, {
      method: "POST",
      headers: { "x-api-key": API_KEY, "content-type": "application/octet-stream" },
      body: Buffer.alloc(11_000_000),
    });
    const next = await fetch(`${url}/v2/health/live`);

    expect(response.status).toBe(413);
    expect(await response.json()).toEqual({
      message:
        "Request Entity Too Large: the request is 11000000 bytes; API Gateway takes at most 10 MB (10485760 bytes)",
    });
    expect(next.status).toBe(200);
  });

  it("answers 413 and Connection: close to an upload past the drain bound, then closes without EPIPE", async () => {
    const { port } = await start({ maxBodyBytes: 1024 * 1024 });
    const size = 50_000_000;

    // A client that writes its whole body before reading, as curl does without Expect: 100-continue.
    const outcome = await new Promise<string>((resolve) => {
      const socket = connect(port, "127.0.0.1");
      let text = "";
      socket.on("data", (c: Buffer) => {
        text += c.toString("utf8");
      });
      socket.on("error", (error) => resolve(`error: ${error.message}`));
      socket.on("close", () => resolve(text));
      socket.write(
        "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n" +
          `x-api-key: ${API_KEY}\r\ncontent-type: application/octet-stream\r\ncontent-length: ${size}\r\n\r\n`,
      );
      socket.end(Buffer.alloc(size));
    });

    expect(outcome).toMatch(/^HTTP\/1\.1 413 /);
    expect(outcome).toMatch(/\r\nConnection: close\r\n/i);
    expect(outcome).toContain(
      "the request is 50000000 bytes; API Gateway takes at most 1 MB (1048576 bytes)",
    );
  });

  it("answers 502 naming Lambda's 6 MB when the handler returns a 7 MB body, and reports it", async () => {
    const reported: unknown[] = [];
    const { url } = await start({
      handler: async () => ({ statusCode: 200, body: "x".repeat(7_000_000) }),
      onHandlerError: (error) => reported.push(error),
    });

    const response = await fetch(`${url}/v2/models/m/infer`, { headers: { "x-api-key": API_KEY } });

    expect(response.status).toBe(502);
    const { message } = (await response.json()) as { message: string };
    expect(message).toMatch(
      /^Response too large: the function's response is 70000\d\d bytes; Lambda returns at most 6 MB \(6291456 bytes\)/,
    );
    expect(reported).toHaveLength(1);
    expect((reported[0] as Error).name).toBe("ResponseTooLargeError");
  });

  it("passes a handler result just under the limit", async () => {
    const { url } = await start({ handler: async () => ({ statusCode: 200, body: "x".repeat(6_000_000) }) });

    const response = await fetch(`${url}/v2`, { headers: { "x-api-key": API_KEY } });

    expect(response.status).toBe(200);
    expect((await response.arrayBuffer()).byteLength).toBe(6_000_000);
  });
});

describe("local API gateway: slow clients", () => {
  it("answers 408 to a client that sends headers and then trickles the body", async () => {
    let invoked = false;
    const { url } = await start({
      bodyTimeoutMs: 300,
      handler: async () => {
        invoked = true;
        return { statusCode: 200, body: "" };
      },
    });
    const startedAt = Date.now();

    const answer = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(`${url}/v2/models/m/infer`, {
        method: "POST",
        headers: { "x-api-key": API_KEY, "content-type": "application/json", "content-length": "1000" },
      });
      const trickle = setInterval(() => req.write(" "), 20);
      const giveUp = setTimeout(() => {
        clearInterval(trickle);
        req.destroy();
        reject(new Error("no answer within 3 s"));
      }, 3_000);
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          clearInterval(trickle);
          clearTimeout(giveUp);
          req.destroy();
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") });
        });
      });
      req.on("error", (error) => {
        clearInterval(trickle);
        clearTimeout(giveUp);
        reject(error);
      });
    });

    expect(answer.status).toBe(408);
    expect(JSON.parse(answer.body)).toEqual({
      message: "Request Timeout: the request body did not arrive within 300 ms",
    });
    expect(Date.now() - startedAt).toBeLessThan(1_500);
    expect(invoked).toBe(false);
  });

  it("answers 408 and closes when the headers never finish", async () => {
    const { port } = await start({ headersTimeoutMs: 300 });
    const startedAt = Date.now();

    const received = await new Promise<string>((resolve, reject) => {
      const socket = connect(port, "127.0.0.1", () => socket.write("POST /v2 HTTP/1.1\r\nHost: x\r\n"));
      let text = "";
      socket.on("data", (c: Buffer) => {
        text += c.toString("utf8");
      });
      socket.on("close", () => resolve(text));
      socket.on("error", reject);
      setTimeout(() => socket.destroy(), 3_000).unref();
    });

    expect(received).toMatch(/^HTTP\/1\.1 408/);
    expect(Date.now() - startedAt).toBeLessThan(2_500);
    const answer = parseAnswer(received);
    expect(answer.headers["x-amzn-errortype"]).toBe("RequestTimeout");
    expect(JSON.parse(answer.body)).toEqual({
      message: "Request Timeout: the request headers did not arrive within 300 ms",
    });
  });
});

describe("local API gateway: request line and header limits", () => {
  it("answers 414 naming API Gateway's 10240-character URL limit to a 20 000-character model name", async () => {
    const invoked: string[] = [];
    const { url } = await start({
      handler: async (event) => {
        invoked.push(event.path);
        return { statusCode: 200, body: "" };
      },
    });

    const response = await fetch(`${url}/v2/models/${"a".repeat(20_000)}/infer`, {
      method: "POST",
      headers: { "x-api-key": API_KEY, "content-type": "application/json" },
      body: '{"inputs":[]}',
    });
    const next = await fetch(`${url}/v2/health/live`);

    expect(response.status).toBe(414);
    expect(response.headers.get("x-amzn-errortype")).toBe("RequestUriTooLong");
    expect(await response.json()).toEqual({
      message:
        "Request-URI Too Long: the URL is 20017 characters; API Gateway takes at most 10240 characters",
    });
    expect(next.status).toBe(200);
    expect(invoked).toEqual(["/v2/health/live"]);
  });

  it("serves a URL of exactly 10240 characters", async () => {
    const { url } = await start();
    const path = `/v2/models/${"a".repeat(10_240 - "/v2/models//infer".length)}/infer`;

    const { event } = await echoed(
      await fetch(`${url}${path}`, { method: "POST", headers: { "x-api-key": API_KEY }, body: "{}" }),
    );

    expect(event.path).toHaveLength(10_240);
  });

  it("answers 431 naming API Gateway's 10240-byte header limit to a 12 KB header value", async () => {
    let invoked = false;
    const { url } = await start({
      handler: async () => {
        invoked = true;
        return { statusCode: 200, body: "" };
      },
    });

    const response = await fetch(`${url}/v2/models/m/infer`, {
      headers: { "x-api-key": API_KEY, "x-padding": "p".repeat(12 * 1024) },
    });

    expect(response.status).toBe(431);
    expect(response.headers.get("x-amzn-errortype")).toBe("RequestHeaderFieldsTooLarge");
    const { message } = (await response.json()) as { message: string };
    const [, bytes] =
      /^Request Header Fields Too Large: the headers are (\d+) bytes; API Gateway takes at most 10240 bytes$/.exec(
        message,
      ) ?? [];
    expect(Number(bytes)).toBeGreaterThan(12 * 1024);
    expect(invoked).toBe(false);
  });

  it("serves a 9 KB URL with 9 KB of headers, which Node's 16 KiB default head limit would refuse", async () => {
    const { url } = await start();

    const response = await fetch(`${url}/v2/models/${"a".repeat(9_000)}/infer`, {
      headers: { "x-api-key": API_KEY, "x-padding": "p".repeat(9_000) },
    });

    const { event } = await echoed(response);
    expect(event.headers["x-padding"]).toHaveLength(9_000);
  });

  it("answers 414 in JSON with Connection: close to a request line past what the parser reads, and keeps serving", async () => {
    const { url, port } = await start();

    const answer = parseAnswer(
      await exchange(
        port,
        `POST /v2/models/${"a".repeat(100_000)}/infer HTTP/1.1\r\nHost: x\r\nx-api-key: ${API_KEY}\r\n\r\n`,
      ),
    );
    const next = await fetch(`${url}/v2/health/live`);

    expect(answer.status).toBe(414);
    expect(answer.headers).toMatchObject({
      "content-type": "application/json",
      "x-amzn-errortype": "RequestUriTooLong",
      connection: "close",
    });
    expect(JSON.parse(answer.body)).toEqual({
      message:
        "Request-URI Too Long: the URL is at least 40960 characters; API Gateway takes at most 10240 characters",
    });
    expect(next.status).toBe(200);
  });

  it("answers 431 in JSON naming both limits to headers past what the parser reads", async () => {
    const { port } = await start();

    const answer = parseAnswer(
      await exchange(port, `GET /v2 HTTP/1.1\r\nHost: x\r\nx-padding: ${"p".repeat(100_000)}\r\n\r\n`),
    );

    expect(answer.status).toBe(431);
    expect(answer.headers).toMatchObject({
      "x-amzn-errortype": "RequestHeaderFieldsTooLarge",
      connection: "close",
    });
    expect(JSON.parse(answer.body)).toEqual({
      message:
        "Request Header Fields Too Large: the request line and headers are at least 40960 bytes; " +
        "API Gateway takes a URL of at most 10240 characters and headers of at most 10240 bytes",
    });
  });

  it.each([
    ["a request line without a method", "GARBAGE\r\n\r\n", "the request line has no valid method"],
    [
      "an unknown HTTP version",
      "GET /v2 HTTP/9.9\r\nHost: x\r\n\r\n",
      "the request line has no valid HTTP version",
    ],
    [
      "a header line without a colon",
      "GET /v2 HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n",
      "a header is malformed",
    ],
    [
      "a malformed chunk while the handler waits for the body",
      `POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nx-api-key: ${API_KEY}\r\n` +
        "Transfer-Encoding: chunked\r\n\r\nzz\r\n",
      "the chunked body is malformed",
    ],
  ])("answers 400 in JSON with Connection: close to %s", async (_, request, reason) => {
    const { url, port } = await start();

    const received = await exchange(port, request);
    const next = await fetch(`${url}/v2/health/live`);

    const answer = parseAnswer(received);
    expect(answer.status).toBe(400);
    expect(answer.headers).toMatchObject({ "x-amzn-errortype": "BadRequest", connection: "close" });
    expect(JSON.parse(answer.body)).toEqual({ message: `Bad Request: ${reason}` });
    expect(next.status).toBe(200);
  });

  it("keeps serving when clients reset their connections in the middle of oversize or malformed heads", async () => {
    const { url, port } = await start();
    const heads = [
      `POST /v2/models/${"a".repeat(60_000)}`,
      `GET /v2 HTTP/1.1\r\nx-padding: ${"p".repeat(60_000)}`,
      "GARBAGE\r\n\r\n",
      `GET /v2 HTTP/1.1\r\nx-padding: ${"p".repeat(12_000)}\r\n\r\n`,
    ];

    for (let round = 0; round < 5; round++) {
      for (const head of heads) {
        await new Promise<void>((resolve) => {
          const socket = connect(port, "127.0.0.1", () => {
            socket.write(head);
            if (round % 2 === 0) socket.resetAndDestroy();
            else setImmediate(() => socket.resetAndDestroy());
          });
          socket.on("error", () => {});
          socket.on("close", () => resolve());
        });
      }
    }
    const next = await fetch(`${url}/v2/health/live`);

    expect(next.status).toBe(200);
  });
});

describe("local API gateway: lifecycle", () => {
  it("names the port and PORT when the port is taken", async () => {
    const blocker = await occupyPort();
    const port = (blocker.address() as { port: number }).port;

    try {
      await expect(start({ port })).rejects.toThrow(new RegExp(`port ${port}.*Set PORT`));
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });

  it("closes promptly while a client holds a keep-alive connection", async () => {
    const { url } = await start();
    await fetch(`${url}/v2/health/live`);

    const startedAt = Date.now();
    await gateway?.close();
    gateway = undefined;

    expect(Date.now() - startedAt).toBeLessThan(1_000);
    await expect(fetch(`${url}/v2/health/live`)).rejects.toThrow();
  });
});

/** Writes `text` over a fresh connection and resolves what came back once the gateway closes it. */
function exchange(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(text));
    let received = "";
    socket.on("data", (chunk: Buffer) => {
      received += chunk.toString("latin1");
    });
    socket.on("error", reject);
    socket.on("close", () => resolve(received));
    setTimeout(
      () => socket.destroy(new Error(`still open after 3 s: ${received.slice(0, 200)}`)),
      3_000,
    ).unref();
  });
}

function parseAnswer(text: string): { status: number; headers: Record<string, string>; body: string } {
  const [head = "", body = ""] = text.split("\r\n\r\n", 2);
  const [statusLine = "", ...lines] = head.split("\r\n");
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status: Number(statusLine.split(" ")[1]), headers, body };
}

function occupyPort(): Promise<Server> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

function rawRequest(
  url: string,
  headers: Record<string, string | string[]>,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }),
      );
    });
    req.on("error", reject);
    req.end();
  });
}
