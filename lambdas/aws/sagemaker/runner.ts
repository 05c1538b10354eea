import type {
  InvokeEndpointCommandInput,
  ModelError,
  SageMakerRuntimeClient,
  SageMakerRuntimeClientConfig,
} from "@aws-sdk/client-sagemaker-runtime";
import * as z from "zod/mini";
import { type RetryOptions, type RetryPolicy, retryPolicy } from "#aws/http/retry.ts";
import {
  BackendError,
  BackendTimeoutError,
  BackendUnavailableError,
  InvalidRequestError,
  type MaasError,
  ModelInvocationError,
  ModelNotReadyError,
  PayloadTooLargeError,
  ThrottledError,
} from "#core/errors.ts";
import type { ServableVersion } from "#core/model.ts";
import { ORIGINAL_VARIANT } from "#core/model.ts";
import type { ModelRunner } from "#core/runner.ts";
import type { NamedTensor } from "#core/tensor/tensor.ts";
import {
  encodeBinaryRequest,
  headerLengthFromContentType,
  parseHeaderLength,
  readBinaryTensors,
  SAGEMAKER_BINARY_CONTENT_TYPE,
} from "#core/v2/binary-data.ts";
import { parseTensorDocument } from "#core/v2/parse.ts";
import { decodeInput } from "#core/v2/tensor-codec.ts";
import { targetModelFor } from "./layout.ts";

/**
 * How the endpoint is told which model to run:
 * - "multi-model": InvokeEndpoint's TargetModel (`<sha256>.tar.gz` under the endpoint's model prefix);
 * - "single-model": endpoints that take no TargetModel; the model travels in CustomAttributes as
 *   `target-model=<sha256>.tar.gz`, which SageMaker passes to the container untouched.
 */
export type SageMakerMode = "multi-model" | "single-model";

type SageMakerSdk = typeof import("@aws-sdk/client-sagemaker-runtime");
let sageMakerSdk: Promise<SageMakerSdk> | undefined;

/** The SDK loads on the first SageMaker call: an inference function without an endpoint never imports it. */
function loadSageMakerSdk(): Promise<SageMakerSdk> {
  sageMakerSdk ??= import("@aws-sdk/client-sagemaker-runtime");
  return sageMakerSdk;
}

/** A runtime client created, with its SDK, on first use. */
export class LazySageMakerClient {
  readonly #config: SageMakerRuntimeClientConfig;
  #client: Promise<SageMakerRuntimeClient> | undefined;

  constructor(config: SageMakerRuntimeClientConfig) {
    this.#config = config;
  }

  get(): Promise<SageMakerRuntimeClient> {
    this.#client ??= loadSageMakerSdk().then((sdk) => new sdk.SageMakerRuntimeClient(this.#config));
    return this.#client;
  }

  /** Closes the client's connections if it was ever created. */
  destroy(): void {
    void this.#client?.then(
      (client) => client.destroy(),
      () => undefined,
    );
  }
}

/** Retries on throttling, 5xx, timeouts and connection failures; backoff @default 100 ms base, 2 s cap. */
export interface SageMakerRunnerOptions extends RetryOptions {
  /** A LazySageMakerClient defers the SDK's import to the first call. */
  readonly client: SageMakerRuntimeClient | LazySageMakerClient;
  readonly endpointName: string;
  /** @default "multi-model" */
  readonly mode?: SageMakerMode;
  /** Longest a single InvokeEndpoint call may take. @default 25_000 */
  readonly attemptTimeoutMs?: number;
  /** Budget for all attempts and the waits between them; under API Gateway's 29 s. @default 25_000 */
  readonly deadlineMs?: number;
  readonly now?: () => number;
}

/** How many seconds a caller is told to wait when the endpoint pushes back. */
const RETRY_AFTER = { throttled: 1, loading: 5, unavailable: 2 } as const;
const MAX_MESSAGE_CHARS = 1024;
/** SageMaker real-time inference takes at most 6 MB per request. */
const MAX_PAYLOAD_BYTES = 6 * 1024 * 1024;

const responseSchema = z.object({
  outputs: z.array(
    z.object({
      name: z.string(),
      datatype: z.string(),
      shape: z.array(z.int().check(z.nonnegative())),
      parameters: z.optional(z.record(z.string(), z.unknown())),
      data: z.optional(z.unknown()),
    }),
  ),
});

interface EndpointAnswer {
  readonly body: Uint8Array;
  readonly contentType: string | undefined;
}

class AttemptTimeout extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
    this.name = "AttemptTimeout";
  }
}

interface Failure {
  readonly retryable: boolean;
  readonly error: MaasError;
}

/**
 * Runs sagemaker-target versions on a SageMaker endpoint: one InvokeEndpoint call with a V2 body whose
 * tensors all travel as binary data (the JSON header's length in the content type, as SageMaker's Triton
 * containers take it), bounded retries with jitter, and SageMaker's errors turned into the service's own.
 */
export class SageMakerRunner implements ModelRunner {
  readonly backend = "sagemaker" as const;
  readonly #client: SageMakerRuntimeClient | LazySageMakerClient;
  readonly #endpointName: string;
  readonly #mode: SageMakerMode;
  readonly #attemptTimeoutMs: number;
  readonly #deadlineMs: number;
  readonly #retry: RetryPolicy;
  readonly #now: () => number;

  constructor(options: SageMakerRunnerOptions) {
    this.#client = options.client;
    this.#endpointName = options.endpointName;
    this.#mode = options.mode ?? "multi-model";
    this.#attemptTimeoutMs = options.attemptTimeoutMs ?? 25_000;
    this.#deadlineMs = options.deadlineMs ?? 25_000;
    this.#retry = retryPolicy(options, { baseMs: 100, capMs: 2_000 });
    this.#now = options.now ?? Date.now;
  }

  /** What `run` sends the endpoint, whatever variant the record selects: the `x-maas-variant` header. */
  servedVariant(_version: ServableVersion): string {
    return ORIGINAL_VARIANT;
  }

  async run(
    version: ServableVersion,
    inputs: readonly NamedTensor[],
    outputs: readonly string[],
  ): Promise<NamedTensor[]> {
    // The original upload, which registration published: optimized variants are chosen by a CPU
    // benchmark and are not what a GPU should run (servedVariant says so to callers).
    const targetModel = targetModelFor(version.artifact.sha256);
    const { bytes: body, headerLength } = encodeBinaryRequest(inputs, outputs);
    const input: InvokeEndpointCommandInput = {
      EndpointName: this.#endpointName,
      ContentType: `${SAGEMAKER_BINARY_CONTENT_TYPE};json-header-size=${headerLength}`,
      Accept: SAGEMAKER_BINARY_CONTENT_TYPE,
      Body: body,
      ...(this.#mode === "multi-model"
        ? { TargetModel: targetModel }
        : { CustomAttributes: `target-model=${targetModel}` }),
    };
    const what = `model '${version.name}' version ${version.version}`;
    if (body.length > MAX_PAYLOAD_BYTES) {
      throw new PayloadTooLargeError(
        `the request is ${body.length} bytes with its tensors in binary; ${what} runs on SageMaker, which takes at most ${MAX_PAYLOAD_BYTES} bytes`,
      );
    }
    const response = await this.#invoke(input, what);
    return this.#decode(response, outputs, what);
  }

  async #invoke(input: InvokeEndpointCommandInput, what: string): Promise<EndpointAnswer> {
    const [{ InvokeEndpointCommand }, client] = await Promise.all([
      loadSageMakerSdk(),
      this.#client instanceof LazySageMakerClient ? this.#client.get() : this.#client,
    ]);
    const send = (signal: AbortSignal) =>
      client.send(new InvokeEndpointCommand(input), { abortSignal: signal });
    const deadline = this.#now() + this.#deadlineMs;
    for (let attempt = 1; ; attempt++) {
      const remaining = deadline - this.#now();
      let failure: Failure;
      try {
        const response = await this.#attempt(send, Math.min(this.#attemptTimeoutMs, remaining));
        if (response.Body === undefined)
          throw new BackendError(`the SageMaker endpoint sent no body for ${what}`);
        return { body: response.Body, contentType: response.ContentType };
      } catch (error) {
        failure = classify(error, what);
      }
      const delay = this.#retry.delayMs(attempt);
      const timeLeft = deadline - this.#now() - delay;
      // A retry needs time for at least a short call after its wait; otherwise report what happened.
      if (!failure.retryable || attempt >= this.#retry.maxAttempts || timeLeft < 50) throw failure.error;
      await this.#retry.sleep(delay);
    }
  }

  async #attempt<T>(send: (signal: AbortSignal) => Promise<T>, timeoutMs: number): Promise<T> {
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => {
          controller.abort();
          reject(new AttemptTimeout(timeoutMs));
        },
        Math.max(1, timeoutMs),
      );
    });
    try {
      return await Promise.race([send(controller.signal), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** The container's V2 response: binary outputs after a JSON header whose length the content type gives, or JSON. */
  #decode({ body, contentType }: EndpointAnswer, requested: readonly string[], what: string): NamedTensor[] {
    const bytes = Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    try {
      const declared = headerLengthFromContentType(contentType);
      const headerLength = declared === undefined ? bytes.length : parseHeaderLength(declared, bytes.length);
      const parsed = parseTensorDocument(
        bytes.toString("utf8", 0, headerLength),
        (json) => responseSchema.parse(json),
        (doc) => doc.outputs,
      );
      const outputs = readBinaryTensors(parsed.outputs, bytes.subarray(headerLength), "output");
      const byName = new Map(outputs.map((output) => [output.name, output]));
      return requested.map((name) => {
        const output = byName.get(name);
        if (output === undefined) throw new Error(`output '${name}' is missing`);
        return decodeInput(output);
      });
    } catch (error) {
      throw new BackendError(`the SageMaker endpoint sent an unusable response for ${what}`, {
        cause: error,
      });
    }
  }
}

/** The container's message inside a ModelError: our container answers `{"error": "..."}`. */
function containerMessage(error: ModelError): string {
  const original = error.OriginalMessage ?? error.Message ?? error.message;
  let message = original;
  try {
    const parsed: unknown = JSON.parse(original);
    if (
      typeof parsed === "object" &&
      parsed !== null &&
      typeof (parsed as { error?: unknown }).error === "string"
    ) {
      message = (parsed as { error: string }).error;
    }
  } catch {
    // not JSON: the text as sent
  }
  return message.length > MAX_MESSAGE_CHARS ? `${message.slice(0, MAX_MESSAGE_CHARS)}…` : message;
}

function statusOf(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } })?.$metadata?.httpStatusCode;
}

/** Seconds from a Retry-After header on the raw response, when SageMaker sends one. */
function retryAfterHeader(error: unknown): number | undefined {
  const headers = (error as { $response?: { headers?: Record<string, string> } })?.$response?.headers;
  const value = headers?.["retry-after"] ?? headers?.["Retry-After"];
  const seconds = value === undefined ? Number.NaN : Number(value);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : undefined;
}

/** What a failed attempt means for the caller, and whether another attempt could help. */
function classify(error: unknown, what: string): Failure {
  if (error instanceof AttemptTimeout || isAbortOrTimeout(error)) {
    return {
      retryable: true,
      error: new BackendTimeoutError(`the SageMaker endpoint did not answer in time for ${what}`, {
        cause: error,
      }),
    };
  }
  const name = (error as { name?: string })?.name ?? "";
  const status = statusOf(error);
  // By name: the SDK's error classes load with it, on first use.
  if (name === "ModelError") {
    const modelError = error as ModelError;
    const message = containerMessage(modelError);
    const original = modelError.OriginalStatusCode;
    if (/timed out/i.test(modelError.Message ?? modelError.message ?? "")) {
      return {
        retryable: false,
        error: new BackendTimeoutError(`the model server timed out on ${what}`, { cause: error }),
      };
    }
    if (original === 400 || original === 413 || original === 422) {
      return {
        retryable: false,
        error: new InvalidRequestError(`the model rejected the inputs: ${message}`, { cause: error }),
      };
    }
    return {
      retryable: false,
      error: new ModelInvocationError(`${what} failed: ${message}`, { cause: error }),
    };
  }
  if (name === "ModelNotReadyException") {
    return {
      retryable: true,
      error: new BackendUnavailableError(
        `${what} is still loading on its SageMaker endpoint; retry shortly`,
        retryAfterHeader(error) ?? RETRY_AFTER.loading,
        { cause: error },
      ),
    };
  }
  if (name === "ThrottlingException" || name === "TooManyRequestsException" || status === 429) {
    return {
      retryable: true,
      error: new ThrottledError(
        `the SageMaker endpoint for ${what} is throttling requests; retry shortly`,
        retryAfterHeader(error) ?? RETRY_AFTER.throttled,
        { cause: error },
      ),
    };
  }
  if (name === "ValidationError") {
    // The endpoint is missing, not in service, or lacks the model data: a deployment problem, not the caller's.
    return {
      retryable: false,
      error: new ModelNotReadyError(`${what} cannot be served by its SageMaker endpoint right now`, {
        cause: error,
      }),
    };
  }
  if (name === "ServiceUnavailable" || status === 503) {
    return {
      retryable: true,
      error: new BackendUnavailableError(
        `the SageMaker endpoint for ${what} is unavailable; retry shortly`,
        retryAfterHeader(error) ?? RETRY_AFTER.unavailable,
        { cause: error },
      ),
    };
  }
  if (status !== undefined && status >= 500) {
    return {
      retryable: true,
      error: new BackendError(`the SageMaker endpoint failed on ${what}`, { cause: error }),
    };
  }
  if (status === undefined && isConnectionError(error)) {
    return {
      retryable: true,
      error: new BackendUnavailableError(
        `the SageMaker endpoint for ${what} could not be reached; retry shortly`,
        RETRY_AFTER.unavailable,
        { cause: error },
      ),
    };
  }
  if (error instanceof BackendError) return { retryable: false, error };
  return {
    retryable: false,
    error: new BackendError(`the SageMaker endpoint refused the request for ${what}`, { cause: error }),
  };
}

function isAbortOrTimeout(error: unknown): boolean {
  const name = (error as { name?: string })?.name;
  return name === "AbortError" || name === "TimeoutError" || name === "RequestTimeout";
}

const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: string })?.code;
  return code !== undefined && CONNECTION_CODES.has(code);
}
