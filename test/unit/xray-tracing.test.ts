import { createSocket, type Socket } from "node:dgram";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseDaemonAddress, sampledContext, XRayRequestTracing } from "#aws/tracing/xray.ts";
import type { AwsCallSpan } from "#core/metrics/span.ts";

const HEADER = "Root=1-6755c0de-0123456789abcdef01234567;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a1b2:0";

describe("the invocation's trace context", () => {
  it("reads the root and parent of a sampled invocation", () => {
    expect(sampledContext(HEADER)).toEqual({
      traceId: "1-6755c0de-0123456789abcdef01234567",
      parentId: "53995c3f42cd8ad8",
    });
  });

  it("has none when X-Ray did not sample the invocation, or the header is missing or partial", () => {
    expect(sampledContext(HEADER.replace("Sampled=1", "Sampled=0"))).toBeUndefined();
    expect(sampledContext(undefined)).toBeUndefined();
    expect(sampledContext("Root=1-6755c0de-0123456789abcdef01234567;Sampled=1")).toBeUndefined();
  });

  it("takes the daemon's UDP address in both of AWS_XRAY_DAEMON_ADDRESS's forms", () => {
    expect(parseDaemonAddress("169.254.79.129:2000")).toEqual({ host: "169.254.79.129", port: 2000 });
    expect(parseDaemonAddress("tcp:10.0.0.1:2001 udp:10.0.0.2:2002")).toEqual({
      host: "10.0.0.2",
      port: 2002,
    });
    expect(parseDaemonAddress(undefined)).toEqual({ host: "127.0.0.1", port: 2000 });
  });
});

describe("XRayRequestTracing", () => {
  let daemon: Socket;
  let tracing: XRayRequestTracing;
  const env: Record<string, string | undefined> = { _X_AMZN_TRACE_ID: HEADER };
  const received: string[] = [];

  beforeEach(async () => {
    received.length = 0;
    daemon = createSocket("udp4");
    daemon.on("message", (message) => received.push(message.toString("utf8")));
    await new Promise<void>((bound) => daemon.bind(0, "127.0.0.1", bound));
    tracing = new XRayRequestTracing({
      daemonAddress: `127.0.0.1:${(daemon.address() as AddressInfo).port}`,
      env,
    });
  });

  afterEach(() => {
    tracing.close();
    daemon.close();
  });

  async function document(): Promise<Record<string, unknown> & { subsegments: Record<string, unknown>[] }> {
    for (let i = 0; i < 200 && received.length === 0; i++) await new Promise((wake) => setTimeout(wake, 5));
    const datagram = received.shift() ?? "";
    return JSON.parse(datagram.slice(datagram.indexOf("\n") + 1));
  }

  const call = (aws: Partial<AwsCallSpan>, start: number) => ({
    name: "GetItem",
    start,
    end: start + 1,
    aws: { service: "DynamoDB", operation: "GetItem", region: "eu-west-1", status: 200, retries: 0, ...aws },
  });

  it("marks a call's outcome as X-Ray does: error for 4xx, throttle, fault for 5xx and no answer", async () => {
    const trace = tracing.begin();
    if (trace === undefined) throw new Error("a sampled invocation was not traced");
    const t = performance.now();
    tracing.recordCall(call({ status: 404, errorCode: "ResourceNotFoundException" }, t));
    tracing.recordCall(call({ status: 400, errorCode: "ThrottlingException", retries: 2 }, t + 1));
    tracing.recordCall(
      call({ status: 503, errorCode: "SlowDown", service: "S3", operation: "GetObject" }, t + 2),
    );
    tracing.recordCall(call({ status: 500, errorCode: "InternalServerError" }, t + 3));
    tracing.recordCall(call({ status: undefined, errorCode: "ECONNRESET" }, t + 4));
    tracing.end(trace);
    tracing.send(trace, { name: "infer", start: t, end: t + 10 });

    const { subsegments } = await document();
    expect(subsegments.map((s) => [s.error ?? false, s.throttle ?? false, s.fault ?? false])).toEqual([
      [true, false, false],
      [true, true, false],
      [true, true, true],
      [false, false, true],
      [false, false, true],
    ]);
    expect(subsegments[1]).toMatchObject({ aws: { operation: "GetItem", region: "eu-west-1", retries: 2 } });
    expect(subsegments[2]).toMatchObject({ name: "S3", cause: { exceptions: [{ message: "SlowDown" }] } });
    expect(subsegments[4]).not.toHaveProperty("http");
  });

  it("keeps calls made after the response out of the request's trace, and traces nothing unsampled", async () => {
    const trace = tracing.begin();
    if (trace === undefined) throw new Error("a sampled invocation was not traced");
    const t = performance.now();
    tracing.recordCall(call({}, t));
    tracing.end(trace);
    tracing.recordCall(call({}, t + 2));
    tracing.send(trace, { name: "infer", start: t, end: t + 3 });
    expect((await document()).subsegments).toHaveLength(1);

    env._X_AMZN_TRACE_ID = HEADER.replace("Sampled=1", "Sampled=0");
    try {
      expect(tracing.begin()).toBeUndefined();
    } finally {
      env._X_AMZN_TRACE_ID = HEADER;
    }
  });

  it("bounds the spans of one request, so its document fits a datagram", async () => {
    const trace = tracing.begin();
    if (trace === undefined) throw new Error("a sampled invocation was not traced");
    const t = performance.now();
    for (let i = 0; i < 1_000; i++) tracing.recordCall(call({}, t + i / 1000));
    tracing.send(trace, { name: "infer", start: t, end: t + 2 });
    const sent = await document();
    expect(sent.subsegments.length).toBeLessThanOrEqual(200);
    expect(sent.subsegments.length).toBeGreaterThan(100);
  });
});
