import type { IncomingHttpHeaders, IncomingMessage } from "node:http";
import type { Readable } from "node:stream";
import { Hash } from "@smithy/hash-node";
import { SignatureV4 } from "@smithy/signature-v4";
import type { AwsCredentialIdentity } from "@smithy/types";
import type { Span } from "#core/metrics/span.ts";
import { type RetryOptions, type RetryPolicy, retryPolicy } from "./retry.ts";

/**
 * Signed requests to S3 and DynamoDB over node:http(s), for the inference function's read paths: the
 * SDK clients cost more to import than the function spends on the calls of a cold start; the SDK's
 * signer alone adds about 15 KB to the bundle. Retries follow the SDK's standard mode (3 attempts,
 * full-jitter backoff).
 */

export type AwsService = "s3" | "dynamodb";

/** Retries: backoff @default 100 ms base, 20 s cap. */
export interface AwsHttpOptions extends RetryOptions {
  /** @default AWS_REGION, then AWS_DEFAULT_REGION */
  readonly region?: string;
  /** @default AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN */
  readonly credentials?: AwsCredentialIdentity;
  /**
   * The service's endpoint, such as an emulator's.
   * @default AWS_ENDPOINT_URL_<SERVICE>, then AWS_ENDPOINT_URL, then the regional endpoint
   */
  readonly endpoint?: string;
  /** Per attempt: until the first response byte, and the longest pause inside a body. @default 5_000 */
  readonly timeoutMs?: number;
  /** Told of every call once it has answered or failed, retries included: X-Ray's subsegments. */
  readonly onCall?: ((span: Span) => void) | undefined;
}

export interface AwsRequest {
  /** For messages: `GetObject`, `Query`... */
  readonly operation: string;
  readonly method: "GET" | "POST" | "PUT";
  readonly url: URL;
  readonly headers?: Readonly<Record<string, string>>;
  /** Absent: an S3 GET (or a PUT without a body, CopyObject), sent with an unsigned payload. */
  readonly body?: string;
  /**
   * Called when an attempt's request has been written to the connection (after the TLS handshake),
   * that is, when the caller only waits for the service: a moment for CPU work the caller needs next.
   */
  readonly onSent?: () => void;
}

export interface AwsResponse<B> {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: B;
}

/** A failed AWS call: the service's error code and message, or the network failure behind it. */
export class AwsHttpError extends Error {
  /** The HTTP status; undefined when no answer came (network failure, timeout). */
  readonly status: number | undefined;
  /** DynamoDB's `__type` after the `#`, S3's `<Code>`, or a Node.js network code (`ECONNRESET`, `TimeoutError`). */
  readonly code: string;
  /** Whether another attempt could succeed: throttling, 5xx, network failures and timeouts. */
  readonly retryable: boolean;

  constructor(
    message: string,
    details: { status: number | undefined; code: string; retryable: boolean },
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "AwsHttpError";
    this.status = details.status;
    this.code = details.code;
    this.retryable = details.retryable;
  }
}

/** Throttling answers 400 on DynamoDB and 503 on S3; only the code tells them from caller mistakes. */
const THROTTLING_CODES = new Set([
  "ThrottlingException",
  "ProvisionedThroughputExceededException",
  "RequestLimitExceeded",
  "SlowDown",
]);
const NETWORK_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EAI_AGAIN",
  "ENETUNREACH",
  "EHOSTUNREACH",
]);
/** Error bodies are short; a proxy's HTML page need not be read whole. */
const MAX_ERROR_BODY = 64 * 1024;
const TIMEOUT_CODE = "TimeoutError";
/** Stands in for the body's digest: S3 GETs are not hashed. */
const UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD";

// The CommonJS modules: building node:http's ESM namespace evaluates its lazy getters, which load
// undici (~30 ms of a cold start) for WebSocket support this client never uses.
const http = process.getBuiltinModule("node:http");
const https = process.getBuiltinModule("node:https");

// One pool per protocol for the whole process: a warm function reuses its TLS connections.
const agents = {
  "http:": new http.Agent({ keepAlive: true, maxSockets: 50 }),
  "https:": new https.Agent({ keepAlive: true, maxSockets: 50 }),
};

/** Region, credentials and endpoint of one service, resolved once; throws when any is missing. */
export class AwsHttpClient {
  readonly service: AwsService;
  readonly region: string;
  readonly endpoint: URL;
  /** True for an endpoint from configuration (an emulator), where S3 buckets go in the path. */
  readonly customEndpoint: boolean;
  readonly #signer: SignatureV4;
  readonly #timeoutMs: number;
  readonly #retry: RetryPolicy;
  readonly #onCall: ((span: Span) => void) | undefined;

  constructor(
    service: AwsService,
    options: AwsHttpOptions = {},
    env: Record<string, string | undefined> = process.env,
  ) {
    this.service = service;
    const region = options.region ?? (env.AWS_REGION || env.AWS_DEFAULT_REGION);
    if (!region) throw new Error(`no AWS region for ${service}: set AWS_REGION or pass a region`);
    this.region = region;
    const credentials = options.credentials ?? credentialsFromEnv(env);
    if (credentials === undefined) {
      throw new Error(
        `no AWS credentials for ${service}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or pass credentials`,
      );
    }
    // As the SDK's clients sign: S3 the path as sent, with the payload hash in x-amz-content-sha256;
    // DynamoDB a normalized path, without that header.
    this.#signer = new SignatureV4({
      service,
      region,
      credentials,
      sha256: Hash.bind(null, "sha256"),
      uriEscapePath: service !== "s3",
      applyChecksum: service === "s3",
    });
    const configured =
      options.endpoint ?? (env[`AWS_ENDPOINT_URL_${service.toUpperCase()}`] || env.AWS_ENDPOINT_URL);
    this.customEndpoint = Boolean(configured);
    this.endpoint = new URL(configured || regionalEndpoint(service, region));
    this.#timeoutMs = options.timeoutMs ?? 5_000;
    this.#retry = retryPolicy(options, { baseMs: 100, capMs: 20_000 });
    this.#onCall = options.onCall;
  }

  /** A 2xx answer with its body as a stream (S3 objects); anything else throws an AwsHttpError. */
  stream(request: AwsRequest): Promise<AwsResponse<Readable>> {
    return this.#withRetries(request, async (response) => response);
  }

  /** A 2xx answer with its JSON body parsed (DynamoDB); reading the body is part of the attempt. */
  json(request: AwsRequest): Promise<AwsResponse<unknown>> {
    return this.#withRetries(request, async (response) => {
      const text = await readText(response, Number.POSITIVE_INFINITY);
      try {
        return text === "" ? {} : (JSON.parse(text) as unknown);
      } catch (error) {
        throw new AwsHttpError(
          `${this.#what(request)} answered ${response.statusCode} with a body that is not JSON`,
          { status: response.statusCode, code: "InvalidResponse", retryable: false },
          { cause: error },
        );
      }
    });
  }

  async #withRetries<B>(
    request: AwsRequest,
    read: (response: IncomingMessage) => Promise<B>,
  ): Promise<AwsResponse<B>> {
    const started = this.#onCall === undefined ? 0 : performance.now();
    for (let attempt = 1; ; attempt++) {
      let failure: AwsHttpError;
      try {
        const response = await this.#send(request);
        if (response.statusCode !== undefined && response.statusCode >= 200 && response.statusCode < 300) {
          const answer = {
            status: response.statusCode,
            headers: response.headers,
            body: await read(response),
          };
          this.#reportCall(request, started, attempt, answer.status, undefined);
          return answer;
        }
        failure = await this.#serviceError(request, response);
      } catch (error) {
        failure = this.#asAwsError(request, error);
      }
      if (!failure.retryable || attempt >= this.#retry.maxAttempts) {
        this.#reportCall(request, started, attempt, failure.status, failure.code);
        if (attempt === 1) throw failure;
        throw new AwsHttpError(`${failure.message} (after ${attempt} attempts)`, failure, {
          cause: failure.cause,
        });
      }
      await this.#retry.sleep(this.#retry.delayMs(attempt));
    }
  }

  #reportCall(
    request: AwsRequest,
    start: number,
    attempts: number,
    status: number | undefined,
    errorCode: string | undefined,
  ): void {
    if (this.#onCall === undefined) return;
    this.#onCall({
      name: request.operation,
      start,
      end: performance.now(),
      aws: {
        service: this.service === "s3" ? "S3" : "DynamoDB",
        operation: request.operation,
        region: this.region,
        status,
        retries: attempts - 1,
        ...(errorCode === undefined ? {} : { errorCode }),
      },
    });
  }

  /** One signed request, answered once its headers arrive within the timeout. */
  async #send(request: AwsRequest): Promise<IncomingMessage> {
    const { url } = request;
    const headers: Record<string, string> = { host: url.host };
    for (const [name, value] of Object.entries(request.headers ?? {})) headers[name.toLowerCase()] = value;
    if (request.body === undefined && this.service === "s3")
      headers["x-amz-content-sha256"] = UNSIGNED_PAYLOAD;
    const signed = await this.#signer.sign({
      method: request.method,
      protocol: url.protocol,
      hostname: url.hostname,
      path: url.pathname,
      query: queryOf(url),
      headers,
      body: request.body,
    });
    if (request.body !== undefined || request.method === "PUT")
      signed.headers["content-length"] = String(
        request.body === undefined ? 0 : Buffer.byteLength(request.body),
      );
    const send = url.protocol === "https:" ? https.request : http.request;
    const agent = url.protocol === "https:" ? agents["https:"] : agents["http:"];
    const timeoutMs = this.#timeoutMs;
    return new Promise((resolve, reject) => {
      const outgoing = send(url, { method: request.method, headers: signed.headers, agent }, (response) => {
        clearTimeout(timer);
        // A stalled body fails the stream instead of hanging the reader.
        response.setTimeout(timeoutMs, () =>
          response.destroy(
            new AwsHttpError(`${this.#what(request)}: the response body stalled for ${timeoutMs} ms`, {
              status: response.statusCode,
              code: TIMEOUT_CODE,
              retryable: true,
            }),
          ),
        );
        resolve(response);
      });
      const timer = setTimeout(() => {
        outgoing.destroy(
          new AwsHttpError(`${this.#what(request)}: no response within ${timeoutMs} ms`, {
            status: undefined,
            code: TIMEOUT_CODE,
            retryable: true,
          }),
        );
      }, timeoutMs);
      if (request.onSent !== undefined) outgoing.once("finish", request.onSent);
      outgoing.on("error", (error) => {
        clearTimeout(timer);
        reject(error);
      });
      outgoing.end(request.body);
    });
  }

  async #serviceError(request: AwsRequest, response: IncomingMessage): Promise<AwsHttpError> {
    const status = response.statusCode ?? 0;
    const text = await readText(response, MAX_ERROR_BODY);
    const parsed = this.service === "dynamodb" ? dynamoError(text, response.headers) : s3Error(text, status);
    const retryable = status >= 500 || status === 429 || THROTTLING_CODES.has(parsed.code);
    const detail = parsed.message ? `: ${parsed.message}` : "";
    return new AwsHttpError(`${this.#what(request)} failed with ${status} ${parsed.code}${detail}`, {
      status,
      code: parsed.code,
      retryable,
    });
  }

  #asAwsError(request: AwsRequest, error: unknown): AwsHttpError {
    if (error instanceof AwsHttpError) return error;
    const code = (error as { code?: unknown })?.code;
    const known = typeof code === "string" ? code : "NetworkError";
    return new AwsHttpError(
      `${this.#what(request)}: ${(error as Error)?.message ?? String(error)}`,
      { status: undefined, code: known, retryable: NETWORK_CODES.has(known) },
      { cause: error },
    );
  }

  #what(request: AwsRequest): string {
    return `${this.service} ${request.operation} ${request.url.host}`;
  }
}

/** Lambda puts the function role's credentials in the environment. */
export function credentialsFromEnv(
  env: Record<string, string | undefined>,
): AwsCredentialIdentity | undefined {
  const { AWS_ACCESS_KEY_ID: accessKeyId, AWS_SECRET_ACCESS_KEY: secretAccessKey } = env;
  if (!accessKeyId || !secretAccessKey) return undefined;
  const sessionToken = env.AWS_SESSION_TOKEN;
  return { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) };
}

/** The URL's parameters for the signer, decoded. `+` is a plus sign here, not form encoding's space. */
function queryOf(url: URL): Record<string, string[]> {
  const values = new Map<string, string[]>();
  for (const [name, value] of new URLSearchParams(url.search.replaceAll("+", "%2B"))) {
    values.set(name, [...(values.get(name) ?? []), value]);
  }
  return Object.fromEntries(values);
}

function regionalEndpoint(service: AwsService, region: string): string {
  const domain = region.startsWith("cn-") ? "amazonaws.com.cn" : "amazonaws.com";
  return `https://${service}.${region}.${domain}`;
}

/** A body as text, kept up to about `limit` bytes; the rest is drained so the connection can be reused. */
function readText(response: IncomingMessage, limit: number): Promise<string> {
  // Events, not an async iterator: about 1 ms less of a cold start's first response.
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    response.on("data", (chunk: Buffer) => {
      if (bytes < limit) chunks.push(chunk);
      bytes += chunk.length;
    });
    response.once("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    response.once("error", reject);
  });
}

/** `{"__type": "com.amazonaws.dynamodb.v20120810#ResourceNotFoundException", "message": "..."}` */
function dynamoError(text: string, headers: IncomingHttpHeaders): { code: string; message: string } {
  let body: { __type?: unknown; message?: unknown; Message?: unknown } = {};
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed === "object" && parsed !== null) body = parsed;
  } catch {
    // not JSON (a proxy, a load balancer): the header and status still say enough
  }
  const type = typeof body.__type === "string" ? body.__type : String(headers["x-amzn-errortype"] ?? "");
  const code = type.split("#").at(-1)?.split(":")[0] || "UnknownError";
  const message = body.message ?? body.Message;
  return { code, message: typeof message === "string" ? message : "" };
}

/** `<Error><Code>NoSuchKey</Code><Message>...</Message>...</Error>`; a bodiless 404 is `NotFound`. */
function s3Error(text: string, status: number): { code: string; message: string } {
  const element = (name: string) => new RegExp(`<${name}>([^<]*)</${name}>`).exec(text)?.[1];
  const code = element("Code") ?? (status === 404 ? "NotFound" : "UnknownError");
  return { code, message: element("Message") ?? "" };
}
