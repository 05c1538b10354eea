import { createSocket, type Socket } from "node:dgram";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { XRayRequestTracing } from "#aws/tracing/xray.ts";
import { isServable } from "#core/registry/registry.ts";
import type { LocalStack } from "../../local/stack.ts";
import { buildMlpModel } from "../../models/mlp.ts";
import { startTestStack, stopTestStack, TEST_API_KEY } from "../support/local-stack.ts";

/**
 * Issue 18 item 6: a sampled infer request's trace reaches an X-Ray daemon (a UDP socket here) with the
 * request's phases, and the inference function's S3 and DynamoDB calls inside the phase that made them;
 * `x-maas-timing: 1` answers `server-timing` on the local stack.
 */
interface Document {
  name: string;
  id: string;
  start_time: number;
  end_time: number;
  trace_id?: string;
  parent_id?: string;
  type?: string;
  namespace?: string;
  aws?: { operation: string; region: string; retries: number };
  http?: { response: { status: number } };
  error?: boolean;
  fault?: boolean;
  annotations?: Record<string, string | number>;
  subsegments?: Document[];
}

const TRACE_ID = "1-6755c0de-0123456789abcdef01234567";
const PARENT_ID = "53995c3f42cd8ad8";
const env: Record<string, string | undefined> = {};
let daemon: Socket;
const datagrams: string[] = [];
let stack: LocalStack;
let dataDir: string | undefined;

const mlpRequest = JSON.stringify({
  inputs: [{ name: "input", shape: [2, 4], datatype: "FP32", data: [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7] }],
});

function infer(body: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${stack.url}/v2/models/mlp/infer`, {
    method: "POST",
    headers: { "x-api-key": TEST_API_KEY, "content-type": "application/json", ...headers },
    body,
  });
}

/** The next datagram the daemon gets, or undefined if none comes within `ms`. */
async function nextDatagram(ms = 1_000): Promise<string | undefined> {
  const deadline = Date.now() + ms;
  while (datagrams.length === 0 && Date.now() < deadline) await new Promise((wake) => setTimeout(wake, 10));
  return datagrams.shift();
}

/** A traced request's document, checked against the daemon protocol's header line. */
async function tracedRequest(body: string, sampled: boolean): Promise<{ status: number; doc?: Document }> {
  datagrams.length = 0;
  env._X_AMZN_TRACE_ID = `Root=${TRACE_ID};Parent=${PARENT_ID};Sampled=${sampled ? 1 : 0}`;
  const response = await infer(body);
  await response.arrayBuffer();
  const datagram = await nextDatagram(sampled ? 2_000 : 300);
  if (datagram === undefined) return { status: response.status };
  const newline = datagram.indexOf("\n");
  expect(JSON.parse(datagram.slice(0, newline))).toEqual({ format: "json", version: 1 });
  return { status: response.status, doc: JSON.parse(datagram.slice(newline + 1)) as Document };
}

function child(doc: Document, name: string): Document {
  const found = doc.subsegments?.find((subsegment) => subsegment.name === name);
  if (found === undefined)
    throw new Error(`no '${name}' in ${JSON.stringify(doc.subsegments?.map((s) => s.name))}`);
  return found;
}

function everyDocument(doc: Document): Document[] {
  return [doc, ...(doc.subsegments ?? []).flatMap(everyDocument)];
}

beforeAll(async () => {
  daemon = createSocket("udp4");
  daemon.on("message", (message) => datagrams.push(message.toString("utf8")));
  await new Promise<void>((bound) => daemon.bind(0, "127.0.0.1", bound));
  const { port } = daemon.address() as AddressInfo;
  const tracing = new XRayRequestTracing({
    daemonAddress: `udp:127.0.0.1:${port} tcp:127.0.0.1:${port}`,
    env,
  });
  ({ stack, dataDir } = await startTestStack("tracing", { demo: false, tracing }));
  const mlp = await stack.publish("mlp", 1, buildMlpModel({ layers: [4, 8, 3], seed: 11 }));
  if (!isServable(mlp)) throw new Error(`mlp did not register: ${mlp.reason}`);
});

afterAll(async () => {
  await stopTestStack(stack, dataDir);
  daemon?.close();
});

describe("X-Ray tracing of infer requests", () => {
  it("sends a cold request's phases with its DynamoDB and S3 calls inside the phases that made them", async () => {
    const { status, doc } = await tracedRequest(mlpRequest, true);
    expect(status).toBe(200);
    if (doc === undefined) throw new Error("no trace reached the daemon");
    expect(doc).toMatchObject({
      name: "infer",
      trace_id: TRACE_ID,
      parent_id: PARENT_ID,
      type: "subsegment",
      annotations: { model: "mlp", version: 1, backend: "lambda", status: 200 },
    });
    const names = doc.subsegments?.map((subsegment) => subsegment.name);
    for (const phase of [
      "body decode",
      "registry",
      "input decode",
      "artifact fetch",
      "session create",
      "queue",
      "run",
      "output encode",
    ])
      expect(names).toContain(phase);

    const registryCalls = child(doc, "registry").subsegments ?? [];
    expect(registryCalls.length).toBeGreaterThan(0);
    for (const call of registryCalls)
      expect(call).toMatchObject({ name: "DynamoDB", namespace: "aws", http: { response: { status: 200 } } });
    const fetchCalls = child(doc, "artifact fetch").subsegments ?? [];
    expect(fetchCalls).toContainEqual(
      expect.objectContaining({
        name: "S3",
        namespace: "aws",
        aws: expect.objectContaining({ operation: "GetObject" }),
      }),
    );

    // Every subsegment within its parent's time, ids as X-Ray takes them (16 hex digits, unique).
    const all = everyDocument(doc);
    for (const parent of all)
      for (const inner of parent.subsegments ?? []) {
        expect(inner.start_time).toBeGreaterThanOrEqual(parent.start_time);
        expect(inner.end_time).toBeLessThanOrEqual(parent.end_time);
        expect(inner.end_time).toBeGreaterThanOrEqual(inner.start_time);
      }
    for (const { id } of all) expect(id).toMatch(/^[0-9a-f]{16}$/);
    expect(new Set(all.map(({ id }) => id)).size).toBe(all.length);
    expect(Math.abs(doc.start_time - Date.now() / 1000)).toBeLessThan(60);
  });

  it("sends a warm request without the model's loading, and nothing for a request X-Ray did not sample", async () => {
    const { doc } = await tracedRequest(mlpRequest, true);
    if (doc === undefined) throw new Error("no trace reached the daemon");
    const names = doc.subsegments?.map((subsegment) => subsegment.name);
    expect(names).not.toContain("artifact fetch");
    expect(names).not.toContain("session create");
    expect(names).toContain("run");

    const unsampled = await tracedRequest(mlpRequest, false);
    expect(unsampled.status).toBe(200);
    expect(unsampled.doc).toBeUndefined();
  });

  it("traces a refused request with its status", async () => {
    const wrongShape = JSON.stringify({
      inputs: [{ name: "input", shape: [1, 3], datatype: "FP32", data: [1, 2, 3] }],
    });
    const { status, doc } = await tracedRequest(wrongShape, true);
    expect(status).toBe(400);
    expect(doc?.annotations).toMatchObject({ model: "mlp", status: 400 });
    expect(doc?.subsegments?.map((subsegment) => subsegment.name)).not.toContain("run");
  });
});

describe("x-maas-timing on the local stack", () => {
  it("answers server-timing with each phase when asked, and only then", async () => {
    env._X_AMZN_TRACE_ID = undefined;
    const timed = await infer(mlpRequest, { "x-maas-timing": "1" });
    expect(timed.status).toBe(200);
    const header = timed.headers.get("server-timing") ?? "";
    const phases = Object.fromEntries(
      header.split(", ").map((entry) => {
        const [name, dur] = entry.split(";dur=");
        return [name, Number(dur)];
      }),
    );
    expect(Object.keys(phases)).toEqual([
      "registry",
      "fetch",
      "session",
      "decode",
      "queue",
      "infer",
      "encode",
      "total",
    ]);
    for (const ms of Object.values(phases)) expect(ms).toBeGreaterThanOrEqual(0);
    expect(phases.infer).toBeGreaterThan(0);
    expect(phases.total).toBeGreaterThanOrEqual((phases.infer ?? 0) + (phases.decode ?? 0));

    const untimed = await infer(mlpRequest);
    expect(untimed.headers.get("server-timing")).toBeNull();
  });
});
