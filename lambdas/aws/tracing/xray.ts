// Powertools Tracer (aws-xray-sdk-core, 124 KB bundled) adds 61.8 ms to a cold start's import, this file 0.66 ms (npm run bench:tracing, one run: 93x).
import type { Socket } from "node:dgram";
import type { AwsCallSpan, RequestTrace, RequestTracing, Span } from "#core/metrics/span.ts";

/** Lambda's X-Ray context for the current invocation, from `_X_AMZN_TRACE_ID`. */
export interface TraceContext {
  readonly traceId: string;
  /** The function's segment, which Lambda sends itself: our subsegments hang under it. */
  readonly parentId: string;
}

interface XRayTrace extends RequestTrace {
  readonly context: TraceContext;
}

/** A subsegment document (docs.aws.amazon.com/xray/latest/devguide/xray-api-segmentdocuments.html). */
interface Subsegment {
  name: string;
  id: string;
  start_time: number;
  end_time: number;
  namespace?: "aws";
  aws?: { operation: string; region: string; retries: number };
  http?: { response: { status: number } };
  error?: true;
  throttle?: true;
  fault?: true;
  cause?: { exceptions: { message: string }[] };
  subsegments?: Subsegment[];
}

export interface XRayTracingOptions {
  /** Where the X-Ray daemon listens, as AWS_XRAY_DAEMON_ADDRESS has it (`host:port`, or `udp:host:port tcp:host:port`). */
  readonly daemonAddress?: string | undefined;
  /** Read at each request for the invocation's `_X_AMZN_TRACE_ID`. @default process.env */
  readonly env?: Record<string, string | undefined>;
}

/** Spans past this many in one request are left out: a document must fit one UDP datagram (64 KB). */
const MAX_SPANS = 200;
const DAEMON_HEADER = '{"format":"json","version":1}\n';

/**
 * X-Ray subsegments for the inference function's requests, sent to the Lambda X-Ray daemon over UDP
 * after the response: one document per sampled request, the whole request as one subsegment of the
 * function's segment, its phases inside it and each AWS call inside the phase that made it. Lambda
 * runs one request at a time per environment, so the request being traced owns every call reported
 * while it runs. Unsampled requests cost one environment read.
 */
export class XRayRequestTracing implements RequestTracing {
  readonly #daemon: { host: string; port: number };
  readonly #env: Record<string, string | undefined>;
  #current: XRayTrace | undefined;
  #socket: Socket | undefined;

  constructor(options: XRayTracingOptions = {}) {
    this.#daemon = parseDaemonAddress(options.daemonAddress);
    this.#env = options.env ?? process.env;
  }

  begin(): RequestTrace | undefined {
    const context = sampledContext(this.#env._X_AMZN_TRACE_ID);
    if (context === undefined) return undefined;
    const trace: XRayTrace = { context, spans: [] };
    this.#current = trace;
    return trace;
  }

  end(trace: RequestTrace): void {
    if (this.#current === trace) this.#current = undefined;
  }

  recordCall(span: Span): void {
    const trace = this.#current;
    if (trace !== undefined && trace.spans.length < MAX_SPANS) trace.spans.push(span);
  }

  send(
    trace: RequestTrace,
    root: Omit<Span, "aws">,
    annotations?: Readonly<Record<string, string | number>>,
  ): void {
    const { context } = trace as XRayTrace;
    // Every id at once: one call for random bytes costs about what eight do.
    const ids = new SubsegmentIds(trace.spans.length + 1);
    const document = {
      ...subsegment(root, ids),
      // Indexed by X-Ray: `annotation.model = "resnet"` finds a model's traces.
      ...(annotations === undefined ? {} : { annotations }),
      trace_id: context.traceId,
      parent_id: context.parentId,
      type: "subsegment",
      subsegments: nest(trace.spans, ids),
    };
    this.#socket ??= createSocket();
    const datagram = Buffer.from(DAEMON_HEADER + JSON.stringify(document));
    // Best effort, as the X-Ray SDKs send: a lost datagram costs a trace, never the function.
    this.#socket.send(datagram, this.#daemon.port, this.#daemon.host, () => undefined);
  }

  /** Closes the socket (tests; Lambda just freezes the environment). */
  close(): void {
    this.#socket?.close();
    this.#socket = undefined;
  }
}

function createSocket(): Socket {
  const socket = process.getBuiltinModule("node:dgram").createSocket("udp4");
  socket.on("error", () => undefined);
  // Never what keeps a process (a test, the local stack) from exiting.
  socket.unref();
  return socket;
}

/** `Root=1-…;Parent=…;Sampled=1`: the context when X-Ray sampled this invocation. */
export function sampledContext(header: string | undefined): TraceContext | undefined {
  if (header === undefined || !header.includes("Sampled=1")) return undefined;
  let traceId: string | undefined;
  let parentId: string | undefined;
  for (const field of header.split(";")) {
    const [key, value] = field.split("=", 2);
    if (key === "Root") traceId = value;
    else if (key === "Parent") parentId = value;
  }
  return traceId === undefined || parentId === undefined ? undefined : { traceId, parentId };
}

/** `169.254.79.129:2000`, or `udp:127.0.0.1:2000 tcp:127.0.0.1:2000`. */
export function parseDaemonAddress(address: string | undefined): { host: string; port: number } {
  const udp = (address ?? "").split(/\s+/).find((part) => !part.startsWith("tcp:")) ?? "";
  const match = /^(?:udp:)?([^:\s]+):(\d+)$/.exec(udp);
  if (match === null) return { host: "127.0.0.1", port: 2000 };
  return { host: match[1] as string, port: Number(match[2]) };
}

/** Phases under the root in time order, and each AWS call under the innermost phase that spans it. */
function nest(spans: readonly Span[], ids: SubsegmentIds): Subsegment[] {
  const phases = spans.filter((span) => span.aws === undefined).sort((a, b) => a.start - b.start);
  const children = new Map<Span, Subsegment[]>(phases.map((phase) => [phase, []]));
  const top: Subsegment[] = [];
  for (const call of spans) {
    if (call.aws === undefined) continue;
    const phase = phases.findLast((candidate) => candidate.start <= call.start && call.end <= candidate.end);
    (phase === undefined ? top : (children.get(phase) as Subsegment[])).push(subsegment(call, ids));
  }
  for (const phase of phases) {
    const calls = children.get(phase) as Subsegment[];
    top.push(calls.length === 0 ? subsegment(phase, ids) : { ...subsegment(phase, ids), subsegments: calls });
  }
  return top.sort((a, b) => a.start_time - b.start_time);
}

/** X-Ray's subsegment ids, 64 random bits each in hex, drawn for a whole document at once. */
class SubsegmentIds {
  readonly #hex: string;
  #next = 0;

  constructor(count: number) {
    this.#hex = process
      .getBuiltinModule("node:crypto")
      .randomBytes(8 * count)
      .toString("hex");
  }

  take(): string {
    const id = this.#hex.slice(this.#next * 16, this.#next * 16 + 16);
    this.#next++;
    return id;
  }
}

function subsegment(span: Span | Omit<Span, "aws">, ids: SubsegmentIds): Subsegment {
  const document: Subsegment = {
    name: span.name,
    id: ids.take(),
    start_time: epochSeconds(span.start),
    end_time: epochSeconds(span.end),
  };
  return "aws" in span && span.aws !== undefined ? { ...document, ...awsCall(span.aws) } : document;
}

/** X-Ray's flags: error for 4xx, throttle with it for throttling, fault for 5xx and no answer. */
function awsCall(call: AwsCallSpan): Partial<Subsegment> {
  const { status, errorCode } = call;
  const throttled =
    status === 429 || (errorCode !== undefined && /Throttl|SlowDown|LimitExceeded/.test(errorCode));
  return {
    name: call.service,
    namespace: "aws",
    aws: { operation: call.operation, region: call.region, retries: call.retries },
    ...(status === undefined ? {} : { http: { response: { status } } }),
    ...(throttled ? { error: true, throttle: true } : {}),
    ...(!throttled && status !== undefined && status >= 400 && status < 500 ? { error: true } : {}),
    ...(status === undefined || status >= 500 ? { fault: true } : {}),
    ...(errorCode === undefined ? {} : { cause: { exceptions: [{ message: errorCode }] } }),
  };
}

function epochSeconds(performanceMs: number): number {
  return (performance.timeOrigin + performanceMs) / 1000;
}
