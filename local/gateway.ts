/**
 * Local stand-in for the API Gateway REST API: a `node:http` server that turns each request into the
 * Lambda proxy event (payload v1) a `/{proxy+}` resource with a Lambda proxy integration sends, and the
 * handler's result back into HTTP.
 *
 *   const gateway = await startGateway({ port: 3000, handler, apiKey, adminKey });
 *   gateway.url    // "http://127.0.0.1:3000"
 *   await gateway.close();
 *
 * What it reproduces from API Gateway:
 * - access like a usage plan: `GET /v2/health/live|ready` are open, `/admin/*` takes `x-api-key: <adminKey>`
 *   only, everything else `x-api-key: <apiKey>` only; otherwise 403 `{"message":"Forbidden"}`.
 * - not from API Gateway: with `metrics`, `GET /metrics` answers that Prometheus text itself, to the admin
 *   key only (in AWS metrics go to CloudWatch; there is no such route).
 *   `/` has no resource (only `/{proxy+}` exists): 403 `{"message":"Missing Authentication Token"}`.
 * - 413 `{"message":"Request Entity Too Large: ..."}` past `maxBodyBytes` (API Gateway's 10 MiB), or when the
 *   Lambda event carrying the body (JSON, base64 for binary) would exceed `maxLambdaPayloadBytes` (Lambda's 6 MiB
 *   synchronous payload); the message names the limit. A refused body is drained first (up to twice
 *   `maxBodyBytes` or `REFUSED_BODY_DRAIN_MS`) so the client reads the 413 instead of a reset; past that bound
 *   the answer carries `Connection: close` and the socket is half-closed before it is cut.
 * - 414 `{"message":"Request-URI Too Long: ..."}` past `maxUrlLength` (a Regional REST API's 10240-character URL) and
 *   431 `{"message":"Request Header Fields Too Large: ..."}` past `maxHeaderBytes` (its 10240 bytes of headers); the
 *   message names the limit.
 * - 408 when the body does not arrive within `bodyTimeoutMs` (default 10 s), or the headers within
 *   `headersTimeoutMs` (default 10 s).
 * - what Node's HTTP parser refuses (a request head past twice both limits, a malformed request line, header or
 *   chunk) is answered like every other refusal: JSON `{"message"}`, `x-amzn-ErrorType`, `Connection: close`.
 * - 502 `{"message":"Internal server error"}` when the handler throws or returns a malformed result, 502 with a
 *   message naming the limit when its serialized result exceeds `maxLambdaPayloadBytes` (Lambda's
 *   ResponseSizeTooLarge), 504 `{"message":"Endpoint request timed out"}` past the 29 s integration timeout.
 * - request bodies arrive base64-encoded whatever their content type, as the REST API's binary media types
 *   (`*\/*`, lib/inference-api.ts) make API Gateway send them; response bodies are base64-decoded when
 *   `isBase64Encoded`; `Content-Type` defaults to application/json.
 * Paths are served without the stage prefix (`/v2/...`); `requestContext.path` carries `/<stage>/v2/...`.
 *
 * Also not from API Gateway, and open without a key: with `console`, `GET /console/` and its assets (the web
 * console, static files with a tight Content-Security-Policy; every API call the page makes still takes the keys);
 * with `storage`, presigned S3 requests under `/<bucket>/` (the upload URLs the admin API hands the console) are
 * forwarded unchanged to the S3 endpoint, whose signature gate checks them, so a browser uploads from the console's
 * own origin.
 */
import { randomUUID } from "node:crypto";
import {
  createServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { gzipSync } from "node:zlib";
import type { APIGatewayProxyEvent, APIGatewayProxyResult, Context } from "aws-lambda";
import * as z from "zod";
import { PROMETHEUS_CONTENT_TYPE } from "#core/metrics/prometheus.ts";
import { safeDecode } from "#core/v2/routes.ts";
import { CONSOLE_HEADERS, consoleCsp } from "../console/headers.ts";
import { readBody } from "../containers/gpu/read-body.ts";
import { proxyRequest } from "./proxy.ts";

export type ProxyHandler = (event: APIGatewayProxyEvent, context: Context) => Promise<APIGatewayProxyResult>;

export interface GatewayOptions {
  readonly port: number;
  /** @default "127.0.0.1" */
  readonly host?: string;
  readonly handler: ProxyHandler;
  /** Serves `/admin/*`, as the admin function behind its own IAM-authorized resource does in AWS. */
  readonly adminHandler?: ProxyHandler;
  /** Opens every route except `/admin/*` (the usage plan's API key). */
  readonly apiKey: string;
  /** Opens `/admin/*` only (stands in for IAM auth), and `/metrics`. */
  readonly adminKey: string;
  /** Prometheus text exposition for `GET /metrics` (admin key); without it the path goes to `handler`. */
  readonly metrics?: () => string;
  /** @default 10 MiB, API Gateway REST's payload limit */
  readonly maxBodyBytes?: number;
  /** Largest invocation event and function result, each way; @default 6 MiB, Lambda's synchronous payload limit */
  readonly maxLambdaPayloadBytes?: number;
  /** Longest request target (path and query) in characters; @default 10240, a Regional REST API's URL limit */
  readonly maxUrlLength?: number;
  /** Largest set of request headers, as `name: value\r\n` lines; @default 10240, API Gateway REST's header limit */
  readonly maxHeaderBytes?: number;
  /** How long a request body may take to arrive once the headers are in; @default 10_000 */
  readonly bodyTimeoutMs?: number;
  /** How long the request headers may take to arrive (408 past it); @default 10_000 */
  readonly headersTimeoutMs?: number;
  /** @default "local" */
  readonly stage?: string;
  /** @default 29_000, API Gateway REST's integration timeout */
  readonly integrationTimeoutMs?: number;
  /** Where handler failures are reported (CloudWatch's role); @default console.error */
  readonly onHandlerError?: (error: unknown, event: APIGatewayProxyEvent) => void;
  /** The web console, served under `/console/` without a key. @default none (the path goes to `handler`) */
  readonly console?: StaticSite;
  /** Forwards presigned requests for this bucket's objects (`/<bucket>/...`) to its S3 endpoint. @default none */
  readonly storage?: { readonly bucket: string; readonly endpoint: string };
}

/** A static site's files by their path under its prefix (`index.html`, `main-4F2A.js`), loaded on first use. */
export interface StaticSite {
  files(): Promise<ReadonlyMap<string, StaticFile>>;
}

export interface StaticFile {
  readonly body: Buffer;
  readonly contentType: string;
  /** Its name carries its content's hash: cached for a year. */
  readonly immutable: boolean;
}

export interface Gateway {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

export const LOCAL_FUNCTION_NAME = "maas-inference-local";
const LAMBDA_TIMEOUT_MS = 30_000;
const MIB = 1024 * 1024;
const DEFAULT_MAX_BODY_BYTES = 10 * MIB;
const DEFAULT_MAX_LAMBDA_PAYLOAD_BYTES = 6 * MIB;
// API Gateway REST quotas (docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-execution-service-limits-table.html):
// "Length, in characters, of the URL for a Regional API" (ours is Regional; edge-optimized and private take 8192) and
// "Total combined size of all header values, including header names, values, any line terminators, and whitespaces".
const DEFAULT_MAX_URL_LENGTH = 10_240;
const DEFAULT_MAX_HEADER_BYTES = 10_240;
const DEFAULT_INTEGRATION_TIMEOUT_MS = 29_000;
const DEFAULT_BODY_TIMEOUT_MS = 10_000;
const DEFAULT_HEADERS_TIMEOUT_MS = 10_000;
const OPEN_ROUTES = new Set(["GET /v2/health/live", "GET /v2/health/ready"]);
const METRICS_PATH = "/metrics";
const CONSOLE_PATH = "/console";
/** The local console's policy: the same for every page, built once. */
const CONSOLE_CSP = consoleCsp();
const ACCOUNT_ID = "000000000000";
const REGION = "us-east-1";
// How long a refused body is drained before the answer goes out anyway (with Connection: close).
const REFUSED_BODY_DRAIN_MS = 2_000;
// How long a half-closed socket keeps discarding a client's upload before it is cut: long enough to read the answer.
const LINGER_MS = 1_000;
// In-flight requests get this long to finish after close() before their connections are cut.
const CLOSE_GRACE_MS = 2_000;

/** Thrown when a local server's port is taken; names the variable that moves it. */
export class PortInUseError extends Error {
  constructor(
    readonly service: string,
    readonly port: number,
    readonly envVar: string,
  ) {
    super(`${service} cannot listen on port ${port}: it is already in use. Set ${envVar} to a free port.`);
    this.name = "PortInUseError";
  }
}

/** Lambda's ResponseSizeTooLarge: the function's result does not fit a synchronous invocation's payload. */
export class ResponseTooLargeError extends Error {
  readonly status = 502;
  constructor(
    readonly bytes: number,
    readonly limit: number,
  ) {
    super(
      `Response too large: the function's response is ${bytes} bytes; ` +
        `Lambda returns at most ${describeBytes(limit)} per synchronous invocation`,
    );
    this.name = "ResponseTooLargeError";
  }
}

/** Listens and resolves the bound port; EADDRINUSE becomes a PortInUseError instead of an 'error' event. */
export function listen(
  server: Server,
  port: number,
  host: string,
  what: { service: string; envVar: string },
): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      server.off("listening", onListening);
      reject(error.code === "EADDRINUSE" ? new PortInUseError(what.service, port, what.envVar) : error);
    };
    const onListening = () => {
      server.off("error", onError);
      resolve((server.address() as AddressInfo).port);
    };
    server.once("error", onError);
    server.once("listening", onListening);
    server.listen(port, host);
  });
}

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const settings: Settings = {
    handler: options.handler,
    adminHandler: options.adminHandler,
    metrics: options.metrics,
    apiKey: options.apiKey,
    adminKey: options.adminKey,
    maxBodyBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
    maxLambdaPayloadBytes: options.maxLambdaPayloadBytes ?? DEFAULT_MAX_LAMBDA_PAYLOAD_BYTES,
    maxUrlLength: options.maxUrlLength ?? DEFAULT_MAX_URL_LENGTH,
    maxHeaderBytes: options.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES,
    bodyTimeoutMs: options.bodyTimeoutMs ?? DEFAULT_BODY_TIMEOUT_MS,
    stage: options.stage ?? "local",
    integrationTimeoutMs: options.integrationTimeoutMs ?? DEFAULT_INTEGRATION_TIMEOUT_MS,
    onHandlerError: options.onHandlerError ?? ((error) => console.error("[gateway] handler failed:", error)),
    console: options.console === undefined ? undefined : gzippedSite(options.console),
    storage: options.storage,
  };
  const host = options.host ?? "127.0.0.1";
  const headersTimeoutMs = options.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS;
  const serverOptions = {
    headersTimeout: headersTimeoutMs,
    // A backstop only: the body timeout answers first, with a message.
    requestTimeout: headersTimeoutMs + settings.bodyTimeoutMs + REFUSED_BODY_DRAIN_MS + LINGER_MS,
    // Node checks both timeouts on this interval (30 s by default), which would blur them.
    connectionsCheckingInterval: Math.min(1_000, headersTimeoutMs),
    // Node counts the URL, header names and values; twice API Gateway's limits lets handleRequest measure and name
    // most oversize heads itself (Node's 16 KiB default would even refuse a 9 KB URL with 9 KB of headers).
    maxHeaderSize: 2 * (settings.maxUrlLength + settings.maxHeaderBytes),
  };
  const clientErrors = new ClientErrorAnswerer(settings, serverOptions);
  const server = createServer(serverOptions, (req, res) => {
    clientErrors.track(req.socket, res);
    handleRequest(settings, req, res).catch((error: unknown) => {
      // The socket was answered and cut by the client-error path (e.g. a malformed chunk mid-body).
      if (clientErrors.answered(req.socket)) return;
      // Only reachable on a bug in this file; answer like API Gateway rather than dropping the socket.
      console.error("[gateway] unexpected failure:", error);
      if (!res.headersSent)
        sendGatewayError(res, 500, "Internal server error", "InternalServerErrorException");
      else res.destroy();
    });
  });
  server.on("clientError", (error: ParserError, socket: Duplex) => clientErrors.answer(error, socket));
  const port = await listen(server, options.port, host, { service: "The API gateway", envVar: "PORT" });
  const urlHost = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host.includes(":") ? `[${host}]` : host;

  return {
    url: `http://${urlHost}:${port}`,
    port,
    close: () =>
      new Promise<void>((resolve, reject) => {
        const cut = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
        cut.unref();
        server.close((error) => {
          clearTimeout(cut);
          if (error) reject(error);
          else resolve();
        });
        server.closeIdleConnections();
      }),
  };
}

interface Settings {
  readonly handler: ProxyHandler;
  readonly adminHandler: ProxyHandler | undefined;
  readonly metrics: (() => string) | undefined;
  readonly apiKey: string;
  readonly adminKey: string;
  readonly maxBodyBytes: number;
  readonly maxLambdaPayloadBytes: number;
  readonly maxUrlLength: number;
  readonly maxHeaderBytes: number;
  readonly bodyTimeoutMs: number;
  readonly stage: string;
  readonly integrationTimeoutMs: number;
  readonly onHandlerError: (error: unknown, event: APIGatewayProxyEvent) => void;
  readonly console: (() => Promise<ReadonlyMap<string, GzippedFile>>) | undefined;
  readonly storage: { readonly bucket: string; readonly endpoint: string } | undefined;
}

async function handleRequest(settings: Settings, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const requestTimeEpoch = Date.now();
  const requestId = randomUUID();
  res.setHeader("x-amzn-RequestId", requestId);
  const method = req.method ?? "GET";
  const url = req.url ?? "/";
  // Node decodes the head as latin1, so a string's length is the bytes sent.
  if (url.length > settings.maxUrlLength)
    return refuseBody(settings, req, res, urlLimitRefusal(`${url.length} characters`, settings.maxUrlLength));
  const headerBytes = measureHeaders(req.rawHeaders);
  if (headerBytes > settings.maxHeaderBytes)
    return refuseBody(
      settings,
      req,
      res,
      headerLimitRefusal(`${headerBytes} bytes`, settings.maxHeaderBytes),
    );
  const target = new URL(url, "http://gateway.local");
  const path = target.pathname;

  if (settings.console !== undefined && (path === CONSOLE_PATH || path.startsWith(`${CONSOLE_PATH}/`)))
    return serveConsole(settings.console, req, res, method, path);
  const { storage } = settings;
  if (
    storage !== undefined &&
    path.startsWith(`/${storage.bucket}/`) &&
    target.searchParams.has("X-Amz-Signature") &&
    (method === "PUT" || method === "POST")
  )
    return forwardToStorage(storage.endpoint, req, res);

  if (path === "/")
    return discardAndSend(
      req,
      res,
      403,
      "Missing Authentication Token",
      "MissingAuthenticationTokenException",
    );
  const headers = collectHeaders(req.rawHeaders);
  const presentedKey = findHeader(headers.single, "x-api-key");
  const access = checkAccess(settings, method, path, presentedKey);
  if (access === "denied") return discardAndSend(req, res, 403, "Forbidden", "ForbiddenException");
  if (access === "metrics" && settings.metrics !== undefined)
    return sendMetrics(settings.metrics, req, res, method);

  const declaredLength = Number(req.headers["content-length"] ?? "0");
  if (declaredLength > settings.maxBodyBytes)
    return refuseBody(
      settings,
      req,
      res,
      gatewayLimitRefusal(`${declaredLength} bytes`, settings.maxBodyBytes),
    );
  // The event carries the body at least byte for byte (escaped or base64), so a longer body cannot fit.
  if (declaredLength > settings.maxLambdaPayloadBytes)
    return refuseBody(
      settings,
      req,
      res,
      lambdaLimitRefusal(`the body is ${declaredLength} bytes`, settings.maxLambdaPayloadBytes),
    );
  const body = await readBodyWithin(req, settings.maxBodyBytes, settings.bodyTimeoutMs);
  if (body === "too-large")
    return refuseBody(
      settings,
      req,
      res,
      gatewayLimitRefusal(`more than ${settings.maxBodyBytes} bytes`, settings.maxBodyBytes),
    );
  if (body === "timed-out") return refuseBody(settings, req, res, bodyTimeoutRefusal(settings.bodyTimeoutMs));

  const sourceIp = (req.socket.remoteAddress ?? "127.0.0.1").replace(/^::ffff:/, "");
  addForwardingHeaders(headers, sourceIp, req.socket.localPort ?? 0);
  const query = collectQuery(target.searchParams);
  const proxy = path.slice(1);
  const event: APIGatewayProxyEvent = {
    resource: "/{proxy+}",
    path,
    httpMethod: method,
    headers: headers.single,
    multiValueHeaders: headers.multi,
    queryStringParameters: query.single,
    multiValueQueryStringParameters: query.multi,
    pathParameters: { proxy: safeDecode(proxy) },
    stageVariables: null,
    body: body.length === 0 ? null : body.toString("base64"),
    isBase64Encoded: body.length > 0,
    requestContext: {
      accountId: ACCOUNT_ID,
      apiId: "local",
      authorizer: null,
      domainName: findHeader(headers.single, "host") ?? "localhost",
      extendedRequestId: requestId,
      httpMethod: method,
      identity: {
        accessKey: null,
        accountId: null,
        apiKey: access === "open" ? null : (presentedKey ?? null),
        apiKeyId: access === "open" ? null : access,
        caller: null,
        clientCert: null,
        cognitoAuthenticationProvider: null,
        cognitoAuthenticationType: null,
        cognitoIdentityId: null,
        cognitoIdentityPoolId: null,
        principalOrgId: null,
        sourceIp,
        user: null,
        userAgent: findHeader(headers.single, "user-agent") ?? null,
        userArn: null,
      },
      path: `/${settings.stage}${path}`,
      protocol: `HTTP/${req.httpVersion}`,
      requestId,
      requestTime: formatRequestTime(new Date(requestTimeEpoch)),
      requestTimeEpoch,
      resourceId: "proxy",
      resourcePath: "/{proxy+}",
      stage: settings.stage,
    },
  };

  // Lambda measures the invocation payload, which is the event as JSON.
  const eventBytes = Buffer.byteLength(JSON.stringify(event));
  if (eventBytes > settings.maxLambdaPayloadBytes)
    return refuseBody(
      settings,
      req,
      res,
      lambdaLimitRefusal(
        `its Lambda event is ${eventBytes} bytes, the body base64-encoded`,
        settings.maxLambdaPayloadBytes,
      ),
    );

  const handler = access === "admin" ? (settings.adminHandler ?? settings.handler) : settings.handler;
  const outcome = await invoke(settings, handler, event, lambdaContext(requestId, requestTimeEpoch));
  if (outcome.kind === "timeout")
    return sendGatewayError(res, 504, "Endpoint request timed out", "IntegrationTimeout");
  if (outcome.kind === "failed") {
    settings.onHandlerError(outcome.error, event);
    const message =
      outcome.error instanceof ResponseTooLargeError ? outcome.error.message : "Internal server error";
    return sendGatewayError(res, 502, message, "InternalServerErrorException");
  }
  sendProxyResult(res, outcome.result);
}

type Access = "open" | "inference" | "admin" | "metrics" | "denied";

function checkAccess(settings: Settings, method: string, path: string, key: string | undefined): Access {
  if (OPEN_ROUTES.has(`${method} ${path}`)) return "open";
  if (path === "/admin" || path.startsWith("/admin/")) return key === settings.adminKey ? "admin" : "denied";
  if (path === METRICS_PATH && settings.metrics !== undefined)
    return key === settings.adminKey ? "metrics" : "denied";
  return key === settings.apiKey ? "inference" : "denied";
}

/** `GET /metrics`: the Prometheus text, answered here rather than by a function. */
function sendMetrics(metrics: () => string, req: IncomingMessage, res: ServerResponse, method: string): void {
  if (method !== "GET" && method !== "HEAD") {
    res.setHeader("allow", "GET, HEAD");
    discardAndSend(req, res, 405, "Method Not Allowed", "MethodNotAllowedException");
    return;
  }
  req.resume();
  const body = Buffer.from(metrics(), "utf8");
  res.writeHead(200, { "Content-Type": PROMETHEUS_CONTENT_TYPE, "Content-Length": body.length });
  res.end(method === "HEAD" ? undefined : body);
}

interface GzippedFile extends StaticFile {
  readonly gzip: Buffer;
}

/** The site's files, each compressed once when they are first loaded. */
function gzippedSite(site: StaticSite): () => Promise<ReadonlyMap<string, GzippedFile>> {
  let loading: Promise<ReadonlyMap<string, GzippedFile>> | undefined;
  return () => {
    if (loading === undefined) {
      loading = site
        .files()
        .then(
          (files) =>
            new Map([...files].map(([name, file]) => [name, { ...file, gzip: gzipSync(file.body) }])),
        );
      // A failed build is tried again on the next request rather than kept.
      loading.catch(() => {
        loading = undefined;
      });
    }
    return loading;
  };
}

/** `GET /console/...`: the console's static files, with its security headers. */
async function serveConsole(
  site: () => Promise<ReadonlyMap<string, GzippedFile>>,
  req: IncomingMessage,
  res: ServerResponse,
  method: string,
  path: string,
): Promise<void> {
  req.resume();
  res.setHeader("Content-Security-Policy", CONSOLE_CSP);
  for (const [name, value] of Object.entries(CONSOLE_HEADERS)) res.setHeader(name, value);
  if (method !== "GET" && method !== "HEAD") {
    res.setHeader("Allow", "GET, HEAD");
    return sendText(res, 405, "Method Not Allowed");
  }
  // Relative asset URLs resolve against the directory.
  if (path === CONSOLE_PATH) {
    res.writeHead(308, { Location: `${CONSOLE_PATH}/`, "Content-Length": 0 });
    res.end();
    return;
  }
  let files: ReadonlyMap<string, GzippedFile>;
  try {
    files = await site();
  } catch (error) {
    console.error("[gateway] the console could not be built:", error);
    return sendText(res, 500, "The console could not be built: see the stack's log.");
  }
  const name = path.slice(CONSOLE_PATH.length + 1) || "index.html";
  const file = files.get(name);
  if (file === undefined) return sendText(res, 404, `Not Found: ${name}`);
  const gzip = /\bgzip\b/.test(String(req.headers["accept-encoding"] ?? ""));
  const body = gzip ? file.gzip : file.body;
  res.writeHead(200, {
    "Content-Type": file.contentType,
    "Content-Length": body.length,
    "Cache-Control": file.immutable ? "public, max-age=31536000, immutable" : "no-cache",
    Vary: "Accept-Encoding",
    ...(gzip ? { "Content-Encoding": "gzip" } : {}),
  });
  res.end(method === "HEAD" ? undefined : body);
}

function sendText(res: ServerResponse, status: number, text: string): void {
  const body = Buffer.from(`${text}\n`, "utf8");
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": body.length });
  res.end(body);
}

// Hop-by-hop headers: they describe one connection, not the request.
const HOP_HEADERS = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"]);

/**
 * A presigned S3 request, streamed to the S3 endpoint as sent except for its Host, which names the endpoint the
 * URL was signed for: the endpoint checks the signature, this only carries the bytes (no size limit of ours).
 */
function forwardToStorage(endpoint: string, req: IncomingMessage, res: ServerResponse): void {
  const upstreamUrl = new URL(endpoint);
  proxyRequest(
    req,
    res,
    {
      host: upstreamUrl.hostname,
      port: upstreamUrl.port,
      hostHeader: upstreamUrl.host,
      dropHeaders: HOP_HEADERS,
    },
    undefined,
    (unanswered) => sendGatewayError(unanswered, 502, "The S3 endpoint did not answer", "BadGateway"),
  );
}

interface HeaderMaps {
  single: Record<string, string>;
  multi: Record<string, string[]>;
}

/** Keeps the case the client sent (as API Gateway does); a repeated header keeps its first spelling. */
function collectHeaders(rawHeaders: string[]): HeaderMaps {
  const single: Record<string, string> = {};
  const multi: Record<string, string[]> = {};
  const spelling = new Map<string, string>();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const sent = rawHeaders[i]!;
    const value = rawHeaders[i + 1]!;
    const name = spelling.get(sent.toLowerCase()) ?? sent;
    spelling.set(sent.toLowerCase(), name);
    single[name] = value;
    multi[name] = [...(multi[name] ?? []), value];
  }
  return { single, multi };
}

/** The headers' size as API Gateway counts it, names, values and separators, each line as `name: value\r\n`. */
function measureHeaders(rawHeaders: string[]): number {
  let bytes = 0;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2)
    bytes += rawHeaders[i]!.length + rawHeaders[i + 1]!.length + 4;
  return bytes;
}

function findHeader(headers: Record<string, string>, lowerName: string): string | undefined {
  for (const [name, value] of Object.entries(headers)) {
    if (name.toLowerCase() === lowerName) return value;
  }
  return undefined;
}

function addForwardingHeaders(headers: HeaderMaps, sourceIp: string, port: number): void {
  const added: Record<string, string> = {
    "X-Forwarded-For": sourceIp,
    "X-Forwarded-Port": String(port),
    "X-Forwarded-Proto": "http",
  };
  for (const [name, value] of Object.entries(added)) {
    if (findHeader(headers.single, name.toLowerCase()) !== undefined) continue;
    headers.single[name] = value;
    headers.multi[name] = [value];
  }
}

function collectQuery(params: URLSearchParams): {
  single: Record<string, string> | null;
  multi: Record<string, string[]> | null;
} {
  const single: Record<string, string> = {};
  const multi: Record<string, string[]> = {};
  for (const [name, value] of params) {
    single[name] = value;
    multi[name] = [...(multi[name] ?? []), value];
  }
  return Object.keys(single).length === 0 ? { single: null, multi: null } : { single, multi };
}

interface Refusal {
  readonly status: number;
  readonly message: string;
  readonly errorType: string;
  /** Whether the rest of the body is worth draining; a trickling client is not waited for again. */
  readonly drain: boolean;
}

function gatewayLimitRefusal(size: string, limit: number): Refusal {
  return {
    status: 413,
    message: `Request Entity Too Large: the request is ${size}; API Gateway takes at most ${describeBytes(limit)}`,
    errorType: "RequestEntityTooLarge",
    drain: true,
  };
}

function lambdaLimitRefusal(size: string, limit: number): Refusal {
  return {
    status: 413,
    message:
      `Request Entity Too Large: ${size}; ` +
      `Lambda takes at most ${describeBytes(limit)} per synchronous invocation. ` +
      "Send tensors as binary data (Inference-Header-Content-Length), a quarter of their JSON, " +
      "or larger inputs through asynchronous inference (POST /v2/uploads, then infer with Prefer: respond-async)",
    errorType: "RequestEntityTooLarge",
    drain: true,
  };
}

function urlLimitRefusal(size: string, limit: number): Refusal {
  return {
    status: 414,
    message: `Request-URI Too Long: the URL is ${size}; API Gateway takes at most ${limit} characters`,
    errorType: "RequestUriTooLong",
    drain: true,
  };
}

function headerLimitRefusal(size: string, limit: number): Refusal {
  return {
    status: 431,
    message: `Request Header Fields Too Large: the headers are ${size}; API Gateway takes at most ${limit} bytes`,
    errorType: "RequestHeaderFieldsTooLarge",
    drain: true,
  };
}

function bodyTimeoutRefusal(timeoutMs: number): Refusal {
  return {
    status: 408,
    message: `Request Timeout: the request body did not arrive within ${timeoutMs} ms`,
    errorType: "RequestTimeout",
    drain: false,
  };
}

function describeBytes(bytes: number): string {
  return bytes % MIB === 0 ? `${bytes / MIB} MB (${bytes} bytes)` : `${bytes} bytes`;
}

function readBodyWithin(
  req: IncomingMessage,
  limit: number,
  timeoutMs: number,
): Promise<Buffer | "too-large" | "timed-out"> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<"timed-out">((resolve) => {
    timer = setTimeout(() => resolve("timed-out"), timeoutMs);
  });
  return Promise.race([readBody(req, limit), timedOut]).finally(() => clearTimeout(timer));
}

/** Answers without the handler, after draining what the client is still sending so it reads the answer. */
async function refuseBody(
  settings: Settings,
  req: IncomingMessage,
  res: ServerResponse,
  refusal: Refusal,
): Promise<void> {
  const drained =
    req.readableEnded ||
    (refusal.drain && (await drain(req, 2 * settings.maxBodyBytes, REFUSED_BODY_DRAIN_MS)));
  if (!drained) closeAfterAnswer(req, res);
  sendGatewayError(res, refusal.status, refusal.message, refusal.errorType);
}

/** Discards the body; true once it has ended, false when it outruns either bound first. */
function drain(req: IncomingMessage, maxBytes: number, maxMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let discarded = 0;
    const finish = (ended: boolean) => {
      clearTimeout(timer);
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("close", onClose);
      resolve(ended);
    };
    const onData = (chunk: Buffer) => {
      discarded += chunk.length;
      if (discarded > maxBytes) finish(false);
    };
    const onEnd = () => finish(true);
    const onClose = () => finish(req.readableEnded);
    const timer = setTimeout(() => finish(false), maxMs);
    req.on("data", onData);
    req.on("end", onEnd);
    req.on("close", onClose);
    req.resume();
  });
}

/**
 * Marks the answer `Connection: close` and closes gently: Node would destroy the socket once the answer is
 * flushed, and a client still uploading into a destroyed socket gets a reset before it reads the answer.
 */
function closeAfterAnswer(req: IncomingMessage, res: ServerResponse): void {
  const socket = req.socket;
  res.setHeader("Connection", "close");
  req.resume();
  socket.destroySoon = () => endThenCut(socket);
}

/** Half-closes after `last` and keeps discarding what the client still sends, so it reads the answer, then cuts. */
function endThenCut(socket: Duplex, last?: string): void {
  socket.end(last);
  socket.resume();
  const cut = setTimeout(() => socket.destroy(), LINGER_MS);
  cut.unref();
  socket.once("close", () => clearTimeout(cut));
}

/** What Node's HTTP parser reports to `clientError`: `code` is `HPE_*` for a parse error. */
type ParserError = Error & { code?: string; bytesParsed?: number; rawPacket?: unknown };

// Parse errors worth naming; any other HPE_* code is "the request is not valid HTTP/1.1".
const MALFORMED: Readonly<Record<string, string>> = {
  HPE_INVALID_METHOD: "the request line has no valid method",
  HPE_INVALID_URL: "the request line has a malformed URL",
  HPE_INVALID_VERSION: "the request line has no valid HTTP version",
  HPE_INVALID_HEADER_TOKEN: "a header is malformed",
  HPE_INVALID_CONTENT_LENGTH: "the Content-Length header is invalid",
  HPE_UNEXPECTED_CONTENT_LENGTH: "Content-Length and Transfer-Encoding are both set",
  HPE_INVALID_TRANSFER_ENCODING: "the Transfer-Encoding header is invalid",
  HPE_INVALID_CHUNK_SIZE: "the chunked body is malformed",
};

/**
 * Answers what Node's HTTP parser refuses before a request reaches handleRequest, as API Gateway answers its
 * refusals; without it Node writes a bare status line (431 or 400) with no body.
 */
class ClientErrorAnswerer {
  // The parser reports again for every further chunk of an answered socket; only the first is answered.
  private readonly answeredSockets = new WeakSet<Duplex>();
  private readonly responses = new WeakMap<Duplex, Set<ServerResponse>>();

  constructor(
    private readonly settings: Settings,
    private readonly limits: {
      readonly headersTimeout: number;
      readonly requestTimeout: number;
      readonly maxHeaderSize: number;
    },
  ) {}

  /** Remembers a response in flight: once it has sent its head, nothing else may be written to its socket. */
  track(socket: Duplex, res: ServerResponse): void {
    const inFlight = this.responses.get(socket) ?? new Set<ServerResponse>();
    this.responses.set(socket, inFlight);
    inFlight.add(res);
    res.once("close", () => inFlight.delete(res));
  }

  answered(socket: Duplex): boolean {
    return this.answeredSockets.has(socket);
  }

  answer(error: ParserError, socket: Duplex): void {
    if (this.answeredSockets.has(socket)) return;
    this.answeredSockets.add(socket);
    const inFlight = [...(this.responses.get(socket) ?? [])];
    const refusal = this.refusalFor(error, inFlight.length > 0);
    // A reset or otherwise dead socket has no one to answer; a started response must not be corrupted.
    if (refusal === undefined || !socket.writable || inFlight.some((res) => res.headersSent)) {
      socket.destroy();
      return;
    }
    const body = JSON.stringify({ message: refusal.message });
    endThenCut(
      socket,
      `HTTP/1.1 ${refusal.status} ${STATUS_CODES[refusal.status]}\r\n` +
        "Content-Type: application/json\r\n" +
        `Content-Length: ${Buffer.byteLength(body)}\r\n` +
        `x-amzn-RequestId: ${randomUUID()}\r\n` +
        `x-amzn-ErrorType: ${refusal.errorType}\r\n` +
        "Connection: close\r\n\r\n" +
        body,
    );
  }

  private refusalFor(error: ParserError, headersArrived: boolean): Refusal | undefined {
    const code = error.code ?? "";
    if (code === "ERR_HTTP_REQUEST_TIMEOUT") {
      const [what, ms] = headersArrived
        ? ["request", this.limits.requestTimeout]
        : ["request headers", this.limits.headersTimeout];
      return {
        status: 408,
        message: `Request Timeout: the ${what} did not arrive within ${ms} ms`,
        errorType: "RequestTimeout",
        drain: false,
      };
    }
    if (code === "HPE_HEADER_OVERFLOW") {
      const { maxUrlLength, maxHeaderBytes } = this.settings;
      const bound = this.limits.maxHeaderSize;
      if (overflowedInRequestLine(error))
        return urlLimitRefusal(`at least ${bound} characters`, maxUrlLength);
      return {
        ...headerLimitRefusal(`at least ${bound} bytes`, maxHeaderBytes),
        message:
          `Request Header Fields Too Large: the request line and headers are at least ${bound} bytes; ` +
          `API Gateway takes a URL of at most ${maxUrlLength} characters and headers of at most ${maxHeaderBytes} bytes`,
      };
    }
    if (code === "HPE_CHUNK_EXTENSIONS_OVERFLOW")
      return {
        status: 413,
        message: "Request Entity Too Large: a chunk's extensions are too long",
        errorType: "RequestEntityTooLarge",
        drain: false,
      };
    if (!code.startsWith("HPE_")) return undefined;
    return {
      status: 400,
      message: `Bad Request: ${MALFORMED[code] ?? "the request is not valid HTTP/1.1"}`,
      errorType: "BadRequest",
      drain: false,
    };
  }
}

/**
 * Whether the parser overflowed inside the request line: the packet it was reading starts a request and has no line
 * end before the overflow. A request line sent in small pieces is not recognised, and is answered 431.
 */
function overflowedInRequestLine(error: ParserError): boolean {
  const packet = error.rawPacket;
  if (!Buffer.isBuffer(packet)) return false;
  const parsed = packet.subarray(0, error.bytesParsed ?? packet.length);
  return /^[A-Z]+ /.test(parsed.subarray(0, 32).toString("latin1")) && !parsed.includes("\n");
}

function discardAndSend(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  message: string,
  errorType: string,
): void {
  req.resume();
  sendGatewayError(res, status, message, errorType);
}

function sendGatewayError(res: ServerResponse, status: number, message: string, errorType: string): void {
  const body = JSON.stringify({ message });
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(body),
    "x-amzn-ErrorType": errorType,
  });
  res.end(body);
}

type Outcome = { kind: "ok"; result: ProxyResult } | { kind: "failed"; error: unknown } | { kind: "timeout" };

async function invoke(
  settings: Settings,
  handler: ProxyHandler,
  event: APIGatewayProxyEvent,
  context: Context,
): Promise<Outcome> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Outcome>((resolve) => {
    timer = setTimeout(() => resolve({ kind: "timeout" }), settings.integrationTimeoutMs);
  });
  const run = (async (): Promise<Outcome> => {
    try {
      const returned = await handler(event, context);
      const bytes = Buffer.byteLength(JSON.stringify(returned) ?? "");
      if (bytes > settings.maxLambdaPayloadBytes)
        return { kind: "failed", error: new ResponseTooLargeError(bytes, settings.maxLambdaPayloadBytes) };
      const parsed = proxyResultSchema.safeParse(returned);
      return parsed.success
        ? { kind: "ok", result: parsed.data }
        : { kind: "failed", error: new Error(`Malformed Lambda proxy response: ${parsed.error.message}`) };
    } catch (error) {
      return { kind: "failed", error };
    }
  })();
  try {
    return await Promise.race([run, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const headerValue = z.union([z.string(), z.number(), z.boolean()]);
const proxyResultSchema = z.object({
  statusCode: z.number().int().min(100).max(599),
  headers: z.record(z.string(), headerValue).optional(),
  multiValueHeaders: z.record(z.string(), z.array(headerValue)).optional(),
  body: z.string().optional(),
  isBase64Encoded: z.boolean().optional(),
});
type ProxyResult = z.infer<typeof proxyResultSchema>;

function sendProxyResult(res: ServerResponse, result: ProxyResult): void {
  // API Gateway merges both maps; for a name in both, only the multi-value list survives.
  const merged = new Map<string, { name: string; values: string[] }>();
  for (const [name, value] of Object.entries(result.headers ?? {})) {
    merged.set(name.toLowerCase(), { name, values: [String(value)] });
  }
  for (const [name, values] of Object.entries(result.multiValueHeaders ?? {})) {
    merged.set(name.toLowerCase(), { name, values: values.map(String) });
  }
  if (!merged.has("content-type"))
    merged.set("content-type", { name: "Content-Type", values: ["application/json"] });
  const body = Buffer.from(result.body ?? "", result.isBase64Encoded ? "base64" : "utf8");
  merged.set("content-length", { name: "Content-Length", values: [String(body.length)] });
  for (const { name, values } of merged.values())
    res.setHeader(name, values.length === 1 ? values[0]! : values);
  res.statusCode = result.statusCode;
  res.end(body);
}

export function lambdaContext(requestId: string, startedAt: number): Context {
  const deadline = startedAt + LAMBDA_TIMEOUT_MS;
  const unsupported = () => {
    throw new Error("context.done/fail/succeed are not supported: return a promise");
  };
  return {
    callbackWaitsForEmptyEventLoop: true,
    functionName: LOCAL_FUNCTION_NAME,
    functionVersion: "$LATEST",
    invokedFunctionArn: `arn:aws:lambda:${REGION}:${ACCOUNT_ID}:function:${LOCAL_FUNCTION_NAME}`,
    memoryLimitInMB: "1024",
    awsRequestId: requestId,
    logGroupName: `/aws/lambda/${LOCAL_FUNCTION_NAME}`,
    logStreamName: `${new Date(startedAt).toISOString().slice(0, 10).replaceAll("-", "/")}/[$LATEST]local`,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    done: unsupported,
    fail: unsupported,
    succeed: unsupported,
  };
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** API Gateway's `requestTime` format: `09/Apr/2015:12:34:56 +0000`. */
function formatRequestTime(date: Date): string {
  const two = (n: number) => String(n).padStart(2, "0");
  return (
    `${two(date.getUTCDate())}/${MONTHS[date.getUTCMonth()]}/${date.getUTCFullYear()}:` +
    `${two(date.getUTCHours())}:${two(date.getUTCMinutes())}:${two(date.getUTCSeconds())} +0000`
  );
}
