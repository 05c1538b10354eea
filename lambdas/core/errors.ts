/** Base of every error that is safe to show a caller: it carries an HTTP status and a stable code. */
export class MaasError extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MaasError";
    this.status = status;
    this.code = code;
  }
}

/** The request is malformed or does not match the model's signature. */
export class InvalidRequestError extends MaasError {
  constructor(message: string, options?: ErrorOptions) {
    super(400, "invalid_request", message, options);
    this.name = "InvalidRequestError";
  }
}

export class ModelNotFoundError extends MaasError {
  constructor(message: string) {
    super(404, "model_not_found", message);
    this.name = "ModelNotFoundError";
  }
}

export class RouteNotFoundError extends MaasError {
  constructor(method: string, path: string) {
    super(404, "route_not_found", `no route for ${method} ${path}`);
    this.name = "RouteNotFoundError";
  }
}

export class MethodNotAllowedError extends MaasError {
  readonly allow: readonly string[];

  constructor(method: string, path: string, allow: readonly string[]) {
    super(405, "method_not_allowed", `${method} is not allowed on ${path}; use ${allow.join(" or ")}`);
    this.name = "MethodNotAllowedError";
    this.allow = allow;
  }
}

/** The model exists but cannot serve right now (registering, failed to load, backend down). */
export class ModelNotReadyError extends MaasError {
  constructor(message: string, options?: ErrorOptions) {
    super(503, "model_not_ready", message, options);
    this.name = "ModelNotReadyError";
  }
}

export class PayloadTooLargeError extends MaasError {
  constructor(message: string) {
    super(413, "payload_too_large", message);
    this.name = "PayloadTooLargeError";
  }
}

/** The inputs ask the model for more memory than this service gives a request (an Expand to 1e10). */
export class AllocationTooLargeError extends MaasError {
  constructor(message: string, options?: ErrorOptions) {
    super(413, "allocation_too_large", message, options);
    this.name = "AllocationTooLargeError";
  }
}

/** The response's JSON would pass the limit on what one response may carry (Lambda's 6 MB synchronous payload). */
export class ResponseTooLargeError extends MaasError {
  readonly limitBytes: number;

  /** `what` says what is too large (`output 'y' has 100000000 elements; its JSON would`). */
  constructor(what: string, limitBytes: number) {
    super(
      413,
      "response_too_large",
      `${what} exceed the response limit of ${limitBytes} bytes (MAAS_MAX_RESPONSE_BYTES): request fewer rows, ` +
        "ask for other outputs or for binary outputs (binary_data_output), or submit the request asynchronously (Prefer: respond-async)",
    );
    this.name = "ResponseTooLargeError";
    this.limitBytes = limitBytes;
  }
}

/** The model ran but failed on these inputs (onnxruntime rejected or crashed on them). */
export class InferenceFailedError extends MaasError {
  constructor(message: string, options?: ErrorOptions) {
    super(500, "inference_failed", message, options);
    this.name = "InferenceFailedError";
  }
}

/** An artifact's bytes do not match the digest the registry recorded for it. */
export class ArtifactIntegrityError extends MaasError {
  constructor(message: string) {
    super(502, "artifact_integrity", message);
    this.name = "ArtifactIntegrityError";
  }
}

/** The model server behind a remote backend (a SageMaker endpoint) failed on this request; its message says why. */
export class ModelInvocationError extends MaasError {
  constructor(message: string, options?: ErrorOptions) {
    super(502, "model_error", message, options);
    this.name = "ModelInvocationError";
  }
}

/** A remote backend answered in a way this service cannot use (an unexpected error or a malformed response). */
export class BackendError extends MaasError {
  constructor(message: string, options?: ErrorOptions) {
    super(502, "backend_error", message, options);
    this.name = "BackendError";
  }
}

/** The backend is throttling this deployment: the caller should retry after `retryAfterSeconds`. */
export class ThrottledError extends MaasError {
  readonly retryAfterSeconds: number;

  constructor(message: string, retryAfterSeconds: number, options?: ErrorOptions) {
    super(429, "throttled", message, options);
    this.name = "ThrottledError";
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** The backend cannot take requests right now (scaling, loading the model, down): retry after `retryAfterSeconds`. */
export class BackendUnavailableError extends MaasError {
  readonly retryAfterSeconds: number;

  constructor(message: string, retryAfterSeconds: number, options?: ErrorOptions) {
    super(503, "backend_unavailable", message, options);
    this.name = "BackendUnavailableError";
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** The backend did not answer within this service's deadline. */
export class BackendTimeoutError extends MaasError {
  constructor(message: string, options?: ErrorOptions) {
    super(504, "backend_timeout", message, options);
    this.name = "BackendTimeoutError";
  }
}

/** A run of a model in this service did not finish within the request's deadline. */
export class DeadlineExceededError extends MaasError {
  constructor(message: string, options?: ErrorOptions) {
    super(504, "deadline_exceeded", message, options);
    this.name = "DeadlineExceededError";
  }
}

/** Seconds a caller should wait before retrying, for the errors that say so (the HTTP Retry-After header). */
export function retryAfterSeconds(error: MaasError): number | undefined {
  return error instanceof ThrottledError || error instanceof BackendUnavailableError
    ? error.retryAfterSeconds
    : undefined;
}

/** The first segments of this service's own routes, which messages may name (`no route for GET /v2/x/y`). */
const ROUTE_ROOTS = new Set(["v2", "models", "admin", "invocations", "ping"]);

/** An absolute path of two or more segments (`/var/task/x.js`), optionally with `:line[:column]`. */
const ABSOLUTE_PATH = /(?<![\w.~:/\\-])\/([\w.@+~-]+)(?:\/[\w.@+~-]*)+(?::\d+(?::\d+)?)?/g;
const WINDOWS_PATH = /\b[A-Za-z]:\\(?:[^\\\s:]+\\)*[^\\\s:]*(?::\d+(?::\d+)?)?/g;
const FILE_URL = /\bfile:\/\/\S*/g;
/** A source location without a directory: `tensor.cc:57`, `handler.js:10:3`. */
const SOURCE_LOCATION =
  /\b[\w.-]+\.(?:cc|cpp|cxx|c|h|hh|hpp|cu|cuh|inl|js|mjs|cjs|ts|mts|cts|py|rs|go|java):\d+(?::\d+)?/g;
/** A stack frame line: `    at fn (file:1:2)`, or an unindented `at` line that ends in a location. */
const STACK_LINE = /^(?:[ \t]+at [^\n]*|at [^\n]*(?::\d+(?::\d+)?\)?|\((?:native|<anonymous>)\)))$/gm;

/**
 * A message made safe for a response body: stack lines, absolute paths and source locations removed.
 * The last line of defence where errors become responses; the full text belongs in the logs only.
 */
export function redactInternals(message: string): string {
  // Most messages have none of the markers: keep the warm path free of regex replaces.
  if (!/[/\\:]|\bat /.test(message)) return message;
  const redacted = message
    .replace(STACK_LINE, "")
    .replace(FILE_URL, "[path]")
    .replace(ABSOLUTE_PATH, (path: string, root: string) => (ROUTE_ROOTS.has(root) ? path : "[path]"))
    .replace(WINDOWS_PATH, "[path]")
    .replace(SOURCE_LOCATION, "[source]")
    .replace(/\n{2,}/g, "\n")
    .trim();
  return redacted === "" ? "internal error" : redacted;
}
