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
